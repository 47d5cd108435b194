"""0-d tensors keep their rank: a scalar input, a folded scalar constant and scalar outputs
through import, passes, lowering, the artifact and the runtime (numpy's ascontiguousarray
makes 0-d arrays 1-d, which TVM's VM refuses)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgec import api
from edgec.cli import main
from edgec.runtime import load
from tests.conftest import assert_close
from tests.models import make_model, ort_run


def scalar_model() -> onnx.ModelProto:
    """y = x * s; mean = sum(y) / size(x): a 0-d input, a 0-d constant folded from Size, a 0-d output."""
    return make_model(
        [helper.make_node("Mul", ["x", "s"], ["y"]),
         helper.make_node("Size", ["x"], ["n"]),
         helper.make_node("Cast", ["n"], ["count"], to=TensorProto.FLOAT),
         helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0),
         helper.make_node("Div", ["total", "count"], ["mean"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("mean", TensorProto.FLOAT, [])],
    )


def test_scalars_keep_their_rank_end_to_end(tmp_path, capsys):
    onnx.save(scalar_model(), tmp_path / "s.onnx")
    artifact = tmp_path / "s.edgec"
    api.compile(tmp_path / "s.onnx", "x86-64", output=artifact)
    compiled = load(artifact)
    assert [spec["shape"] for spec in compiled.inputs] == [[2, 3], []]
    assert [spec["shape"] for spec in compiled.outputs] == [[2, 3], []]
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(1.5, np.float32)}
    actual = compiled.run(feeds)
    assert actual["mean"].shape == ()
    assert_close(actual, ort_run(tmp_path / "s.onnx", feeds))
    np.save(tmp_path / "s.npy", feeds["s"])
    np.save(tmp_path / "x.npy", feeds["x"])
    assert main(["run", str(artifact), "--input", f"x={tmp_path / 'x.npy'}", "--input", f"s={tmp_path / 's.npy'}",
                 "--output", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as written:
        assert written["mean"].shape == () and written["mean"] == np.float32(2.5 * 1.5)
    capsys.readouterr()
    assert main(["run", str(artifact), "--random-inputs", "--output", str(tmp_path / "random.npz")]) == 0
    with np.load(tmp_path / "random.npz") as written:
        assert written["mean"].shape == ()
