"""The per-layer quantization report: placement, scales and zero points, SQNR against float.

For each Conv, ConvTranspose, Gemm and MatMul of the quantized model:
- placement: ``int8`` when its first input comes from a DequantizeLinear, else ``float``
  with the reason (``--no-quantize``, the accuracy budget, or what the quantize pass noted);
- the activation's scale and zero point, and the weight's scales (one, or the range of the
  per-channel ones);
- SQNR of the layer's output against the float model's, over the given data, in dB. It is
  cumulative: the error of every quantized layer before it is included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..ir import Model, Node
from ..tables import table
from .accuracy_budget import ratio_db, session

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class LayerRow:
    node: str
    op: str
    placement: str
    why: str
    activation_scale: float | None
    activation_zero_point: int | None
    weight_scales: tuple[float, float, int] | None
    """(smallest, largest, how many)."""
    sqnr_db: float


def dequantized_by(node: Node, index: int):
    """The DequantizeLinear feeding input ``index``, or None."""
    value = node.inputs[index] if index < len(node.inputs) else None
    producer = value.producer if value is not None else None
    return producer if producer is not None and producer.op_type == "DequantizeLinear" else None


def layer_rows(float_model: Model, quantized: Model, data, reasons: dict[str, str]) -> list[LayerRow]:
    """``reasons``: why a layer stayed float, by node name (first output name for unnamed ones).
    The SQNR sums run sample by sample, so a big model's layer outputs are never all held."""
    layers = [n for n in quantized.graph.nodes if n.op_type in LINEAR_OPS and n.domain in ("", "ai.onnx")]
    names = tuple(n.outputs[0].name for n in layers)
    graph_outputs = {v.name for v in quantized.graph.outputs}
    extra = tuple(name for name in names if name not in graph_outputs)
    reference, actual = session(float_model, extra), session(quantized, extra)
    signal, noise = np.zeros(len(names)), np.zeros(len(names))
    for feed in data.feeds():
        expected = dict(zip([o.name for o in reference.get_outputs()], reference.run(None, feed)))
        got = dict(zip([o.name for o in actual.get_outputs()], actual.run(None, feed)))
        for i, name in enumerate(names):
            f = expected[name].astype(np.float64)
            signal[i] += float(np.sum(np.square(f)))
            noise[i] += float(np.sum(np.square(f - got[name])))
    rows = []
    for i, (node, name) in enumerate(zip(layers, names)):
        key = node.name or name
        activation, weight = dequantized_by(node, 0), dequantized_by(node, 1)
        scale = zero = None
        if activation is not None and activation.inputs[1].is_constant:
            scale = float(activation.inputs[1].const.reshape(-1)[0])
            zero = int(activation.inputs[2].const.reshape(-1)[0]) if len(activation.inputs) > 2 else 0
        weight_scales = None
        if weight is not None and weight.inputs[1].is_constant:
            scales = weight.inputs[1].const.reshape(-1)
            weight_scales = (float(scales.min()), float(scales.max()), int(scales.size))
        placement = "int8" if activation is not None else "float"
        why = "" if activation is not None else reasons.get(key, "no float32 activation input to quantize")
        rows.append(LayerRow(key, node.op_type, placement, why, scale, zero, weight_scales, ratio_db(signal[i], noise[i])))
    return rows


def layer_record(float_model: Model, quantized: Model, data_path, flag: str, excluded: list[str],
                 fitted=None) -> tuple[list[LayerRow], dict]:
    """The rows over ``data_path`` (read as ``flag``), and the record of them the QDQ file's
    metadata and the artifact keep. A float layer says why: ``--no-quantize`` (``excluded``)
    or the accuracy budget (``fitted``, its ``BudgetResult``)."""
    from .calibration import load_calibration

    reasons = {name: "--no-quantize" for name in excluded}
    if fitted is not None:
        reasons.update({name: fitted.why(name) for name in fitted.reverted})
    rows = layer_rows(float_model, quantized, load_calibration(data_path, float_model, flag), reasons)
    return rows, {"layers": rows_to_dicts(rows), "sqnr_data": Path(data_path).name}


def format_rows(rows: list[LayerRow]) -> str:
    cells = []
    for r in rows:
        x_scale = f"{r.activation_scale:.4g}" if r.activation_scale is not None else "-"
        x_zero = str(r.activation_zero_point) if r.activation_zero_point is not None else "-"
        if r.weight_scales is None:
            w = "-"
        elif r.weight_scales[2] == 1:
            w = f"{r.weight_scales[0]:.4g}"
        else:
            w = f"{r.weight_scales[0]:.3g}..{r.weight_scales[1]:.3g} x{r.weight_scales[2]}"
        sqnr = "inf" if np.isinf(r.sqnr_db) else f"{r.sqnr_db:.1f}"
        cells.append((r.node, r.op, r.placement, x_scale, x_zero, w, sqnr, r.why))
    return "\n".join(table(("layer", "op", "place", "x scale", "x zp", "w scales", "SQNR dB", "why"), cells,
                           right=("x scale", "x zp", "w scales", "SQNR dB")))


def rows_to_dicts(rows: list[LayerRow]) -> list[dict]:
    return [{**asdict(r), "sqnr_db": None if np.isinf(r.sqnr_db) else round(r.sqnr_db, 2)} for r in rows]


def rows_from_dicts(entries: list[dict]) -> list[LayerRow]:
    return [LayerRow(**{**e, "sqnr_db": float("inf") if e["sqnr_db"] is None else e["sqnr_db"],
                        "weight_scales": tuple(e["weight_scales"]) if e["weight_scales"] else None}) for e in entries]


def format_record(record: dict, integer_kernels: dict | None) -> str:
    """``edgec report --quantization``: the budget's outcome, the layer table, and what the
    lowering made integer (``integer_kernels`` from the target manifest)."""
    lines = []
    budget = record.get("budget")
    if budget:
        verdict = "met" if budget["met"] else "NOT met"
        lines.append(f"accuracy budget {verdict}: {budget['metric']} float {budget['float']:.4g}, all quantized "
                     f"{budget['all_quantized']:.4g}, kept {budget['quantized']:.4g} (allowed drop {budget['max_drop']:g})")
    if "layers" in record:
        lines += [format_rows(rows_from_dicts(record["layers"])), f"SQNR: cumulative, against float, over {record['sqnr_data']}"]
    if integer_kernels:
        lowered = integer_kernels["lowered"]
        counts = ", ".join(f"{kind} x{lowered.count(kind)}" for kind in sorted(set(lowered)))
        lines.append(f"integer kernels: {len(lowered)} ({counts or 'none'})")
        lines += [f"kept float by the lowering: {why}" for why in integer_kernels["kept_float"]]
        lines += [f"kept int32 by the lowering: {why}" for why in integer_kernels.get("kept_int32", [])]
    return "\n".join(lines)
