"""Activation memory of the nine zoo models and a MobileNetV2-style CNN: without reuse,
planned, after reordering, what TVM's VM allocates, and the measured peak RSS of
edgec's runtime against onnxruntime's.

    python benchmarks/memory_plan.py                       # markdown table on stdout
    python benchmarks/memory_plan.py --models densenet121 --output memory.json   # also memory.md

Each model is imported and run through edgec's default passes
(remove-identity, fold-constants, fold-batchnorm, eliminate-dead), then:

- naive: every activation (graph inputs and outputs included) in its own buffer;
- tflm: TFLite Micro's planner, greedy by size with no in-place reuse;
- lower bound: the largest total of bytes live at one step (with in-place reuse);
  no packing of this node order does better;
- greedy: greedy by size with in-place reuse;
- best: the smallest arena of plan-memory's algorithms, and which one;
- peak before/after: the lower bound before and after reorder-for-memory;
- arena after: plan-memory's best arena in the reordered graph;
- best / bound: arena after over peak after (1.00: the plan meets its lower bound).

Then the model is compiled for x86-64 (default pipeline) and run, each engine in
its own freshly spawned process, on the same seeded input, 5 times:

- TVM: the storages TVM's ``StaticPlanBlockMemory`` would allocate per call;
- VM arena: the one arena the VM runs in instead, edgec's packing of TVM's tensors
  (the artifact's ``runtime_memory``; larger than the graph's arena where TVM's
  lowering adds tensors, such as layout transposes);
- RSS edgec / RSS ort: the process's peak resident set (``VmHWM``) after the
  runs: the runtime itself, the weights, the activations; both with the host's
  physical cores as threads. The edgec process loads TVM's runtime library only
  and no torch, as ``edgec run`` does and as a deployed runtime would;
- base: the edgec process's RSS after its imports, before loading the model; the
  rest of its peak is the weights, TVM's storages, the library and the kernels'
  scratch.

All sizes are bytes at 64-byte alignment, batch 1, float32. Times are wall
seconds of ``plan_memory`` and ``reorder_for_memory`` alone.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnx

from edgec.compiler.pass_manager import PassManager, Pipeline
from edgec.frontend.importer import import_proto
from edgec.passes.plan_memory import plan_memory
from edgec.passes.reorder_for_memory import reorder_for_memory
from models import ZOO, model_by_name

DEFAULT_PASSES = "remove-identity,fold-constants,fold-batchnorm,eliminate-dead"


MODELS = [*ZOO, "mobilenet_v2"]
RUNS = 5


def status_bytes(field: str) -> int:
    """A size from /proc/self/status: VmRSS (resident now) or VmHWM (the peak of this process image).

    Not ``ru_maxrss``: Linux carries it across exec, so a spawned child would report its parent's peak."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(f"{field}:"))


def rss_worker(engine: str, path: str, feeds: dict, queue) -> None:
    """Child process: the peak RSS of loading ``path`` with one engine and running it ``RUNS`` times."""
    from edgec.host import physical_cores

    threads = physical_cores()
    if engine == "edgec":
        os.environ["TVM_NUM_THREADS"] = str(threads)
        # As `edgec run` does: TVM's runtime library alone, and no torch (tvm_ffi imports it if installed).
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"
        sys.modules.setdefault("torch", None)
        import edgec.runtime

        base = status_bytes("VmRSS")
        model = edgec.runtime.load(path)
        run = model.run
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        base = status_bytes("VmRSS")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        run = lambda feeds: session.run(None, feeds)  # noqa: E731
    for _ in range(RUNS):
        run(feeds)
    queue.put({"base": base, "peak": status_bytes("VmHWM")})


def peak_rss(engine: str, path: Path, feeds: dict) -> dict:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited from this one
    queue = context.Queue()
    process = context.Process(target=rss_worker, args=(engine, str(path), feeds, queue))
    process.start()
    result = queue.get(timeout=600)
    process.join()
    return result


def runtime_memory(onnx_model: onnx.ModelProto, workdir: Path) -> dict:
    """Compile for x86-64 and measure both engines' peak RSS on one seeded input."""
    from edgec.compiler.driver import CompileRequest, compile_model
    from edgec.deploy.artifact import open_artifact

    source, artifact = workdir / "model.onnx", workdir / "model.edgec"
    onnx.save(onnx_model, source)
    compile_model(CompileRequest(model=source, target="x86-64", output=artifact))
    manifest = open_artifact(artifact).manifest
    shape = manifest["signature"]["inputs"][0]
    feeds = {shape["name"]: np.random.default_rng(0).standard_normal(shape["shape"]).astype(np.float32)}
    edgec_rss, ort_rss = peak_rss("edgec", artifact, feeds), peak_rss("ort", source, feeds)
    runtime = manifest["runtime_memory"]
    return {"tvm": runtime["tvm_storage_bytes"], "vm_arena": runtime["arena_bytes"] if runtime["runs_in_arena"] else None, "weights": manifest["report"]["totals"]["weight_bytes"],
            "rss_edgec": edgec_rss["peak"], "base_edgec": edgec_rss["base"], "rss_ort": ort_rss["peak"],
            "base_ort": ort_rss["base"]}


