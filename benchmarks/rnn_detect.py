"""Compile time and latency against onnxruntime for issue #15's models: the keyword-spotting
LSTM and GRU (whole 49-frame sequence, and one streaming step), the SSD-lite-style detector
of tests/test_detection.py, and torchvision's SSD-lite (where torchvision imports: the compile
time of the network alone and of the whole export, whose detections on one image are compared
with onnxruntime's).

    python benchmarks/rnn_detect.py --output benchmarks/results/2026-12-05-rnn-detect.md

Both engines run in this process with the same thread count and the same seeded inputs,
interleaved in rounds; outputs are compared, so a fast wrong result shows.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_field(name: str) -> str:
    """One field of lscpu: the results name the machine by it (the family and model say which
    generation a bare "AMD EPYC" is)."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{name}:")), "unknown")


def timed_compile(source: Path, output: Path) -> float:
    import edgec

    started = time.perf_counter()
    edgec.compile(source, "x86-64", output=output)
    return time.perf_counter() - started


def latency(source: Path, artifact: Path, feeds: dict, threads: int, rounds: int, runs: int) -> tuple[float, float, float]:
    """(edgec ms, onnxruntime ms, max abs diff): medians over ``rounds`` interleaved rounds of ``runs`` calls."""
    import onnxruntime as ort

    import edgec

    compiled = edgec.load(artifact)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    engines = {"edgec": lambda: list(compiled.run(feeds).values()), "ort": lambda: session.run(None, feeds)}
    diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(engines["edgec"](), engines["ort"]()))
    times: dict[str, list[float]] = {"edgec": [], "ort": []}
    for round_ in range(rounds):
        for name in (("edgec", "ort") if round_ % 2 == 0 else ("ort", "edgec")):
            for _ in range(3):
                engines[name]()
            started = time.perf_counter()
            for _ in range(runs):
                engines[name]()
            times[name].append((time.perf_counter() - started) / runs * 1e3)
    return statistics.median(times["edgec"]), statistics.median(times["ort"]), diff


def ssdlite(directory: Path) -> tuple[str, str]:
    """torchvision's SSD-lite: (network-only row, whole-export row) as compile results; the whole
    export (batch norms calibrated, so the detections follow the image) is also run on one
    random image against onnxruntime."""
    try:
        from tests.torchvision_ssdlite import export_ssdlite
    except ImportError as exc:
        return f"not measured: {exc}", ""
    rows = []
    for whole in (False, True):
        source = export_ssdlite(directory / f"ssdlite-{'whole' if whole else 'net'}.onnx", whole=whole,
                                calibrated=whole)
        artifact = source.with_suffix(".edgec")
        try:
            rows.append(f"{timed_compile(source, artifact):.1f} s")
        except Exception as exc:  # noqa: BLE001 - a refusal is the result to record
            rows.append(f"refused: {str(exc).splitlines()[0]}")
            continue
        if whole:
            rows[-1] += f" ({ssdlite_check(source, artifact)})"
    return rows[0], rows[1]


def ssdlite_check(source: Path, artifact: Path) -> str:
    """How edgec's detections on one random image compare with onnxruntime's."""
    import onnxruntime as ort

    import edgec

    image = {"image": np.random.default_rng(0).random((3, 320, 320), dtype=np.float32)}
    actual = edgec.load(artifact).run(image)
    expected = dict(zip(("boxes", "scores", "labels"),
                        ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, image)))
    if actual["labels"].shape != expected["labels"].shape:
        return f"{len(actual['labels'])} detections, onnxruntime {len(expected['labels'])}"
    same = int((actual["labels"] == expected["labels"]).sum())
    diff = float(np.max(np.abs(actual["scores"] - expected["scores"]), initial=0.0))
    return (f"{len(expected['labels'])} detections as onnxruntime's, labels equal row for row in {same}, "
            f"max abs score diff {diff:.1e}")


@click.command()
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--rounds", type=int, default=5, show_default=True)
@click.option("--runs", type=int, default=200, show_default=True)
@click.option("--ssdlite/--no-ssdlite", "with_ssdlite", default=True, show_default=True)
def main(output: Path, threads: int, rounds: int, runs: int, with_ssdlite: bool) -> None:
    import os

    os.environ["TVM_NUM_THREADS"] = str(threads)
    from tests import kws_models
    from tests.test_detection import FEATURES, detector

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-") as workdir:
        directory = Path(workdir)
        cases = []
        for cell in ("lstm", "gru"):
            whole = kws_models.export(cell, False, directory / f"{cell}.onnx")
            cases.append((f"KWS {cell.upper()}, 49 frames", whole, {"x": kws_models.mfcc_like(0)}))
            step = kws_models.export(cell, True, directory / f"{cell}-step.onnx")
            state = {name: np.zeros((1, 1, kws_models.HIDDEN), np.float32) for name in kws_models.state_names(cell)}
            cases.append((f"KWS {cell.upper()}, one streaming step", step,
                          {"x": kws_models.mfcc_like(0)[:, :1], **state}))
        onnx.save(detector(), directory / "detector.onnx")
        features = np.random.default_rng(7).standard_normal((1, FEATURES, 3, 3)).astype(np.float32)
        cases.append(("detector (decode, TopK, NMS)", directory / "detector.onnx", {"features": features}))
        for name, source, feeds in cases:
            compile_s = timed_compile(source, source.with_suffix(".edgec"))
            edgec_ms, ort_ms, diff = latency(source, source.with_suffix(".edgec"), feeds, threads, rounds, runs)
            rows.append(f"| {name} | {compile_s:.1f} | {edgec_ms:.3f} | {ort_ms:.3f} | {ort_ms / edgec_ms:.2f} | {diff:.1e} |")
        net, whole = ssdlite(directory) if with_ssdlite else ("not measured", "not measured")
    text = "\n".join([
        f"# Issue #15 models: compile time and latency, {time.strftime('%Y-%m-%d')}", "",
        f"CPU: {cpu_field('Model name')} (family {cpu_field('CPU family')} model {cpu_field('Model')}; {os.cpu_count()} CPUs, "
        f"shared with other sessions), {threads} thread(s) for both "
        f"engines; median of {rounds} interleaved rounds of {runs} calls. Made by `benchmarks/rnn_detect.py`.", "",
        "| model | compile s | edgec ms | onnxruntime ms | speed-up | max abs diff |", "|---|---:|---:|---:|---:|---:|",
        *rows, "",
        f"torchvision `ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)`, TorchScript export: "
        f"network (backbone and head, raw boxes and logits): {net}; whole model with its post-processing: {whole}", ""])
    output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
