"""How close edgec's conv kernels come to this machine's measured peak: a roofline.

    python benchmarks/roofline.py --models resnet50,vgg19 --output results/roofline.json

The peak is measured, not taken from a datasheet: single-precision GEMM through
numpy's bundled OpenBLAS (2048^3, the best of several runs) with the same thread
count, which reaches close to the FMA units' limit; the memory roof is a large
numpy copy (bytes read plus written per second). Each conv kernel of each model
is built on its own and timed on random arguments (``edgec.targets.profiling``);
its arithmetic intensity is FLOPs over the bytes of its arguments. The issue's
target is that conv kernels reach 70% of the peak, FLOP-weighted per model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np

from models import model_by_name

PEAK_PROBE = """
import sys, time
import numpy as np
n = 2048
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
runs = []
for _ in range(8):
    t0 = time.perf_counter(); a @ b; runs.append(time.perf_counter() - t0)
size = 512 * 2**20
src = np.ones(size // 4, np.float32); dst = np.empty_like(src)
np.copyto(dst, src)
copies = []
for _ in range(5):
    t0 = time.perf_counter(); np.copyto(dst, src); copies.append(time.perf_counter() - t0)
print(2 * n**3 / min(runs) / 1e9, 2 * size / min(copies) / 1e9)
"""


def measured_peak(threads: int) -> tuple[float, float]:
    """(GFLOP/s of fp32 GEMM, GB/s of a large copy) with ``threads`` BLAS threads, in a fresh process."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", PEAK_PROBE], env=env, capture_output=True, text=True, check=True)
    gflops, gbytes = (float(v) for v in out.stdout.split())
    return gflops, gbytes


def conv_kernels(name: str, threads: int) -> list[dict]:
    from edgec.compiler.pass_manager import PassManager, Pipeline
    from edgec.compiler.pipelines import DEFAULT_PIPELINE
    from edgec.frontend.importer import import_proto
    from edgec.targets import get_target
    from edgec.targets.profiling import profile_kernels

    model = PassManager(Pipeline.parse(DEFAULT_PIPELINE)).run(import_proto(model_by_name(name)))
    timings = profile_kernels(model, get_target("x86-64"), min_repeat_ms=50, threads=threads)
    return [t.to_dict() for t in timings if "conv2d" in t.name and t.flops == t.flops and t.flops > 0]


def efficiency(kernels: list[dict], peak: float) -> float:
    flops = sum(k["flops"] * k["calls"] for k in kernels)
    seconds = sum(k["seconds"] * k["calls"] for k in kernels)
    return flops / seconds / 1e9 / peak if seconds else float("nan")


def draw(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak, bandwidth = results["peak_gflops"], results["copy_gbytes"]
    figure, axes = plt.subplots(figsize=(7.5, 5))
    intensity = np.logspace(-1, 3, 200)
    axes.plot(intensity, np.minimum(peak, bandwidth * intensity), color="black", label=f"measured roof ({peak:.0f} GFLOP/s, {bandwidth:.0f} GB/s)")
    axes.axhline(0.7 * peak, color="grey", linestyle="--", linewidth=1, label="70% of peak (target)")
    for name, kernels in results["models"].items():
        axes.scatter([k["intensity"] for k in kernels], [k["gflops"] for k in kernels],
                     s=[8 + 60 * k["flops"] * k["calls"] / max(x["flops"] * x["calls"] for x in kernels) for k in kernels],
                     alpha=0.6, label=f"{name} ({100 * efficiency(kernels, peak):.0f}% FLOP-weighted)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("arithmetic intensity (FLOP per argument byte)")
    axes.set_ylabel("achieved GFLOP/s")
    axes.set_title(f"edgec conv kernels, {results['threads']} threads, {results['date'][:10]}", fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@click.command()
@click.option("--models", default="resnet50,vgg19,squeezenet,inception_v1,mobilenet_v2", show_default=True)
@click.option("--threads", type=int, help="Threads for the kernels and the peak probe [default: physical cores].")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSON results; a Markdown summary (.md) and the figure (.png) are written beside it.")
def main(models: str, threads: int | None, output: Path) -> None:
    """Time every conv kernel and place it under the machine's measured roof."""
    from edgec.host import physical_cores
    from edgec.targets.x86 import host_cpu

    threads = threads or physical_cores()
    peak, bandwidth = measured_peak(threads)
    click.echo(f"measured peak {peak:.1f} GFLOP/s (OpenBLAS sgemm), copy {bandwidth:.1f} GB/s", err=True)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "llvm_cpu": host_cpu(),
               "threads": threads, "peak_gflops": peak, "copy_gbytes": bandwidth, "models": {}}
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        click.echo(f"{name}...", err=True)
        results["models"][name] = conv_kernels(name, threads)
    output.write_text(json.dumps(results, indent=2) + "\n")
    draw(results, output.with_suffix(".png"))
    lines = [f"# Conv kernels against the measured peak, {results['date'][:10]}", "",
             f"{results['llvm_cpu']}, {threads} threads. Peak: {peak:.1f} GFLOP/s (numpy/OpenBLAS sgemm 2048^3, best of 8); "
             f"memory: {bandwidth:.1f} GB/s (512 MiB copy). Each kernel built alone and timed on random arguments.", "",
             "| model | conv kernels | conv GFLOP | conv ms | GFLOP/s | % of peak | best kernel % | worst kernel % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, kernels in results["models"].items():
        flops = sum(k["flops"] * k["calls"] for k in kernels)
        seconds = sum(k["seconds"] * k["calls"] for k in kernels)
        shares = [100 * k["gflops"] / peak for k in kernels]
        lines.append(f"| {name} | {len(kernels)} | {flops / 1e9:.2f} | {seconds * 1e3:.2f} | {flops / seconds / 1e9:.1f} | "
                     f"{100 * efficiency(kernels, peak):.0f}% | {max(shares):.0f}% | {min(shares):.0f}% |")
    lines.append(f"\n![roofline]({output.with_suffix('.png').name})")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
