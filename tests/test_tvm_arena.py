"""The VM runs in one arena at edgec's offsets: the lowered module, the numbers, and the memory a run really uses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import api
from edgec.deploy.artifact import open_artifact
from edgec.targets.tvm_arena import kernel_workspace_bytes
from tests.conftest import assert_close
from tests.models import make_model, ort_run, random_feeds, zoo_model


def compile_capturing_main(model: onnx.ModelProto, tmp_path):
    """Compile ``model``, keeping ``main`` as the EdgecArena pass left it."""
    import tvm

    captured = {}

    @tvm.ir.instrument.pass_instrument
    class Capture:
        def run_after_pass(self, mod, info):
            if info.name == "EdgecArena":
                captured["main"] = mod["main"]

    onnx.save(model, tmp_path / "m.onnx")
    with tvm.transform.PassContext(instruments=[Capture()]):
        api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec")
    return captured["main"], open_artifact(tmp_path / "m.edgec").manifest


def calls(function, op_name: str) -> list:
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(function, lambda e: found.append(e) if isinstance(e, relax.Call) and getattr(
        e.op, "name", "") == op_name else None)
    return found


def test_main_allocates_one_arena_and_views_every_tensor_at_its_offset(tmp_path):
    model = zoo_model("squeezenet")
    lowered, manifest = compile_capturing_main(model, tmp_path)
    runtime = manifest["runtime_memory"]
    assert runtime["runs_in_arena"] and runtime["why_not"] == ""
    storages = calls(lowered, "relax.memory.alloc_storage")
    assert len(storages) == 1 and int(storages[0].args[0].values[0]) == runtime["arena_bytes"]
    views = calls(lowered, "relax.memory.view")
    assert len(views) == runtime["tensors"] > 10
    offsets = [int(view.args[3].value) for view in views]
    assert all(offset % 64 == 0 for offset in offsets) and len(set(offsets)) > 1
    assert runtime["lower_bound_bytes"] <= runtime["arena_bytes"] < runtime["tvm_storage_bytes"]

    feeds = random_feeds(model)
    from edgec.runtime import load

    assert_close(load(tmp_path / "m.edgec").run(feeds), ort_run(model, feeds), rtol=1e-3, atol=1e-4)


def test_a_kernel_too_large_to_rewrite_keeps_tvms_storages_and_says_why(tmp_path, monkeypatch):
    """TVM's parser takes minutes on a megabyte kernel (SSD-lite's box decoding): past the limit the
    model runs in TVM's own storages, as right as in the arena."""
    import edgec.targets.tvm_arena as tvm_arena

    monkeypatch.setattr(tvm_arena, "LARGEST_REWRITTEN_KERNEL", 1000)
    model = zoo_model("squeezenet")
    onnx.save(model, tmp_path / "m.onnx")
    artifact = api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec").output
    runtime = open_artifact(artifact).manifest["runtime_memory"]
    assert not runtime["runs_in_arena"] and "KiB of TVMScript, too large to rewrite" in runtime["why_not"]
    feeds = random_feeds(model)
    from edgec.runtime import load

    assert_close(load(artifact).run(feeds), ort_run(model, feeds), rtol=1e-3, atol=1e-4)


def test_kernel_workspace_counts_global_buffers_only():
    script = """
    pad_temp = T.sblock_alloc_buffer((T.int64(1), T.int64(10), T.int64(10), T.int64(8)))
    acc = T.sblock_alloc_buffer((T.int64(1), T.int64(8)), scope="local")
    idx = T.sblock_alloc_buffer((T.int64(4),), "int64")
    """
    assert kernel_workspace_bytes(script) == 10 * 10 * 8 * 4 + 4 * 8


def big_activation_model() -> onnx.ModelProto:
    """64 MiB of weights and 4 MiB activations: the runtime's own few MiB are small beside them."""
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(4):
        weights.append(numpy_helper.from_array((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    weights.append(numpy_helper.from_array((rng.standard_normal((64, 262144)) * 0.01).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 128, 128])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 262144])], weights)


MEASURE = """
import json, os, sys
sys.modules["torch"] = None  # as `edgec run`: TVM's runtime library alone, no torch
os.environ["TVM_USE_RUNTIME_LIB"] = "1"
import numpy as np, tvm.runtime
from edgec.runtime import load

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

base = status("VmRSS")
model = load(sys.argv[1])
feeds = model.random_inputs(0)
for _ in range(3):
    model.run(feeds)
print(json.dumps({"base": base, "peak": status("VmHWM")}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc/self/status (Linux)")
def test_measured_peak_memory_agrees_with_what_the_artifact_records(tmp_path):
    """Peak RSS of a run, less the runtime's own before loading, is the recorded weights, arena,
    outputs, inputs and the largest kernel scratch, within 10% and 8 MiB (allocator slack, thread stacks)."""
    onnx.save(big_activation_model(), tmp_path / "m.onnx")
    api.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "m.edgec")
    manifest = open_artifact(tmp_path / "m.edgec").manifest
    runtime, totals = manifest["runtime_memory"], manifest["report"]["totals"]
    inputs = sum(int(np.prod(i["shape"])) * np.dtype(i["dtype"]).itemsize for i in manifest["signature"]["inputs"])
    # the caller's arrays and the runtime's copies of them, both ways
    expected = (totals["weight_bytes"] + runtime["arena_bytes"] + runtime["workspace_bytes"]
                + 2 * (inputs + runtime["output_bytes"]) + manifest["members"]["model.so"]["size"])
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "m.edgec")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.splitlines()[-1])
    used = measured["peak"] - measured["base"]
    assert abs(used - expected) <= 0.10 * expected + 8 * 2**20, (used / 2**20, expected / 2**20)
