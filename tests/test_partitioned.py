"""Partitioned compiles end to end: one library per partition, the runtime handing the
crossing tensors across, and the commands that explain the plan.

On this CPU-only machine the multi-partition run uses the CPU test double
(``partition{device=cpu-test-double}``): the host CPU under a second capability table,
named as what it is. GPU partitions are built here and run only where a GPU is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec import api
from edgec.cli import main
from edgec.compiler.pipelines import DEFAULT_PIPELINE
from edgec.deploy.artifact import open_artifact
from edgec.ir import parse_model
from edgec.passes.partition import partition_graph
from edgec.runtime import load as edgec_load
from edgec.targets import get_target
from edgec.targets.partitioned import split
from edgec.units import human_size
from tests.conftest import assert_close
from tests.test_manifest import assert_matches_schema
from tests.models import make_model, ort_run, random_feeds, small_cnn
from tests.passes.test_partition import DIAMOND

DOUBLE = f"{DEFAULT_PIPELINE},partition{{target=x86-64,device=cpu-test-double}}"
NO_GPU = "needs an NVIDIA GPU (no /dev/nvidiactl here); the GPU run is checked on the GPU lab machine"


def edgec(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def diamond(size: int) -> onnx.ModelProto:
    """DIAMOND as ONNX: two MatMuls the GPU takes, a float64 round trip it refuses. At 512 the
    MatMuls pay for their copies under the cuda target's cost model."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="a"),
             helper.make_node("Cast", ["a"], ["b"], to=TensorProto.DOUBLE, name="b"),
             helper.make_node("Cast", ["b"], ["c"], to=TensorProto.FLOAT, name="c"),
             helper.make_node("Relu", ["a"], ["d"], name="d"),
             helper.make_node("MatMul", ["c", "d"], ["e"], name="e")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in ("x", "w")]
    return make_model(nodes, inputs, [helper.make_tensor_value_info("e", TensorProto.FLOAT, [size, size])])


@pytest.fixture(scope="module")
def double_artifact(tmp_path_factory) -> Path:
    """small_cnn split between the CPU and the CPU test double, compiled once."""
    directory = tmp_path_factory.mktemp("double")
    onnx.save(small_cnn(), directory / "cnn.onnx")
    return api.compile(directory / "cnn.onnx", "x86-64", passes=DOUBLE, output=directory / "cnn.edgec").output


def test_split_gives_each_partition_its_crossing_tensors():
    model = parse_model(DIAMOND)
    parts = split(model, partition_graph(model, get_target("jetson-orin")))
    assert [([v.name for v in p.graph.inputs], [n.name for n in p.graph.nodes], [v.name for v in p.graph.outputs])
            for p in parts] == [(["x", "w"], ["a", "d"], ["a", "d"]), (["a"], ["b", "c"], ["c"]),
                                (["c", "d"], ["e"], ["e"])]


def test_a_multi_partition_artifact_matches_onnxruntime(double_artifact, tmp_path, capsys):
    opened = open_artifact(double_artifact)
    manifest = opened.manifest
    assert manifest["format_version"] == 2
    assert [(p["device"], p["runs_on"], p["library"]) for p in manifest["partitions"]] == [
        ("cpu", "cpu", "partition0.so"), ("cpu-test-double", "cpu", "partition1.so"), ("cpu", "cpu", "partition2.so"),
        ("cpu-test-double", "cpu", "partition3.so"), ("cpu", "cpu", "partition4.so")]
    assert list(manifest["members"]) == [*(f"partition{i}.so" for i in range(5)), "weights.bin"]
    assert_matches_schema(manifest)
    assert [p.library for p in opened.typed.partitions] == [f"partition{i}.so" for i in range(5)]
    opened.verify_members()
    feeds = random_feeds(small_cnn())
    np.savez(tmp_path / "in.npz", **feeds)
    assert_close(edgec_load(double_artifact).run(feeds), ort_run(small_cnn(), feeds), rtol=1e-4, atol=1e-5)


def test_a_multi_partition_artifact_is_reproducible_and_inspectable(double_artifact, tmp_path, capsys):
    api.compile(double_artifact.parent / "cnn.onnx", "x86-64", passes=DOUBLE, output=tmp_path / "again.edgec")
    assert (tmp_path / "again.edgec").read_bytes() == double_artifact.read_bytes()
    code, out, err = edgec(capsys, "inspect", double_artifact)
    assert code == 0, err
    assert "partition  #1 cpu-test-double (1 nodes) in partition1.so: c1 -> r1" in out.splitlines()


def test_check_runs_every_partition_and_reads_every_library(double_artifact):
    """``edgec check --model`` compares the partitioned run with onnxruntime; the profile's
    no-network rule reads the symbols of each partition's library."""
    from edgec.profiles.compliance import locality_measurement
    from edgec.profiles.profile import load_profile

    checked = api.check(double_artifact, model=double_artifact.parent / "cnn.onnx")
    assert checked.ok and [row.name for row in checked.comparison.rows] == ["logits"]
    measurement = locality_measurement(load_profile("mobile"), double_artifact)
    assert measurement.status == "pass" and "imported symbols" in measurement.measured


