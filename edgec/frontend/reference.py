"""onnxruntime as the reference: the float model edgec's results are compared with,
calibrated on and judged against. One way to open it, so every caller runs on the CPU with
onnxruntime's log kept quiet (its warnings are about the model, which edgec reports itself)."""

from __future__ import annotations


def ort_session(model: str | bytes, optimize: bool = True):
    """An onnxruntime CPU session of ``model``, a path or a serialized ModelProto. With
    ``optimize=False`` onnxruntime keeps the graph as given, so every tensor an extra graph
    output names can be fetched (calibration, per-layer error)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
