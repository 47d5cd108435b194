"""``edgec analyze`` (edgec/reports/analyze.py, targets/support.py): the compile's own numbers before
any TVM work: per-layer MACs and parameters as the artifact's report has them, the arena
the compile plans, op support with reasons, and the profile's static checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import edgec
from edgec import api
from edgec.cli import main
from edgec.deploy.artifact import open_artifact
from edgec.reports.analyze import analyze
from tests.models import make_model, small_cnn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits_mlp.onnx"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_numbers_match_what_the_compile_records(tmp_path):
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    analysis = analyze(tmp_path / "cnn.onnx", "x86-64")
    api.compile(tmp_path / "cnn.onnx", "x86-64", output=tmp_path / "cnn.edgec")
    manifest = open_artifact(tmp_path / "cnn.edgec").manifest
    compiled = manifest["report"]
    assert [(l["name"], l["op"], l["macs"], l["parameters"]) for l in analysis.layers] == \
           [(l["name"], l["op"], l["macs"], l["parameters"]) for l in compiled["layers"]]
    assert analysis.totals["macs"] == compiled["totals"]["macs"] > 0
    assert analysis.memory["arena_bytes"] == manifest["memory_plan"]["arena_bytes"]
    assert analysis.memory["lower_bound_bytes"] <= analysis.memory["arena_bytes"]
    assert analysis.unsupported == [] and all(l["support"]["lowered"] for l in analysis.layers)


def test_unsupported_nodes_are_named_with_the_reason(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Normalizer", ["r"], ["y"], name="scaler", domain="ai.onnx.ml", norm="MAX")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    onnx.save(model, tmp_path / "m.onnx")
    analysis = edgec.analyze(tmp_path / "m.onnx", "x86-64")
    assert analysis.ok and analysis.unsupported == [{"node": "scaler", "op": "ai.onnx.ml::Normalizer",
                                        "reason": "domain 'ai.onnx.ml' has no lowering on this target"}]
    code, out, _ = run(capsys, "analyze", tmp_path / "m.onnx", "-t", "x86-64")
    assert "scaler (ai.onnx.ml::Normalizer): domain 'ai.onnx.ml' has no lowering" in out


def test_the_table_and_json_carry_the_same_layers(capsys):
    code, text, _ = run(capsys, "analyze", EXAMPLE, "-t", "x86-64")
    assert code == 0
    code, out, _ = run(capsys, "analyze", EXAMPLE, "-t", "x86-64", "--json")
    analysis = json.loads(out)
    assert analysis == {**edgec.analyze(EXAMPLE, "x86-64").to_dict(), "seconds": analysis["seconds"]}
    for layer in analysis["layers"]:
        assert f"{layer['macs']:,}" in text and layer["name"] in text
    assert f"{analysis['totals']['macs']:,}" in text


def test_a_profile_violation_exits_3_naming_the_budget(capsys):
    code, out, err = run(capsys, "analyze", EXAMPLE, "-t", "x86-64", "--profile", "mobile", "--set",
                         "memory.weights=1KiB")
    assert code == 3
    assert "FAIL  memory.weights: required <= 1KiB" in out
    assert "does not meet profile mobile" in err


def test_accelerator_targets_show_each_nodes_device():
    analysis = analyze(EXAMPLE, "cuda")
    assert {layer["device"] for layer in analysis.layers} <= {"cuda", "cpu"}
    assert "partition" in analysis.pipeline


def test_analysis_imports_no_tvm_compiler():
    script = ("import sys, json\nfrom edgec.reports.analyze import analyze\n"
              f"analyze({str(EXAMPLE)!r}, 'x86-64')\n"
              "print(json.dumps(sorted(m for m in sys.modules if m == 'tvm' or m.startswith('tvm.'))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("op, domain, reason", [
    ("Conv", "", ""), ("Celu", "", ""), ("ConvInteger", "", ""),
    ("NotAnOp", "", "no converter in TVM's ONNX frontend and no ONNX function body for NotAnOp"),
    ("Conv", "com.example", "domain 'com.example' has no lowering on this target"),
])
def test_cpu_support_reads_tvms_converters_and_onnx_functions(op, domain, reason):
    from edgec.ir import Node
    from edgec.targets.support import cpu_lowering, tvm_converted_ops

    assert "Conv" in tvm_converted_ops() and len(tvm_converted_ops()) > 100
    verdict = cpu_lowering(17)(Node(op, [], [], domain=domain))
    assert (verdict.ok, verdict.reason) == (not reason, reason)