def test_each_partition_plans_the_tensors_crossing_into_and_out_of_it(double_artifact):
    manifest = open_artifact(double_artifact).manifest
    partitions = manifest["partitions"]
    for crossing in manifest["partition_plan"]["crossings"]:
        for side in ("from", "to"):
            if crossing[side] is not None:
                planned = {t["name"]: t["size"] for t in partitions[crossing[side]]["memory_plan"]["tensors"]}
                assert planned[crossing["tensor"]] >= crossing["bytes"]
    for partition in partitions:
        assert partition["input_bytes"] > 0 and partition["output_bytes"] > 0


def test_report_partitions_json_has_devices_shares_crossings_and_reasons(double_artifact, capsys):
    code, out, err = edgec(capsys, "report", double_artifact, "--partitions", "--json")
    assert code == 0, err
    summary = json.loads(out)["partitions"]
    assert summary["second_device"] == "cpu-test-double"
    assert [(p["device"], p["nodes"]) for p in summary["partitions"]] == [
        ("cpu", 1), ("cpu-test-double", 1), ("cpu", 2), ("cpu-test-double", 1), ("cpu", 3)]
    assert sum(p["macs_share"] for p in summary["partitions"]) == pytest.approx(1.0)
    assert summary["partitions"][1]["macs_share"] == 0.0  # a Relu
    assert summary["crossings"][1] == {"tensor": "c1", "bytes": 8192, "from": 0, "to": 1, "from_device": "cpu",
                                       "to_device": "cpu-test-double", "copy": False, "from_library": "partition0.so",
                                       "to_library": "partition1.so"}
    assert summary["totals"]["copies"] == 0  # the test double works in host memory
    reasons = {n["node"]: n["reason"] for n in summary["cpu_nodes"]}
    assert reasons["conv1"] == "Conv is not in the cpu-test-double capability table"
    assert len(reasons) == 6 and all(reasons.values())
    manifest = open_artifact(double_artifact).manifest
    assert [p["arena_bytes"] for p in summary["partitions"]] == [
        p["memory_plan"]["arena_bytes"] for p in manifest["partitions"]]
    code, out, _ = edgec(capsys, "report", double_artifact, "--partitions")
    assert code == 0 and "second device cpu-test-double: a test double of the host CPU, not an accelerator" in out
    assert out.splitlines()[-5].split() == ["#0", "partition0.so", "cpu", "11.0", "KiB", "3.0", "KiB", "8.0", "KiB"]
    layers = open_artifact(double_artifact).manifest["report"]["layers"]
    assert [layer["device"] for layer in layers][:3] == ["cpu", "cpu-test-double", "cpu"]


