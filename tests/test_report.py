"""edgec report: per-layer costs and totals, checked against an independent count."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.cli import main
from tests.models import zoo_model


def independent_macs(model: onnx.ModelProto) -> int:
    """Conv and Gemm MACs from onnx's own shape inference, written without edgec's helpers."""
    inferred = onnx.shape_inference.infer_shapes(model)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            c_out, c_in_per_group, *kernel = weights[node.input[1]]
            total += int(np.prod(dims[node.output[0]])) * c_in_per_group * int(np.prod(kernel))
        elif node.op_type == "Gemm":
            total += int(np.prod(dims[node.output[0]])) * dims[node.input[0]][1]
    return total


def test_report_totals_agree_with_an_independent_count(tmp_path, capsys):
    model = zoo_model("squeezenet")
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(tmp_path / "m.edgec"), "-q"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "m.edgec"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    totals = report["totals"]
    assert totals["macs"] == independent_macs(model) > 3e8  # SqueezeNet 1.0: ~0.35 GMACs
    weights = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert totals["weight_bytes"] == weights
    assert totals["macs_share"] == {"cpu": 1.0}
    assert totals["working_set_bytes"] == totals["arena_bytes"] + totals["weight_bytes"]
    conv = next(layer for layer in report["layers"] if layer["op"] == "Conv")
    assert conv["parameters"] > 0 and conv["device"] == "cpu" and conv["dtype"] == "float32"

    assert main(["report", str(tmp_path / "m.edgec"), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sum(int(r["macs"]) for r in rows) == totals["macs"]
    assert main(["report", str(tmp_path / "m.edgec")]) == 0
    assert "MACs" in capsys.readouterr().out
