"""Quantization benchmark: float vs edgec int8 vs onnxruntime int8, in one run.

For the digits CNN (trained here on scikit-learn's digits, 30% held out): top-1 on the
held-out set, weight bytes and latency of
- the float model (onnxruntime, and edgec's artifact),
- edgec's QDQ model (``edgec quantize``, 300 training images, minmax): edgec's compiled
  artifact (integer kernels), and onnxruntime running the same QDQ file,
- onnxruntime's own ``quantize_static`` (QDQ, per-channel int8, same calibration data).
For a MobileNetV2-style and a ResNet-style CNN (random weights, 16 random calibration
inputs) only latency: edgec fp32 vs edgec int8 vs onnxruntime on edgec's QDQ file.

Latency is the median of in-process runs after warmup, with both engines given the
same thread count. This machine has two cores shared with other work, so the
``other load`` column (cores busy outside this process while timing) says how noisy
each row is.

    python benchmarks/quantization.py --output benchmarks/results/DATE-quantization.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.models import model_by_name


def weight_bytes(path: Path) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def busy_cores() -> float:
    """Cores busy machine-wide since boot, in seconds of CPU (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def median_ms(run, feeds: dict, rounds: int, warmup: int) -> tuple[float, float]:
    """(median ms, other load in cores) of ``rounds`` runs after ``warmup``."""
    for _ in range(warmup):
        run(feeds)
    times = []
    busy, own, wall = busy_cores(), time.process_time(), time.perf_counter()
    for _ in range(rounds):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    wall = time.perf_counter() - wall
    other = max(0.0, (busy_cores() - busy) - (time.process_time() - own)) / wall
    return 1e3 * statistics.median(times), round(other, 2)


def compile_artifact(source: Path, output: Path) -> float:
    from edgec.driver import CompileRequest, compile_model

    start = time.perf_counter()
    compile_model(CompileRequest(model=source, target="x86-64", output=output))
    return time.perf_counter() - start


def edgec_quantize(source: Path, calib: Path, output: Path) -> None:
    from edgec.cli import main

    if main(["quantize", str(source), "--calib", str(calib), "-o", str(output)]) != 0:
        raise RuntimeError(f"edgec quantize failed on {source}")


def ort_quantize(source: Path, calib_arrays: dict[str, np.ndarray], output: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            name, array = next(iter(calib_arrays.items()))
            self.feeds = iter([{name: array[i : i + 1]} for i in range(len(array))])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(source), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def latency_row(name: str, engine: str, run, feeds, options) -> dict:
    ms, other = median_ms(run, feeds, options.rounds, options.warmup)
    return {"model": name, "engine": engine, "ms": round(ms, 3), "other_load": other}


def digits_rows(work: Path, options) -> tuple[list[dict], list[dict]]:
    from edgec.runtime import load
    from tests.digits_cnn import INPUT, digits_split, export, train

    x_train, y_train, x_test, y_test = digits_split()
    float_path, calib = work / "digits.onnx", work / "calib.npz"
    export(train(x_train, y_train), float_path)
    np.savez(calib, **{INPUT: x_train[:300]})
    edgec_qdq, ort_qdq = work / "digits.qdq.onnx", work / "digits.ort.qdq.onnx"
    edgec_quantize(float_path, calib, edgec_qdq)
    ort_quantize(float_path, {INPUT: x_train[:300]}, ort_qdq)
    compile_artifact(float_path, work / "digits.edgec")
    compile_artifact(edgec_qdq, work / "digits.int8.edgec")

    engines = {
        "float, onnxruntime": (float_path, ort_session(float_path, options.threads)),
        "float, edgec": (float_path, load(work / "digits.edgec")),
        "edgec int8, edgec": (edgec_qdq, load(work / "digits.int8.edgec")),
        "edgec int8, onnxruntime": (edgec_qdq, ort_session(edgec_qdq, options.threads)),
        "ort quantize_static, onnxruntime": (ort_qdq, ort_session(ort_qdq, options.threads)),
    }
    accuracy, latency = [], []
    for engine, (path, runner) in engines.items():
        run = (lambda f, s=runner: s.run(None, f)[0]) if hasattr(runner, "get_inputs") else (lambda f, c=runner: c.run(f)["logits"])
        predictions = np.array([run({INPUT: x_test[i : i + 1]}).argmax() for i in range(len(x_test))])
        accuracy.append({"engine": engine, "top1": round(float(np.mean(predictions == y_test)) * 100, 2),
                         "weight_bytes": weight_bytes(path)})
        latency.append(latency_row("digits", engine, run, {INPUT: x_test[:1]}, options))
    return accuracy, latency


def cnn_rows(name: str, work: Path, options) -> list[dict]:
    from edgec.runtime import load

    proto = model_by_name(name)
    if proto.opset_import[0].version < 13:  # per-channel DequantizeLinear needs opset 13 (the zoo files are older)
        proto = onnx.version_converter.convert_version(proto, 13)
    float_path, qdq, calib = work / f"{name}.onnx", work / f"{name}.qdq.onnx", work / f"{name}.calib.npz"
    onnx.save(proto, float_path)
    graph_input = next(i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer})
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    np.savez(calib, **{graph_input.name: rng.standard_normal([16, *shape[1:]]).astype(np.float32)})
    edgec_quantize(float_path, calib, qdq)
    rows = []
    feeds = {graph_input.name: rng.standard_normal(shape).astype(np.float32)}
    for engine, source in (("fp32, edgec", float_path), ("edgec int8, edgec", qdq)):
        artifact = work / f"{source.stem}.edgec"
        seconds = compile_artifact(source, artifact)
        compiled = load(artifact)
        rows.append({**latency_row(name, engine, compiled.run, feeds, options), "compile_s": round(seconds, 1)})
    session = ort_session(qdq, options.threads)
    rows.append(latency_row(name, "edgec int8, onnxruntime", lambda f: session.run(None, f), feeds, options))
    return rows


def markdown(result: dict) -> str:
    lines = ["# Quantization benchmark", "", f"Machine: {result['machine']}", "",
             "## Digits CNN (held-out top-1, weights)", "", "| engine | top-1 % | weight bytes |", "|---|---|---|"]
    lines += [f"| {r['engine']} | {r['top1']} | {r['weight_bytes']} |" for r in result["accuracy"]]
    lines += ["", "## Latency (median ms, batch 1)", "", "| model | engine | ms | other load |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['engine']} | {r['ms']} | {r['other_load']} |" for r in result["latency"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet50", help="CNNs timed besides the digits CNN")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(options.threads)
    with tempfile.TemporaryDirectory(prefix="edgec-quant-") as folder:
        work = Path(folder)
        accuracy, latency = digits_rows(work, options)
        for name in filter(None, options.models.split(",")):
            latency += cnn_rows(name, work, options)
    import onnxruntime
    import tvm

    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"tvm {tvm.__version__}, onnxruntime {onnxruntime.__version__}",
              "settings": vars(options) | {"output": str(options.output)}, "accuracy": accuracy, "latency": latency}
    text = markdown(result)
    print(text)
    if options.output:
        options.output.write_text(json.dumps(result, indent=2))
        options.output.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