def measure(name: str) -> dict:
    source = model_by_name(name)
    model = PassManager(Pipeline.parse(DEFAULT_PASSES)).run(import_proto(source))
    tflm = plan_memory(model, algorithm="greedy-by-size", inplace=False)
    start = time.perf_counter()
    plan = plan_memory(model)
    plan_s = time.perf_counter() - start
    start = time.perf_counter()
    reordering = reorder_for_memory(model.graph)
    reorder_s = time.perf_counter() - start
    model.graph.nodes = reordering.nodes
    after = plan_memory(model)
    with tempfile.TemporaryDirectory(prefix="edgec-bench-") as workdir:
        measured = runtime_memory(source, Path(workdir))
    return {**measured,
        "model": name, "nodes": len(model.graph.nodes), "tensors": len(plan.tensors),
        "naive": plan.naive_bytes, "tflm": tflm.arena_bytes, "lower_bound": plan.lower_bound,
        "greedy": plan.alternatives["greedy-by-size"], "best": plan.arena_bytes, "algorithm": plan.algorithm,
        "alternatives": plan.alternatives, "inplace": len(plan.inplace), "optimal": plan.optimal,
        "peak_before": reordering.peak_before, "peak_after": reordering.peak_after,
        "segments": reordering.segments, "segments_exact": reordering.exact_segments,
        "segments_reordered": reordering.changed_segments, "arena_after": after.arena_bytes,
        "plan_s": round(plan_s, 3), "reorder_s": round(reorder_s, 3),
    }


def mib(size: int) -> str:
    return f"{size / 2**20:.2f}"


def geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def table(rows: list[dict]) -> str:
    head = ("| model | naive MiB | tflm MiB | lower bound MiB | greedy MiB | best MiB (algorithm) "
            "| peak before -> after MiB | arena after MiB | best / bound | TVM MiB | VM arena MiB | weights MiB "
            "| RSS edgec MiB (base) | RSS ort MiB | edgec / ort | plan s | reorder s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {mib(r['naive'])} | {mib(r['tflm'])} | {mib(r['lower_bound'])} "
                     f"| {mib(r['greedy'])} | {mib(r['best'])} ({r['algorithm']}) "
                     f"| {mib(r['peak_before'])} -> {mib(r['peak_after'])} | {mib(r['arena_after'])} "
                     f"| {r['arena_after'] / r['peak_after']:.3f} | {mib(r['tvm'])} "
                     f"| {mib(r['vm_arena']) if r['vm_arena'] is not None else 'not used'} | {mib(r['weights'])} "
                     f"| {mib(r['rss_edgec'])} ({mib(r['base_edgec'])}) | {mib(r['rss_ort'])} "
                     f"| {r['rss_edgec'] / r['rss_ort']:.2f} | {r['plan_s']:.3f} | {r['reorder_s']:.3f} |")
    ratios = [r["arena_after"] / r["peak_after"] for r in rows]
    rss = [r["rss_edgec"] / r["rss_ort"] for r in rows]
    lines += ["", f"best / bound: geomean {geomean(ratios):.3f}, worst {max(ratios):.3f}; "
                  f"RSS edgec / ort: geomean {geomean(rss):.2f}, worst {max(rss):.2f}"]
    return "\n".join(lines)


@click.command()
@click.option("--models", default=",".join(MODELS), help="Comma-separated model names.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every number as JSON here, and the table beside it as .md.")
def main(models: str, output: Path | None) -> None:
    rows = []
    for name in models.split(","):
        click.echo(f"{name}...", err=True)
        rows.append(measure(name))
    text = table(rows)
    click.echo(text)
    if output:
        output.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                      "rows": rows}, indent=2) + "\n")
        output.with_suffix(".md").write_text(
            f"# edgec memory, {time.strftime('%Y-%m-%d')}\n\n{os.cpu_count()} cores, {platform.machine()}; "
            "sizes in MiB; see benchmarks/memory_plan.py for every column.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
