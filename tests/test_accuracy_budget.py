"""The accuracy budget: a layer that quantization ruins is found by SQNR and kept in float."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.cli import main
from tests.models import make_model, ort_run


def fragile_model() -> onnx.ModelProto:
    """Gemm-Relu-Gemm whose second weight has one huge entry on a hidden unit that is always 0:
    harmless in float, but with one scale per tensor every other weight of fc2 rounds to 0."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 16)).astype(np.float32) * 0.5
    b1 = np.zeros(32, np.float32)
    w1[7], b1[7] = 0.0, -1.0  # hidden unit 7 is Relu(-1) = 0 for every input
    w2 = rng.standard_normal((10, 32)).astype(np.float32) * 0.3
    w2[:, 7] = 1000.0
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (np.zeros(10, np.float32), "b2"))]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1, name="fc2"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)


def test_budget_reverts_the_most_sensitive_layer(tmp_path, capsys):
    proto = fragile_model()
    onnx.save(proto, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    labels = np.array([ort_run(proto, {"x": x[i : i + 1]})["logits"].argmax() for i in range(64)])
    assert len(set(labels)) > 3  # a real classification, not one constant answer
    np.savez(tmp_path / "calib.npz", x=x[:32])
    np.savez(tmp_path / "data.npz", x=x, labels=labels)

    code = main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"), "--per-tensor-weights",
                 "--data", str(tmp_path / "data.npz"), "--max-drop", "0.02", "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "top1: float 1, all quantized 0." in err and "kept in float: fc2 (SQNR" in err

    quantized = onnx.load(tmp_path / "q.onnx")
    nodes = {n.name: n for n in quantized.graph.node}
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    assert producers[nodes["fc1"].input[1]] == "DequantizeLinear"  # fc1 stays int8
    assert nodes["fc2"].input[1] == "w2"  # fc2's weight is the float original
    record = json.loads({p.key: p.value for p in quantized.metadata_props}["edgec.quantization"])
    assert [entry["node"] for entry in record["kept_float"]] == ["fc2"] and record["all_quantized"] < 0.5
    top1 = np.mean([ort_run(quantized, {"x": x[i : i + 1]})["logits"].argmax() == labels[i] for i in range(64)])
    assert top1 >= 0.98 and record["quantized"] == top1


def test_budget_flags_go_together(tmp_path, capsys):
    onnx.save(fragile_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((2, 16), np.float32))
    code = main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"), "--max-drop", "0.01",
                 "-o", str(tmp_path / "q.onnx")])
    assert code == 2 and "--data and --max-drop (or a profile's accuracy.max_drop) go together" in capsys.readouterr().err


def test_bad_budget_data_is_a_usage_error(tmp_path, capsys):
    onnx.save(fragile_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((2, 16), np.float32))
    np.savez(tmp_path / "data.npz", x=np.full((4, 16), np.nan, np.float32), labels=np.zeros(4))
    code = main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "--data", str(tmp_path / "data.npz"), "--max-drop", "0.01", "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"edgec: error: --data {tmp_path / 'data.npz'}: input 'x' has 64 NaN/Inf")


def test_a_profile_gives_the_budget_and_the_scheme(tmp_path, capsys):
    """accuracy.metric and accuracy.max_drop are the budget once --data is given; the profile's
    per-tensor scheme is what makes fc2 fragile here."""
    proto = fragile_model()
    onnx.save(proto, tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((48, 16)).astype(np.float32)
    labels = np.array([ort_run(proto, {"x": x[i : i + 1]})["logits"].argmax() for i in range(48)])
    np.savez(tmp_path / "calib.npz", x=x[:24])
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    (tmp_path / "p.toml").write_text('schema = 1\nname = "budget"\n[accuracy]\nmetric = "top1"\nmax_drop = 0.02\n'
                                     '[quantization]\nscheme = "per-tensor"\n')
    code = main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"), "--profile",
                 str(tmp_path / "p.toml"), "--data", str(tmp_path / "data.npz"), "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "kept in float: fc2" in err and "budget 0.02" in err
    # Without --data the profile's budget is not applied, and nothing is reverted.
    code = main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"), "--profile",
                 str(tmp_path / "p.toml"), "-o", str(tmp_path / "q2.onnx")])
    assert code == 0 and "kept in float" not in capsys.readouterr().err