def test_report_partitions_plot_draws_a_png(double_artifact, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the plot extra)")
    code, _, err = edgec(capsys, "report", double_artifact, "--partitions", "--plot", tmp_path / "parts.png")
    assert code == 0, err
    assert (tmp_path / "parts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compile_explains_partitions_or_says_there_are_none(tmp_path, capsys):
    onnx.save(diamond(4), tmp_path / "d.onnx")
    code, out, err = edgec(capsys, "compile", tmp_path / "d.onnx", "-t", "x86-64", "-o", tmp_path / "d.edgec",
                           "-q", "--explain-partitions")
    assert code == 0, err
    assert out.strip() == "not partitioned: the whole graph runs on cpu (target x86-64)"
    manifest = open_artifact(tmp_path / "d.edgec").manifest
    assert manifest["format_version"] == 1 and "partitions" not in manifest  # the single-library layout, unchanged
    code, out, err = edgec(capsys, "compile", tmp_path / "d.onnx", "-t", "x86-64", "--passes",
                           DOUBLE.replace("x86-64", "x86-64,fallback=cpu"), "-o", tmp_path / "p.edgec", "-q",
                           "--explain-partitions", "--json")
    assert code == 0, err
    assert [p["device"] for p in json.loads(out)["partitions"]["partitions"]] == ["cpu", "cpu-test-double", "cpu"]


def test_fallback_error_names_the_node_and_its_reason_and_writes_nothing(tmp_path, capsys):
    onnx.save(diamond(4), tmp_path / "d.onnx")
    code, out, err = edgec(capsys, "compile", tmp_path / "d.onnx", "-t", "cuda", "--fallback=error",
                           "-o", tmp_path / "d.edgec", "-q")
    assert code == 1 and out == ""
    assert err.startswith("edgec: error: ")
    assert "node 'b' (Cast): cannot run on cuda: Cast on cuda computes float32/float16/int8/int32/int64/bool, " \
           "not float64" in err
    assert "node 'c' (Cast): cannot run on cuda: 'b' is float64, which target cuda does not list" in err
    assert not (tmp_path / "d.edgec").exists()


def test_fallback_is_checked_against_the_target_and_the_pipeline(tmp_path, capsys):
    onnx.save(diamond(4), tmp_path / "d.onnx")
    code, _, err = edgec(capsys, "compile", tmp_path / "d.onnx", "-t", "x86-64", "--fallback", "error",
                         "-o", tmp_path / "d.edgec", "-q")
    assert code == 1 and "fallback=error, but target x86-64 has no accelerator" in err
    code, _, err = edgec(capsys, "compile", tmp_path / "d.onnx", "-t", "x86-64", "--fallback", "cpu", "--passes",
                         DOUBLE, "-o", tmp_path / "d.edgec", "-q")
    assert code == 2 and "set fallback=cpu|error on it instead" in err
    code, _, err = edgec(capsys, "compile", tmp_path / "d.onnx", "-t", "x86-64", "--fallback", "gpu", "-q")
    assert code == 2 and "--fallback" in err


GPU_TARGETS = [
    "cuda",
    pytest.param("jetson-orin", marks=pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                                                         reason="needs Debian's g++-aarch64-linux-gnu (CI installs it)")),
]


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_gpu_partitions_get_gpu_code_and_the_cpu_partition_host_code(target, tmp_path, capsys):
    onnx.save(diamond(512), tmp_path / "d.onnx")
    code, _, err = edgec(capsys, "compile", tmp_path / "d.onnx", "-t", target, "-o", tmp_path / "d.edgec", "-q")
    assert code == 0, err
    opened = open_artifact(tmp_path / "d.edgec")
    partitions = opened.manifest["partitions"]
    assert [(p["device"], p["inputs"], p["outputs"]) for p in partitions] == [
        ("cuda", ["x", "w"], ["a", "d"]), ("cpu", ["a"], ["c"]), ("cuda", ["c", "d"], ["e"])]
    machine = 183 if target == "jetson-orin" else 62  # EM_AARCH64, EM_X86_64: the host side of every library
    for partition in partitions:
        library = opened.read_member(partition["library"])
        assert int.from_bytes(library[18:20], "little") == machine
        assert (b"__global__" in library) == (partition["device"] == "cuda")  # CUDA kernels only where planned
    if not Path("/dev/nvidiactl").exists():
        code, _, err = edgec(capsys, "run", tmp_path / "d.edgec", "--random-inputs")
        assert code == 1
        machine_error = "built for aarch64" if target == "jetson-orin" else "runs on cuda, and this machine has no NVIDIA GPU"
        assert machine_error in err


@pytest.mark.skipif(not Path("/dev/nvidiactl").exists(), reason=NO_GPU)
def test_a_cuda_multi_partition_artifact_runs_and_matches_onnxruntime(tmp_path, capsys):
    model = diamond(512)
    onnx.save(model, tmp_path / "d.onnx")
    api.compile(tmp_path / "d.onnx", "cuda", output=tmp_path / "d.edgec")
    feeds = random_feeds(model)
    np.savez(tmp_path / "in.npz", **feeds)
    code, _, err = edgec(capsys, "run", tmp_path / "d.edgec", "--inputs", tmp_path / "in.npz", "--output", tmp_path / "o.npz")
    assert code == 0, err
    with np.load(tmp_path / "o.npz") as got:
        assert_close(dict(got), ort_run(model, feeds), rtol=1e-3, atol=1e-3)


def test_a_profile_arena_budget_is_checked_against_the_sum_of_the_partitions_vms(tmp_path, capsys):
    """Each partition's VM keeps its own intermediates, so the lowered check adds them up."""
    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    code, _, err = edgec(capsys, "compile", tmp_path / "cnn.onnx", "-t", "x86-64", "--passes", DOUBLE,
                         "--profile", "mobile", "--set", "memory.activation_arena=1KiB", "--allow-violations",
                         "-o", tmp_path / "cnn.edgec", "-q")
    assert code == 0, err
    manifest = open_artifact(tmp_path / "cnn.edgec").manifest
    lowered = [c for c in manifest["compliance"]["checks"]
               if c["attribute"] == "memory.activation_arena" and c["found"].endswith("after lowering")]
    total = sum(p["runtime_memory"]["arena_bytes"] if p["runtime_memory"]["runs_in_arena"]
                else p["runtime_memory"]["tvm_storage_bytes"] for p in manifest["partitions"])
    assert len(lowered) == 1 and not lowered[0]["ok"]
    assert lowered[0]["how"] == "the sum over 5 partitions' VMs, each in its own arena or storages after lowering"
    assert lowered[0]["found"] == f"{human_size(total)} after lowering"
    assert total > 1024 and manifest["compliance"]["violations_allowed"]
