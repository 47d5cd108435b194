"""Start-up and per-call cost: edgec's runtime against onnxruntime, and edgec analyze's time.

- Cold start of the bundled example (examples/digits_mlp.onnx, batch 10): the wall time of a
  fresh ``python -c`` process that imports the engine, loads the model and runs it once,
  measured from outside (interpreter start included), after one untimed process of each
  engine (warm file cache); the median of ``--processes``, the engines started in turn.
- ``edgec analyze`` on ResNet50 (onnx's light model, random weights, 98 MB): the wall time of
  the fresh process, median of ``--processes`` (the issue's goal: a few seconds).
- Per-call cost: the digits CNN of ``benchmarks/quantization.py`` at batch 1, float and
  edgec's int8 QDQ file, each engine given the same thread count; the lowest of
  ``--passes`` medians, the engines timed in turn. On a model this small the time is
  mostly fixed cost: argument checks, tensor handling, dispatch and output copies.

    python benchmarks/startup.py --output benchmarks/results/DATE-startup.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.quantization import compile_artifact, edgec_quantize, interleaved_rows, ort_session  # noqa: E402

EXAMPLE, SAMPLE = ROOT / "examples" / "digits_mlp.onnx", ROOT / "examples" / "digits_sample.npz"

EDGEC_PROCESS = """
import sys, numpy as np
import edgec.runtime
model = edgec.runtime.load(sys.argv[1])
model.run(dict(np.load(sys.argv[2])))
"""
ORT_PROCESS = """
import sys, numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
session.run(None, dict(np.load(sys.argv[2])))
"""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def isa() -> str:
    from edgec.host import cpu_features

    features = cpu_features()
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in features)


def process_seconds(script: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, *args], check=True)
    return time.perf_counter() - start


def cold_start(artifact: Path, processes: int) -> dict:
    engines = {"edgec": (EDGEC_PROCESS, str(artifact)), "onnxruntime": (ORT_PROCESS, str(EXAMPLE))}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for script, model in engines.values():  # warm the file cache
        process_seconds(script, model, str(SAMPLE))
    for _ in range(processes):
        for name, (script, model) in engines.items():
            times[name].append(process_seconds(script, model, str(SAMPLE)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"medians_ms": {name: round(1e3 * s, 1) for name, s in medians.items()},
            "all_ms": {name: [round(1e3 * s, 1) for s in values] for name, values in times.items()},
            "edgec_over_onnxruntime": round(medians["edgec"] / medians["onnxruntime"], 2)}


def analyze_seconds(work: Path, processes: int) -> dict:
    import onnx

    from benchmarks.models import zoo_model

    model = work / "resnet50.onnx"
    onnx.save(zoo_model("resnet50"), model)
    command = [sys.executable, "-m", "edgec.entry", "analyze", str(model), "--target", "x86-64", "--json"]
    subprocess.run(command, check=True, capture_output=True)  # warm the file cache
    times = []
    for _ in range(processes):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"model": "resnet50", "median_s": round(statistics.median(times), 2), "all_s": [round(t, 2) for t in times]}


def per_call_rows(work: Path, options) -> list[dict]:
    from edgec.runtime import load
    from tests.digits_cnn import INPUT, digits_split, export, train

    x_train, y_train, x_test, _ = digits_split()
    float_path, calib, qdq = work / "digits.onnx", work / "calib.npz", work / "digits.qdq.onnx"
    export(train(x_train, y_train), float_path)
    np.savez(calib, **{INPUT: x_train[:300]})
    edgec_quantize(float_path, calib, qdq)
    compile_artifact(float_path, work / "digits.edgec")
    compile_artifact(qdq, work / "digits.int8.edgec")
    rows = []
    for label, source, artifact in (("float", float_path, "digits.edgec"), ("int8", qdq, "digits.int8.edgec")):
        compiled, session = load(work / artifact), ort_session(source, options.threads)
        engines = {"edgec": lambda f, c=compiled: c.run(f), "onnxruntime": lambda f, s=session: s.run(None, f)}
        rows += interleaved_rows(f"digits CNN {label}", engines, {INPUT: x_test[:1]}, options)
    return rows


def markdown(result: dict) -> str:
    cold = result["cold_start"]
    lines = [
        f"# Start-up and per-call cost ({result['date']})",
        "",
        f"CPU: {result['cpu']} ({result['isa']}), {result['threads']} threads; torch installed in this "
        f"environment: {result['torch_installed']} (edgec's runtime does not import it either way).",
        "",
        "## Cold start of the bundled example (fresh process: start, import, load, first run)",
        "",
        "| engine | median ms | all ms |",
        "|---|---:|---|",
        *(f"| {name} | {ms} | {', '.join(map(str, cold['all_ms'][name]))} |" for name, ms in cold["medians_ms"].items()),
        "",
        f"edgec / onnxruntime: {cold['edgec_over_onnxruntime']}x (target: at most 3x)",
        "",
        f"## edgec analyze on ResNet50 (fresh process): median {result['analyze']['median_s']} s "
        f"({', '.join(map(str, result['analyze']['all_s']))})",
        "",
        "## Per call, batch 1 (lowest of the interleaved medians)",
        "",
        "| model | engine | ms | other load (cores) |",
        "|---|---|---:|---:|",
        *(f"| {r['model']} | {r['engine']} | {r['ms']} | {r['other_load']} |" for r in result["per_call"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--output", type=Path, help="write JSON here and Markdown beside it")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgec-startup-") as tmp:
        work = Path(tmp)
        compile_artifact(EXAMPLE, work / "mlp.edgec")
        result = {
            "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "isa": isa(), "threads": options.threads,
            "torch_installed": importlib.util.find_spec("torch") is not None,
            "cold_start": cold_start(work / "mlp.edgec", options.processes),
            "analyze": analyze_seconds(work, options.processes),
            "per_call": per_call_rows(work, options),
        }
    text = markdown(result)
    print(text)
    if options.output:
        options.output.write_text(json.dumps(result, indent=2) + "\n")
        options.output.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
