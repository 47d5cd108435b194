"""Symbolic input dims bound without --input-shape: --dim NAME=VALUE everywhere, a free leading
(batch) dim by the profile's latency.batch_size else 1, the notice, the manifest, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.cli import main
from edgec.compiler.driver import CompileRequest, compile_model
from edgec.errors import ModelError, UsageError
from edgec.frontend.importer import DimBinding, ensure_static, import_proto
from edgec.runtime import load
from tests.conftest import assert_close, without_progress
from tests.models import make_model, ort_run


def two_input_model(x_shape=("batch", "seq", 4), mask_shape=("batch", "seq")) -> onnx.ModelProto:
    """y = x * unsqueeze(mask): two inputs sharing the names 'batch' and 'seq'."""
    return make_model(
        [helper.make_node("Unsqueeze", ["mask", "axes"], ["m3"]), helper.make_node("Mul", ["x", "m3"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape)),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, list(mask_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])],
        [numpy_helper.from_array(np.array([2], np.int64), "axes")],
        opset=17,
    )


def test_dim_binds_a_name_on_every_input_and_batch_the_rest():
    model = import_proto(two_input_model(), dims={"seq": 5}, batch=(2, "test batch"))
    ensure_static(model, "m.onnx")
    assert [v.shape for v in model.graph.inputs] == [(2, 5, 4), (2, 5)]
    assert model.graph.outputs[0].shape == (2, 5, 4)
    assert model.dim_bindings == [
        DimBinding("x", 0, "batch", 2, "test batch"), DimBinding("x", 1, "seq", 5, "--dim seq=5"),
        DimBinding("mask", 0, "batch", 2, "test batch"), DimBinding("mask", 1, "seq", 5, "--dim seq=5"),
    ]


def test_a_name_bound_by_input_shape_holds_on_the_other_inputs():
    model = import_proto(two_input_model(), input_shapes={"x": (3, 7, 4)}, batch=(1, "default"))
    assert [v.shape for v in model.graph.inputs] == [(3, 7, 4), (3, 7)]
    assert model.dim_bindings[-1] == DimBinding("mask", 1, "seq", 7, "--input-shape x")


def test_non_batch_dim_left_free_names_the_dim_and_both_flags():
    model = import_proto(two_input_model(), batch=(1, "default"))
    with pytest.raises(ModelError, match=r"input 'x' dim 1 is symbolic \('seq'\); bind it with --dim seq=N or "
                                         r"--input-shape x=1xNx4"):
        ensure_static(model, "m.onnx")


def test_unnamed_leading_dim_takes_the_batch():
    proto = two_input_model(x_shape=(None, 3, 4), mask_shape=(None, 3))
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    model = import_proto(proto, batch=(1, "default"))
    assert [v.shape for v in model.graph.inputs] == [(1, 3, 4), (1, 3)]
    assert model.dim_bindings[0] == DimBinding("x", 0, None, 1, "default")


@pytest.mark.parametrize("shapes, dims, message", [
    ({}, {"len": 3}, r"--dim len: no input of the model has a dim named 'len' \(symbolic dims: batch, seq\)"),
    ({"x": (1, 4, 4)}, {"seq": 5}, r"--input-shape x: dim 1 \('seq'\) is 4 here but 5 by --dim seq=5"),
])
def test_conflicting_or_unknown_bindings_are_usage_errors(shapes, dims, message):
    with pytest.raises(UsageError, match=message):
        import_proto(two_input_model(), input_shapes=shapes, dims=dims)


def test_python_api_takes_the_same_bindings(tmp_path):
    onnx.save(two_input_model(), tmp_path / "m.onnx")
    result = compile_model(CompileRequest(tmp_path / "m.onnx", "x86-64", tmp_path / "m.edgec", dims={"seq": 3}))
    assert [b.describe() for b in result.bindings] == [
        "x dim 0 ('batch') = 1 from the default batch size (no profile sets latency.batch_size)",
        "x dim 1 ('seq') = 3 from --dim seq=3",
        "mask dim 0 ('batch') = 1 from the default batch size (no profile sets latency.batch_size)",
        "mask dim 1 ('seq') = 3 from --dim seq=3",
    ]
    assert result.manifest["dim_bindings"][1] == {"input": "x", "axis": 1, "dim": "seq", "value": 3,
                                                  "source": "--dim seq=3"}
    assert result.manifest["signature"]["inputs"][1]["shape"] == [1, 3]


def test_the_cache_tells_bindings_apart(tmp_path):
    onnx.save(two_input_model(), tmp_path / "m.onnx")

    def compiled(seq: int, out: str):
        return compile_model(CompileRequest(tmp_path / "m.onnx", "x86-64", tmp_path / out, dims={"seq": seq},
                                            cache_dir=tmp_path / "cache"))

    first, other, again = compiled(3, "a.edgec"), compiled(4, "b.edgec"), compiled(3, "c.edgec")
    assert (first.cached, other.cached, again.cached) == (False, False, True)
    assert other.manifest["signature"]["inputs"][1]["shape"] == [1, 4]
    assert again.manifest["signature"]["inputs"][1]["shape"] == [1, 3]


# The acceptance: a digits CNN exported with a symbolic batch, compiled as users do.

@pytest.fixture(scope="module")
def digits(request, tmp_path_factory):
    """(symbolic-batch .onnx, held-out .npz, calibration .npz)."""
    from tests.digits_cnn import INPUT, digits_fixture

    model_path, data_path = digits_fixture(request, tmp_path_factory, dynamic_batch=True)
    dims = onnx.load(model_path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    calib = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(calib, **{INPUT: np.load(data_path)[INPUT][:64]})
    return model_path, data_path, calib


def edgec(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def matches_onnxruntime(artifact, model_path, data_path):
    compiled = load(artifact)
    for image in np.load(data_path)["image"][:3]:
        feeds = {"image": image[None]}
        assert_close(compiled.run(feeds), ort_run(model_path, feeds))


DEFAULT = "image dim 0 ('batch') = 1 from the default batch size (no profile sets latency.batch_size)"
MOBILE = "image dim 0 ('batch') = 1 from profile mobile's latency.batch_size"


@pytest.mark.parametrize("flags, notice", [
    ((), DEFAULT),
    (("--profile", "mobile"), MOBILE),
    (("--depfile", "{tmp}/out.d"), DEFAULT),
])
def test_symbolic_batch_compiles_without_flags(capsys, tmp_path, digits, flags, notice):
    model_path, data_path, _ = digits
    out = tmp_path / "out.edgec"
    code, _, err = edgec(capsys, "compile", model_path, "--target", "x86-64", "-o", out,
                         *(f.format(tmp=tmp_path) for f in flags))
    assert code == 0, err
    assert without_progress(err).splitlines()[0] == f"edgec: note: bound symbolic dims: {notice}"
    manifest = json.loads(edgec(capsys, "inspect", out, "--json")[1])
    assert manifest["signature"]["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert manifest["dim_bindings"] == [{"input": "image", "axis": 0, "dim": "batch", "value": 1,
                                         "source": notice.split(" from ", 1)[1]}]
    assert f"bound      {notice}" in edgec(capsys, "inspect", out)[1]
    if "--depfile" in flags:
        assert (tmp_path / "out.d").read_text().startswith(f"{out}: {model_path}")
    matches_onnxruntime(out, model_path, data_path)


def test_dim_flag_binds_the_batch_and_run_refuses_another(capsys, tmp_path, digits):
    model_path, data_path, _ = digits
    out = tmp_path / "b4.edgec"
    code, _, err = edgec(capsys, "compile", model_path, "--target", "x86-64", "-o", out, "--dim", "batch=4")
    assert code == 0 and "image dim 0 ('batch') = 4 from --dim batch=4" in err
    images = np.load(data_path)["image"][:4]
    assert_close(load(out).run({"image": images}), ort_run(model_path, {"image": images}))
    np.save(tmp_path / "one.npy", images[:1])
    code, out_text, err = edgec(capsys, "run", out, "--input", f"image={tmp_path / 'one.npy'}")
    assert code == 1 and out_text == ""
    assert err == ("edgec: error: input 'image' dim 0 ('batch') was bound to 4 at compile time "
                   "(from --dim batch=4), got 1; recompile with --dim batch=1\n")


def test_qdq_file_from_quantize_compiles_without_flags(capsys, tmp_path, digits):
    model_path, data_path, calib = digits
    qdq, out = tmp_path / "q.onnx", tmp_path / "q.edgec"
    code, _, err = edgec(capsys, "quantize", model_path, "--calib", calib, "-o", qdq)
    assert code == 0, err
    code, _, err = edgec(capsys, "compile", qdq, "--target", "x86-64", "-o", out)
    assert code == 0, err
    assert without_progress(err).splitlines()[0] == f"edgec: note: bound symbolic dims: {DEFAULT}"
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph's meaning, op by op
    session = ort.InferenceSession(str(qdq), options, providers=["CPUExecutionProvider"])
    compiled = load(out)
    for image in np.load(data_path)["image"][:3]:
        feeds = {"image": image[None]}
        expected = session.run(["logits"], feeds)[0]
        np.testing.assert_allclose(compiled.run(feeds)["logits"], expected, atol=0.05 * np.abs(expected).max())
