"""Activation memory of the nine zoo models: without reuse, planned, and after reordering.

    python benchmarks/memory_plan.py                       # markdown table on stdout
    python benchmarks/memory_plan.py --models densenet121 --output memory.json

Each model is imported and run through edgec's default passes
(remove-identity, fold-constants, fold-batchnorm, eliminate-dead), then:

- naive: every activation (graph inputs and outputs included) in its own buffer;
- tflm: TFLite Micro's planner, greedy by size with no in-place reuse;
- lower bound: the largest total of bytes live at one step (with in-place reuse);
  no packing of this node order does better;
- greedy: greedy by size with in-place reuse;
- best: the smallest arena of plan-memory's algorithms, and which one;
- peak before/after: the lower bound before and after reorder-for-memory;
- arena after: plan-memory's best arena in the reordered graph.

All sizes are bytes at 64-byte alignment, batch 1, float32. Times are wall
seconds of ``plan_memory`` and ``reorder_for_memory`` alone.
"""

from __future__ import annotations

import json
import time

import click

from edgec.importer import import_proto
from edgec.pass_manager import PassManager, Pipeline
from edgec.passes.plan_memory import plan_memory
from edgec.passes.reorder_for_memory import reorder_for_memory
from models import ZOO, zoo_model

DEFAULT_PASSES = "remove-identity,fold-constants,fold-batchnorm,eliminate-dead"


def measure(name: str) -> dict:
    model = PassManager(Pipeline.parse(DEFAULT_PASSES)).run(import_proto(zoo_model(name)))
    tflm = plan_memory(model, algorithm="greedy-by-size", inplace=False)
    start = time.perf_counter()
    plan = plan_memory(model)
    plan_s = time.perf_counter() - start
    start = time.perf_counter()
    reordering = reorder_for_memory(model.graph)
    reorder_s = time.perf_counter() - start
    model.graph.nodes = reordering.nodes
    after = plan_memory(model)
    return {
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


def table(rows: list[dict]) -> str:
    head = ("| model | naive MiB | tflm MiB | lower bound MiB | greedy MiB | best MiB (algorithm) "
            "| peak before -> after MiB | arena after MiB | in-place | plan s | reorder s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {mib(r['naive'])} | {mib(r['tflm'])} | {mib(r['lower_bound'])} "
                     f"| {mib(r['greedy'])} | {mib(r['best'])} ({r['algorithm']}) "
                     f"| {mib(r['peak_before'])} -> {mib(r['peak_after'])} | {mib(r['arena_after'])} "
                     f"| {r['inplace']} | {r['plan_s']:.3f} | {r['reorder_s']:.3f} |")
    return "\n".join(lines)


@click.command()
@click.option("--models", default=",".join(ZOO), help="Comma-separated zoo names.")
@click.option("--output", type=click.Path(dir_okay=False), help="Also write every number as JSON here.")
def main(models: str, output: str | None) -> None:
    rows = [measure(name) for name in models.split(",")]
    click.echo(table(rows))
    if output:
        with open(output, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
