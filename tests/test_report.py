"""edgec report: per-layer costs and totals, checked against an independent count."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgec import api
from edgec.cli import main
from edgec.units import human_size
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
    api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "m.edgec"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    totals = report["totals"]
    assert totals["macs"] == independent_macs(model) > 3e8  # SqueezeNet 1.0: ~0.35 GMACs
    weights = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert totals["weight_bytes"] == weights
    assert totals["macs_share"] == {"cpu": 1.0}
    assert totals["working_set_bytes"] == totals["runtime_bytes"] + totals["weight_bytes"]
    conv = next(layer for layer in report["layers"] if layer["op"] == "Conv")
    assert conv["parameters"] > 0 and conv["device"] == "cpu" and conv["dtype"] == "float32"

    assert main(["report", str(tmp_path / "m.edgec"), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sum(int(r["macs"]) for r in rows) == totals["macs"]
    assert main(["report", str(tmp_path / "m.edgec")]) == 0
    assert "MACs" in capsys.readouterr().out


def test_gemm_macs_agree_with_the_independent_count(tmp_path, capsys):
    from tests.models import small_cnn

    model = small_cnn()
    assert any(node.op_type == "Gemm" for node in model.graph.node)
    onnx.save(model, tmp_path / "m.onnx")
    api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "m.edgec"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["macs"] == independent_macs(model)


def test_the_artifact_says_what_the_vm_allocates_next_to_edgecs_plan(tmp_path, capsys):
    """TVM's storages, read from the lowered module, against edgec's packing of the same tensors."""
    from edgec.deploy.artifact import open_artifact

    onnx.save(zoo_model("squeezenet"), tmp_path / "m.onnx")
    api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec")
    manifest = open_artifact(tmp_path / "m.edgec").manifest
    runtime = manifest["runtime_memory"]
    assert runtime["analysed"] and runtime["tensors"] > 10
    assert runtime["output_bytes"] == 1000 * 4  # one 1x1000 float32 output
    # edgec packs TVM's own tensors at least as tightly as TVM's storages, and never below the bound
    assert runtime["tvm_storage_bytes"] >= runtime["arena_bytes"] >= runtime["lower_bound_bytes"] > 0
    assert runtime["tvm_storage_bytes"] > manifest["memory_plan"]["arena_bytes"]  # TVM does not run at edgec's offsets
    capsys.readouterr()
    assert main(["report", str(tmp_path / "m.edgec")]) == 0
    assert "VM allocates" in capsys.readouterr().out


def test_memory_report_and_plot(tmp_path, capsys):
    """--memory lists every planned tensor at its offset; --plot draws one rectangle per tensor."""
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install 'edgec[plot]')")
    from edgec.deploy.artifact import open_artifact
    from tests.models import small_cnn

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec")
    plan = open_artifact(tmp_path / "m.edgec").manifest["memory_plan"]
    capsys.readouterr()
    assert main(["report", str(tmp_path / "m.edgec"), "--memory", "--plot", str(tmp_path / "plan.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arena ") and "lower bound" in out and "VM allocates" in out
    for tensor in plan["tensors"]:
        assert any(line.split()[:3] == [tensor["name"], str(tensor["offset"]), str(tensor["size"])]
                   for line in out.splitlines())
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(tmp_path / "m.edgec"), "--memory", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["memory_plan"] == plan
    assert main(["report", str(tmp_path / "m.edgec"), "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot draws the memory plan or the partitions: give it with --memory or --partitions" \
        in capsys.readouterr().err


def test_the_memory_plot_labels_tensors_in_a_unit_that_fits():
    """Every tensor's name is written on its rectangle; sizes read in KiB for a small arena, MiB
    for a large one; the arena and lower bound lines differ in color and style and carry their sizes."""
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install 'edgec[plot]')")
    from matplotlib import pyplot

    from edgec.reports.report import memory_figure

    for scale, unit, sizes in ((1, "KiB", ("6.0 KiB", "4.0 KiB")), (2**10, "MiB", ("6.0 MiB", "4.0 MiB"))):
        tensors = [{"name": "conv_out", "offset": 0, "size": 6144 * scale, "first_step": 0, "last_step": 1},
                   {"name": "relu_out", "offset": 6144 * scale, "size": 4096 * scale, "first_step": 1, "last_step": 2},
                   {"name": "sliver", "offset": 0, "size": 64, "first_step": 2, "last_step": 3}]
        plan = {"tensors": tensors, "arena_bytes": 12288 * scale, "lower_bound_bytes": 10240 * scale,
                "algorithm": "greedy-by-size", "peak_step": 1}
        figure = memory_figure({"memory_plan": plan, "source": {"file": "m.onnx"}})
        axes = figure.axes[0]
        assert axes.get_ylabel() == f"arena offset ({unit})"
        assert [t.get_text() for t in axes.texts] == [f"conv_out {sizes[0]}", f"relu_out {sizes[1]}"]  # no sliver
        arena_line, bound_line = axes.get_lines()[:2]
        assert (arena_line.get_color(), arena_line.get_linestyle()) != (bound_line.get_color(), bound_line.get_linestyle())
        legend = [t.get_text() for t in axes.get_legend().get_texts()]
        assert legend[0].startswith(f"arena {human_size(12288 * scale)}")
        assert legend[1].startswith(f"lower bound {human_size(10240 * scale)}")
        pyplot.close(figure)
