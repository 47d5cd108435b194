"""The accuracy budget: a layer that quantization ruins is found by SQNR and kept in float."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import api
from edgec.cli import main
from edgec.errors import ProfileViolation, UsageError
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

    result = api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", per_tensor_weights=True,
                          data=tmp_path / "data.npz", max_drop=0.02, output=tmp_path / "q.onnx")
    assert result.budget.met and result.budget.float_value == 1 and result.budget.first_value < 0.5
    assert result.budget.reverted == ["fc2"] and "kept in float: fc2 (SQNR" in result.budget.summary()[1]

    quantized = onnx.load(tmp_path / "q.onnx")
    nodes = {n.name: n for n in quantized.graph.node}
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    assert producers[nodes["fc1"].input[1]] == "DequantizeLinear"  # fc1 stays int8
    assert nodes["fc2"].input[1] == "w2"  # fc2's weight is the float original
    record = json.loads({p.key: p.value for p in quantized.metadata_props}["edgec.quantization"])["budget"]
    assert [entry["node"] for entry in record["kept_float"]] == ["fc2"] and record["all_quantized"] < 0.5
    top1 = np.mean([ort_run(quantized, {"x": x[i : i + 1]})["logits"].argmax() == labels[i] for i in range(64)])
    assert top1 >= 0.98 and record["quantized"] == top1


def test_budget_flags_go_together(tmp_path, capsys):
    onnx.save(fragile_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((2, 16), np.float32))
    with pytest.raises(UsageError, match=re.escape("--data and --max-drop (or a profile's accuracy.max_drop or "
                                                   "accuracy.min) go together")):
        api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", max_drop=0.01, output=tmp_path / "q.onnx")


def test_bad_budget_data_is_a_usage_error(tmp_path, capsys):
    onnx.save(fragile_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((2, 16), np.float32))
    np.savez(tmp_path / "data.npz", x=np.full((4, 16), np.nan, np.float32), labels=np.zeros(4))
    with pytest.raises(UsageError, match=re.escape(f"--data {tmp_path / 'data.npz'}: input 'x' has 64 NaN/Inf")):
        api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", data=tmp_path / "data.npz", max_drop=0.01,
                     output=tmp_path / "q.onnx")


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
    result = api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", profile=tmp_path / "p.toml",
                          data=tmp_path / "data.npz", output=tmp_path / "q.onnx")
    assert result.budget.reverted[0] == "fc2" and result.budget.max_drop == 0.02
    # Without --data the profile's budget is not applied, and nothing is reverted.
    result = api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", profile=tmp_path / "p.toml",
                          output=tmp_path / "q2.onnx")
    assert result.budget is None and result.activation_pairs == 2


def budget_data(tmp_path, proto, samples: int = 64, seed: int = 1):
    x = np.random.default_rng(seed).standard_normal((samples, 16)).astype(np.float32)
    labels = np.array([ort_run(proto, {"x": x[i : i + 1]})["logits"].argmax() for i in range(samples)])
    np.savez(tmp_path / "calib.npz", x=x[: samples // 2])
    np.savez(tmp_path / "data.npz", x=x, labels=labels)
    return x, labels


def test_compile_fits_the_budget_and_records_it(tmp_path, capsys):
    """In 'edgec compile' the reverted layer joins the quantize step's exclude list, so the
    recorded pipeline rebuilds the same graph; the artifact's outputs keep the top-1 and
    'edgec report --quantization' says which layer is float and why."""
    from edgec.runtime import load

    proto = fragile_model()
    onnx.save(proto, tmp_path / "m.onnx")
    x, labels = budget_data(tmp_path, proto)
    api.compile(tmp_path / "m.onnx", "x86-64", calib=tmp_path / "calib.npz", per_tensor_weights=True,
                data=tmp_path / "data.npz", max_drop=0.02, output=tmp_path / "m.edgec")
    compiled = load(tmp_path / "m.edgec")
    manifest = compiled.manifest
    assert "quantize{calib=calib.npz,per-tensor-weights=true,exclude=fc2" in manifest["pipeline"]
    record = manifest["quantization"]
    assert record["budget"]["met"] and [e["node"] for e in record["budget"]["kept_float"]] == ["fc2"]
    assert {row["node"]: row["placement"] for row in record["layers"]} == {"fc1": "int8", "fc2": "float"}
    top1 = np.mean([compiled.run({"x": x[i : i + 1]})["logits"].argmax() == labels[i] for i in range(len(x))])
    assert top1 >= 0.98

    capsys.readouterr()
    assert main(["report", str(tmp_path / "m.edgec"), "--quantization"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accuracy budget met: top1 float 1")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("fc")}
    assert " int8 " in rows["fc1"] and "accuracy budget (SQNR" in rows["fc2"]
    assert "integer kernels: 1 (matmul+bias x1)" in out


def test_compile_fails_a_budget_no_revert_can_meet(tmp_path, capsys):
    """A profile asking for more top-1 than the float model has: exit 3, no artifact."""
    proto = fragile_model()
    onnx.save(proto, tmp_path / "m.onnx")
    x, labels = budget_data(tmp_path, proto, samples=32)
    np.savez(tmp_path / "data.npz", x=x, labels=(labels + 1) % 10)  # float top-1 is 0
    (tmp_path / "p.toml").write_text('schema = 1\nname = "strict"\n[accuracy]\nmetric = "top1"\nmin = 0.9\n')
    with pytest.raises(ProfileViolation, match="m.onnx cannot meet its accuracy budget: top1: float"):
        api.compile(tmp_path / "m.onnx", "x86-64", calib=tmp_path / "calib.npz", profile=str(tmp_path / "p.toml"),
                    data=tmp_path / "data.npz", output=tmp_path / "m.edgec")
    assert not (tmp_path / "m.edgec").exists()


def test_compile_budget_flags_need_quantization(tmp_path, capsys):
    onnx.save(fragile_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 16), np.float32), labels=np.zeros(2))
    with pytest.raises(UsageError, match="--data measures the accuracy of quantization: give --calib"):
        api.compile(tmp_path / "m.onnx", "x86-64", data=tmp_path / "data.npz", max_drop=0.01, output=tmp_path / "m.edgec")
    code = main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "--max-drop", "0.01", "-o", str(tmp_path / "m.edgec")])
    assert code == 2 and "--data and --max-drop" in capsys.readouterr().err  # the flags' error, exit code 2
    assert not (tmp_path / "m.edgec").exists()
