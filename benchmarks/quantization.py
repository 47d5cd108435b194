"""Quantization benchmark: float vs edgec int8 vs onnxruntime int8, in one run.

For the digits CNN (trained here on scikit-learn's digits, 30% held out): top-1 on the
held-out set, weight bytes and latency of
- the float model (onnxruntime, and edgec's artifact),
- edgec's QDQ model (``edgec quantize``, 300 training images, minmax): edgec's compiled
  artifact (integer kernels), and onnxruntime running the same QDQ file; and with 7-bit
  weights (``--reduce-range``, what ``edgec compile --calib`` picks on AVX2 targets),
- onnxruntime's own ``quantize_static`` (QDQ, per-channel int8, same calibration data).
For a MobileNetV2-style and a ResNet-style CNN (random weights scaled to unit-variance
activations, 16 random calibration inputs, 7-bit weights unless ``--full-range``) only
latency: edgec fp32 vs edgec int8 vs onnxruntime on edgec's QDQ file.
For the small transformer encoder made here (``benchmarks/models.py``, -10000 padding
masks): cosine similarity against the float model's outputs on 16 inputs held out from
the 32 calibration ones, for edgec's artifact from each calibrator's QDQ file and for
onnxruntime's ``quantize_static``; and latency, like the CNNs.

Latency is the median of in-process runs after warmup, with both engines given the
same thread count; for the CNNs and the encoder, the lowest of three such medians, the
engines timed in turn. This machine has two cores shared with other work, so the
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
    from edgec.compiler.driver import CompileRequest, compile_model

    start = time.perf_counter()
    compile_model(CompileRequest(model=source, target="x86-64", output=output))
    return time.perf_counter() - start


def edgec_quantize(source: Path, calib: Path, output: Path, calibrator: str = "minmax", reduce_range: bool = False) -> None:
    from edgec.cli import main

    flags = ["--reduce-range"] if reduce_range else []
    if main(["quantize", str(source), "--calib", str(calib), "--calibrator", calibrator, *flags, "-o", str(output)]) != 0:
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
            count = len(next(iter(calib_arrays.values())))
            self.feeds = iter([{name: array[i : i + 1] for name, array in calib_arrays.items()} for i in range(count)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(source), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def latency_row(name: str, engine: str, run, feeds, options) -> dict:
    ms, other = median_ms(run, feeds, options.rounds, options.warmup)
    return {"model": name, "engine": engine, "ms": round(ms, 3), "other_load": other}


def interleaved_rows(name: str, engines: dict, feeds, options) -> list[dict]:
    """One row per engine: the lowest of ``options.passes`` medians, the engines timed in turn
    each pass, so that a burst of load on this shared machine hits all of them alike."""
    best: dict[str, dict] = {}
    for _ in range(options.passes):
        for engine, run in engines.items():
            row = latency_row(name, engine, run, feeds, options)
            if engine not in best or row["ms"] < best[engine]["ms"]:
                best[engine] = row
    return list(best.values())


def digits_rows(work: Path, options) -> tuple[list[dict], list[dict]]:
    from edgec.runtime import load
    from tests.digits_cnn import INPUT, digits_split, export, train

    x_train, y_train, x_test, y_test = digits_split()
    float_path, calib = work / "digits.onnx", work / "calib.npz"
    export(train(x_train, y_train), float_path)
    np.savez(calib, **{INPUT: x_train[:300]})
    edgec_qdq, edgec_qdq7, ort_qdq = work / "digits.qdq.onnx", work / "digits.qdq7.onnx", work / "digits.ort.qdq.onnx"
    edgec_quantize(float_path, calib, edgec_qdq)
    edgec_quantize(float_path, calib, edgec_qdq7, reduce_range=True)
    ort_quantize(float_path, {INPUT: x_train[:300]}, ort_qdq)
    compile_artifact(float_path, work / "digits.edgec")
    compile_artifact(edgec_qdq, work / "digits.int8.edgec")
    compile_artifact(edgec_qdq7, work / "digits.int8-7bit.edgec")

    engines = {
        "float, onnxruntime": (float_path, ort_session(float_path, options.threads)),
        "float, edgec": (float_path, load(work / "digits.edgec")),
        "edgec int8, edgec": (edgec_qdq, load(work / "digits.int8.edgec")),
        "edgec int8, onnxruntime": (edgec_qdq, ort_session(edgec_qdq, options.threads)),
        "edgec int8 7-bit weights, edgec": (edgec_qdq7, load(work / "digits.int8-7bit.edgec")),
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


def unit_variance(proto: onnx.ModelProto, feeds: dict) -> onnx.ModelProto:
    """``proto`` with each Conv's, Gemm's and BatchNormalization's weight (scale) and bias scaled, in graph order, so that its
    output has unit standard deviation on ``feeds``. Random weights leave the zoo's ResNet50
    with activations past 1e4 at its last stages (the residual sums grow stage after stage),
    where quantization rightly keeps ops in float; trained networks stay in range like this."""
    import onnxruntime as ort

    weights = {t.name: t for t in proto.graph.initializer}
    for node in [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "BatchNormalization")]:
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        del probe.graph.output[:]
        probe.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        std = float(np.std(session.run(None, feeds)[0]))
        for name in node.input[1:3]:
            if name in weights and std > 0:
                weights[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights[name]) / np.float32(std), name))
    return proto


def cnn_rows(name: str, work: Path, options) -> list[dict]:
    from edgec.runtime import load

    proto = model_by_name(name)
    if proto.opset_import[0].version < 13:  # per-channel DequantizeLinear needs opset 13 (the zoo files are older)
        proto = onnx.version_converter.convert_version(proto, 13)
    float_path, qdq, calib = work / f"{name}.onnx", work / f"{name}.qdq.onnx", work / f"{name}.calib.npz"
    graph_input = next(i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer})
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    samples = rng.standard_normal([16, *shape[1:]]).astype(np.float32)
    onnx.save(unit_variance(proto, {graph_input.name: samples[:1]}), float_path)
    np.savez(calib, **{graph_input.name: samples})
    edgec_quantize(float_path, calib, qdq, reduce_range=options.reduce_range)
    feeds = {graph_input.name: rng.standard_normal(shape).astype(np.float32)}
    engines, compile_seconds = {}, {}
    for engine, source in (("fp32, edgec", float_path), ("edgec int8, edgec", qdq)):
        artifact = work / f"{source.stem}.edgec"
        compile_seconds[engine] = round(compile_artifact(source, artifact), 1)
        engines[engine] = load(artifact).run
    session = ort_session(qdq, options.threads)
    engines["edgec int8, onnxruntime"] = lambda f: session.run(None, f)
    return [{**row, "compile_s": compile_seconds.get(row["engine"])} for row in interleaved_rows(name, engines, feeds, options)]


TRANSFORMER = {"tokens": 64, "width": 128, "heads": 4, "layers": 2, "ffn": 512}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def transformer_rows(work: Path, options) -> tuple[list[dict], list[dict]]:
    """(cosine rows, latency rows) of the encoder: float vs each calibrator's int8 artifact
    vs onnxruntime's quantize_static."""
    from benchmarks.models import transformer_encoder
    from edgec.runtime import load

    tokens, width = TRANSFORMER["tokens"], TRANSFORMER["width"]
    float_path, calib = work / "encoder.onnx", work / "encoder.calib.npz"
    onnx.save(transformer_encoder(**TRANSFORMER), float_path)
    rng = np.random.default_rng(0)
    lengths = rng.integers(tokens // 2, tokens + 1, 48)
    masks = np.where(np.arange(tokens)[None, :] < lengths[:, None], 0.0, -10000.0).astype(np.float32)[:, None, :]
    embeddings = rng.standard_normal((48, 1, tokens, width)).astype(np.float32)
    np.savez(calib, embeddings=embeddings[:32], mask=masks[:32])
    held_out = [{"embeddings": embeddings[i], "mask": masks[i]} for i in range(32, 48)]
    reference_session = ort_session(float_path, options.threads)
    reference = [reference_session.run(None, feeds)[0] for feeds in held_out]

    engines = {}
    for calibrator in ("minmax", "percentile", "entropy"):
        qdq = work / f"encoder.{calibrator}.qdq.onnx"
        edgec_quantize(float_path, calib, qdq, calibrator)
        compile_artifact(qdq, work / f"encoder.{calibrator}.edgec")
        compiled = load(work / f"encoder.{calibrator}.edgec")
        engines[f"edgec int8 ({calibrator}), edgec"] = lambda f, c=compiled: c.run(f)["hidden"]
    ort_qdq = work / "encoder.ort.qdq.onnx"
    ort_quantize(float_path, {"embeddings": embeddings[:32, 0], "mask": masks[:32, 0]}, ort_qdq)
    ort_int8 = ort_session(ort_qdq, options.threads)
    engines["ort quantize_static, onnxruntime"] = lambda f: ort_int8.run(None, f)[0]
    accuracy = []
    for engine, run in engines.items():
        similarities = [cosine(run(feeds), expected) for feeds, expected in zip(held_out, reference)]
        accuracy.append({"engine": engine, "cosine_min": round(min(similarities), 4),
                         "cosine_mean": round(float(np.mean(similarities)), 4)})
    compile_artifact(float_path, work / "encoder.edgec")
    fp32 = load(work / "encoder.edgec")
    int8 = load(work / "encoder.minmax.edgec")
    qdq_session = ort_session(work / "encoder.minmax.qdq.onnx", options.threads)
    latency = interleaved_rows("transformer", {"fp32, edgec": fp32.run, "edgec int8, edgec": int8.run,
                                               "edgec int8, onnxruntime": lambda f: qdq_session.run(None, f)},
                               held_out[0], options)
    return accuracy, latency


def markdown(result: dict) -> str:
    load = result.get("load_average")
    loads = f" Load average (1, 5, 15 min) before {load['before']}, after {load['after']}." if load else ""
    lines = ["# Quantization benchmark", "", f"Machine: {result['machine']}.{loads}", "",
             "## Digits CNN (held-out top-1, weights)", "", "| engine | top-1 % | weight bytes |", "|---|---|---|"]
    lines += [f"| {r['engine']} | {r['top1']} | {r['weight_bytes']} |" for r in result["accuracy"]]
    if result.get("transformer"):
        sizes = ", ".join(f"{k} {v}" for k, v in TRANSFORMER.items())
        lines += ["", f"## Transformer encoder ({sizes}; cosine against float, 16 held-out inputs)", "",
                  "| engine | cosine min | cosine mean |", "|---|---|---|"]
        lines += [f"| {r['engine']} | {r['cosine_min']} | {r['cosine_mean']} |" for r in result["transformer"]]
    lines += ["", "## Latency (median ms, batch 1)", "", "| model | engine | ms | other load |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['engine']} | {r['ms']} | {r['other_load']} |" for r in result["latency"]]
    lines += ["", "## Speed-ups of edgec's int8 artifact", "", "| model | over edgec fp32 | over onnxruntime int8 (same QDQ file) |",
              "|---|---|---|"]
    by_model: dict[str, dict[str, float]] = {}
    for r in result["latency"]:
        by_model.setdefault(r["model"], {})[r["engine"]] = r["ms"]
    for model, times in by_model.items():
        int8 = times.get("edgec int8, edgec")
        fp32 = times.get("fp32, edgec", times.get("float, edgec"))
        ort_int8 = times.get("edgec int8, onnxruntime")
        if int8 and fp32 and ort_int8:
            lines.append(f"| {model} | {fp32 / int8:.2f}x | {ort_int8 / int8:.2f}x |")
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (with family and model: "AMD EPYC" alone says little),
    LLVM's name for it and its int8 dot products: int8 speed-ups hold for one ISA."""
    from edgec.targets.x86 import host_cpu, host_features

    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
        if not line.strip():
            break
    features = host_features()
    dot = ("AVX-512 VNNI" if "avx512_vnni" in features else "AVX-VNNI" if "avx_vnni" in features
           else "AVX2, no VNNI" if "avx2" in features else "no int8 dot product")
    return (f"{fields.get('model name', platform.processor() or platform.machine())} (family {fields.get('cpu family', '?')} "
            f"model {fields.get('model', '?')}), LLVM {host_cpu()}, {dot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet50", help="CNNs timed besides the digits CNN")
    parser.add_argument("--no-transformer", dest="transformer", action="store_false", help="Leave out the encoder.")
    parser.add_argument("--no-digits", dest="digits", action="store_false", help="Leave out the digits CNN.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-range", dest="reduce_range", action="store_false",
                        help="8-bit weights for the CNNs' int8 models (default 7-bit, --reduce-range: what the "
                             "uint8 x int8 dot product on AVX2 without VNNI needs, in edgec and in onnxruntime)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3, help="Interleaved timing passes per model (lowest median kept).")
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(options.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgec-quant-") as folder:
        work = Path(folder)
        accuracy, latency = digits_rows(work, options) if options.digits else ([], [])
        transformer = []
        if options.transformer:
            transformer, encoder_latency = transformer_rows(work, options)
            latency += encoder_latency
        for name in filter(None, options.models.split(",")):
            latency += cnn_rows(name, work, options)
    import onnxruntime
    import tvm

    result = {"machine": f"{cpu_model()}, {os.cpu_count()} cores, "
                         f"tvm {tvm.__version__}, onnxruntime {onnxruntime.__version__}",
              "settings": vars(options) | {"output": str(options.output)}, "accuracy": accuracy,
              "transformer": transformer, "latency": latency,
              "load_average": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]}}
    text = markdown(result)
    print(text)
    if options.output:
        options.output.write_text(json.dumps(result, indent=2))
        options.output.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
