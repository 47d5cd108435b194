"""onnxruntime-quantized models through edgec: latency and agreement against onnxruntime.

- A MobileNetV2-style CNN (``models.mobilenet_v2``, weights scaled to unit-variance
  activations as in ``quantization.py``) quantized by onnxruntime's ``quantize_static``
  in QOperator format (QLinearConv, com.microsoft QLinearAdd/QLinearGlobalAveragePool/
  QGemm), per-channel 7-bit weights (``reduce_range``, what AVX2 without VNNI needs in both
  engines), uint8 activations, 16 random calibration inputs.
- The transformer encoder of ``quantization.py`` quantized by ``quantize_dynamic``
  (DynamicQuantizeLinear and MatMulInteger).

Each is compiled by edgec for ``x86-64`` (integer kernels, listed) and timed against
onnxruntime on the same file with its default optimizations (what its users run), the
engines timed in turn, lowest of ``--passes`` medians. Agreement: edgec's largest
difference from onnxruntime with graph optimizations off (the file's meaning op by op), in
LSBs of the CNN's output scale; cosine and relative difference for the encoder.

    python benchmarks/qoperator.py --output benchmarks/results/DATE-qoperator.json   # also writes .md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.models import model_by_name, transformer_encoder
from benchmarks.quantization import TRANSFORMER, compile_artifact, cosine, interleaved_rows, ort_session, unit_variance


def reference_session(path: Path):
    """onnxruntime with graph optimizations off: the model's meaning, op by op."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kernels_of(artifact: Path) -> dict:
    from edgec.deploy.artifact import open_artifact

    return open_artifact(artifact).manifest["target"].get("integer_kernels", {})


def qoperator_cnn(work: Path, options) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from edgec.runtime import load

    proto = model_by_name("mobilenet_v2")
    rng = np.random.default_rng(0)
    samples = rng.standard_normal([16, 3, 224, 224]).astype(np.float32)
    onnx.save(unit_variance(proto, {"input": samples[:1]}), work / "cnn.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"input": samples[i:i + 1]} for i in range(len(samples))])

        def get_next(self):
            return next(self.feeds, None)

    quantized = work / "cnn.qop.onnx"
    quantize_static(str(work / "cnn.onnx"), str(quantized), Reader(), quant_format=QuantFormat.QOperator,
                    per_channel=True, reduce_range=True)
    compile_s = compile_artifact(quantized, work / "cnn.edgec")
    compiled, session, reference = load(work / "cnn.edgec"), ort_session(quantized, options.threads), reference_session(quantized)
    model = onnx.load(quantized)
    output = model.graph.output[0].name
    dequantize = next(n for n in model.graph.node if n.output[0] == output)
    lsb = float(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == dequantize.input[1])))
    feeds = {"input": rng.standard_normal([1, 3, 224, 224]).astype(np.float32)}
    difference = np.abs(compiled.run(feeds)[output] - reference.run(None, feeds)[0]).max()
    rows = interleaved_rows("mobilenet_v2 QOperator", {"edgec": compiled.run, "onnxruntime": lambda f: session.run(None, f)},
                            feeds, options)
    ops = sorted({f"{n.domain + '::' if n.domain else ''}{n.op_type}" for n in model.graph.node} - {"Constant"})
    return {"model": "mobilenet_v2 QOperator", "ops": ops, "compile_s": round(compile_s, 1),
            "max_diff_lsb": round(float(difference) / lsb, 3), "kernels": kernels_of(work / "cnn.edgec"), "latency": rows}


def dynamic_encoder(work: Path, options) -> dict:
    from onnxruntime.quantization import quantize_dynamic

    from edgec.runtime import load

    onnx.save(transformer_encoder(**TRANSFORMER), work / "encoder.onnx")
    quantized = work / "encoder.dynamic.onnx"
    quantize_dynamic(str(work / "encoder.onnx"), str(quantized))
    compile_s = compile_artifact(quantized, work / "encoder.edgec")
    compiled, session = load(work / "encoder.edgec"), ort_session(quantized, options.threads)
    rng = np.random.default_rng(1)
    tokens, width = TRANSFORMER["tokens"], TRANSFORMER["width"]
    mask = np.where(np.arange(tokens) < tokens - 8, 0.0, -10000.0).astype(np.float32)[None, :]
    feeds = {"embeddings": rng.standard_normal((1, tokens, width)).astype(np.float32), "mask": mask}
    actual, expected = compiled.run(feeds)["hidden"], session.run(None, feeds)[0]
    rows = interleaved_rows("encoder dynamic", {"edgec": compiled.run, "onnxruntime": lambda f: session.run(None, f)},
                            feeds, options)
    return {"model": "encoder dynamic", "compile_s": round(compile_s, 1), "cosine": round(cosine(actual, expected), 6),
            "max_diff_rel": round(float(np.abs(actual - expected).max() / np.abs(expected).max()), 5),
            "kernels": kernels_of(work / "encoder.edgec"), "latency": rows}


def cpu_model() -> str:
    found = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in found.splitlines() if line.startswith("Model name")), "unknown")


def markdown(result: dict) -> str:
    lines = ["# onnxruntime-quantized models", "", f"Machine: {result['machine']}", "",
             "| model | engine | ms | other load |", "|---|---|---|---|"]
    for model in result["models"]:
        lines += [f"| {r['model']} | {r['engine']} | {r['ms']} | {r['other_load']} |" for r in model["latency"]]
    lines += ["", "| model | compile s | integer kernels | agreement | edgec speed-up over onnxruntime |", "|---|---|---|---|---|"]
    for model in result["models"]:
        times = {r["engine"]: r["ms"] for r in model["latency"]}
        lowered = model["kernels"].get("lowered", [])
        kinds = ", ".join(f"{k} x{lowered.count(k)}" for k in sorted(set(lowered)))
        agreement = (f"max {model['max_diff_lsb']} LSB" if "max_diff_lsb" in model
                     else f"cosine {model['cosine']}, max diff {model['max_diff_rel']:.2%} of the largest output")
        lines.append(f"| {model['model']} | {model['compile_s']} | {kinds} | {agreement} | {times['onnxruntime'] / times['edgec']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3, help="Interleaved timing passes per model (lowest median kept).")
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(options.threads)
    with tempfile.TemporaryDirectory(prefix="edgec-qoperator-") as folder:
        models = [qoperator_cnn(Path(folder), options), dynamic_encoder(Path(folder), options)]
    import onnxruntime
    import tvm

    result = {"machine": f"{cpu_model()}, {os.cpu_count()} cores, tvm {tvm.__version__}, onnxruntime {onnxruntime.__version__}",
              "settings": vars(options) | {"output": str(options.output)}, "models": models}
    text = markdown(result)
    print(text)
    if options.output:
        options.output.write_text(json.dumps(result, indent=2))
        options.output.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
