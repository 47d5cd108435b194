"""quantize: static post-training quantization into standard QDQ ONNX.

Placement follows the 2020 ONNX workshop's recommendations: quantize the inputs
of linear ops, not op outputs; be conservative; per-tensor activations and
per-channel weights. Ranges come from running the float graph with onnxruntime
over the calibration data (``edgec.quant.calibration``).

Rules:
- Conv, ConvTranspose, Gemm and MatMul get QuantizeLinear -> DequantizeLinear in
  front of their float32 activation inputs (per tensor, asymmetric int8, or uint8
  with ``unsigned``).
- Their constant weights are stored as symmetric int8 (range +-127, zero point 0,
  left out as ONNX's default; +-63 with ``reduce-range``) followed by a DequantizeLinear: per output channel (Conv axis 0, ConvTranspose
  axis 1 when ungrouped, Gemm by ``transB``, MatMul's last axis), or per tensor
  with ``per-tensor-weights``. A float weight left without users is dropped.
- A constant 1-D bias of Conv/ConvTranspose, or of a Gemm with alpha = beta = 1,
  is stored as int32 with scale ``s_x * s_w`` and zero point 0 (left out), as integer
  kernels need it.
- Scales are shared through data-movement ops (MaxPool, Reshape, Transpose,
  Concat, Slice, Flatten): when a quantized tensor is such an op's output, the
  op's data inputs get Q/DQ too, and all of them use one scale and zero point
  (covering the union of their ranges), so the op can run on integers.
- Both inputs of a residual Add (two float32 activations of the same shape) are
  quantized so the Add can fuse.
- Values at or above ``mask-threshold`` in magnitude (attention masks filled with
  -1e9) are left out of every range; an op reading a tensor that holds them stays
  in float, with a note.
- Nodes named in ``exclude`` (``;``-separated node names, or first output names
  for unnamed nodes) are neither quantized nor shared through.
- ``reduce-range`` exists for onnxruntime on x86 without VNNI: its fused int8
  kernels sum pairs of u8 x s8 products in int16 (vpmaddubsw), which saturates with
  8-bit weights, so its results drift from the QDQ graph's meaning; with 7-bit
  weights they are exact.
- Inputs that already come from a DequantizeLinear are left alone, so a second run
  changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from networkx.utils import UnionFind

from edgec.compiler.pass_manager import (
    Diagnostic,
    Pass,
    PassResult,
    PassSpec,
    Pipeline,
    register_pass,
)
from edgec.compiler.pipelines import insert_at_quantize_point
from edgec.errors import CompileError, UsageError
from edgec.frontend.exporter import export_model
from edgec.ir import Attr, Graph, Model, Node, Value
from edgec.quant.calibration import (
    CALIBRATORS,
    Statistics,
    calibrate,
    load_calibration,
    quant_params,
)

logger = logging.getLogger(__name__)

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
DATA_MOVEMENT = {"MaxPool": (0,), "Reshape": (0,), "Transpose": (0,), "Slice": (0,), "Flatten": (0,), "Concat": None}
"""Ops whose output values are some of their input values, by data input index (None: all)."""
WEIGHT_QMAX = 127
REDUCED_QMAX = 63


@dataclass
class QuantizeOptions:
    calib: str = field(default="", metadata={"file": True})
    calibrator: str = "minmax"
    percentile: float = 99.99
    bins: int = 2048
    per_tensor_weights: bool = False
    unsigned: bool = False
    exclude: str = ""
    mask_threshold: float = 1e4
    reduce_range: bool = False

    @property
    def excluded(self) -> list[str]:
        return [name.strip() for name in self.exclude.split(";") if name.strip()]


def node_key(node: Node) -> str:
    return node.name or (node.outputs[0].name if node.outputs else "")


def check_options(model: Model, options: QuantizeOptions):
    """Everything the user can get wrong, as one UsageError line each; returns the calibration data."""
    if not options.calib:
        raise UsageError("quantize needs calibration data (--calib data.npz, or quantize{calib=...})")
    if options.calibrator not in CALIBRATORS:
        raise UsageError(f"unknown calibrator '{options.calibrator}' (known: {', '.join(CALIBRATORS)})")
    if not 50.0 < options.percentile <= 100.0:
        raise UsageError(f"percentile must be in (50, 100], got {options.percentile}")
    if options.bins < 256:
        raise UsageError(f"bins must be at least 256, got {options.bins}")
    names = {node_key(n) for n in model.graph.nodes}
    unknown = [name for name in options.excluded if name not in names]
    if unknown:
        raise UsageError(f"--no-quantize: no node named {', '.join(repr(u) for u in unknown)} in the model")
    if model.opset < 13:
        raise UsageError(f"quantize needs opset 13 or later (per-channel DequantizeLinear); the model has opset {model.opset}")
    return load_calibration(Path(options.calib), model)


def is_float_activation(value: Value | None) -> bool:
    return value is not None and not value.is_constant and value.dtype == "float32" and not from_dequantize(value)


def from_dequantize(value: Value) -> bool:
    return value.producer is not None and value.producer.op_type == "DequantizeLinear"


def is_float_constant(value: Value | None) -> bool:
    return value is not None and value.is_constant and value.dtype == "float32"


def weight_axis(node: Node, index: int, weight: Value) -> int | None:
    """The output-channel axis of a weight, or None when only per-tensor is meaningful."""
    ndim = weight.const.ndim
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if node.attr("group", 1) == 1 else None
    if node.op_type == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    if node.op_type == "MatMul" and index == 1 and ndim >= 2:
        return ndim - 1
    return None


def quantize_weight(data: np.ndarray, axis: int | None, qmax: int = WEIGHT_QMAX) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 in ``[-qmax, qmax]``: (int8 weight, float32 scale per channel along ``axis``, or a scalar)."""
    w = data.astype(np.float64)
    if axis is None:
        amax = np.array(np.abs(w).max())
    else:
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.astype(np.float64).reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


@dataclass
class Site:
    """A node whose inputs get quantized: a linear op or a residual Add."""

    node: Node
    activations: list[int]
    weights: list[int]
    bias: int | None = None


def shared_groups(groups: UnionFind) -> dict[Value, list[Value]]:
    """Each group of values sharing one scale, keyed by its first member in the order the
    values were added: a stable name for its scale, whichever root the union-find keeps."""
    by_root: dict[Value, list[Value]] = {}
    for value in groups.parents:  # insertion-ordered
        by_root.setdefault(groups[value], []).append(value)
    return {values[0]: values for values in by_root.values()}


@register_pass
class Quantize(Pass):
    name = "quantize"
    Options = QuantizeOptions

    def call(self, model: Model) -> PassResult:
        options: QuantizeOptions = self.options
        graph = model.graph
        excluded = set(options.excluded)
        stats = {"quantized-ops": 0, "residual-adds": 0, "quantized-weights": 0, "quantized-biases": 0,
                 "qdq-pairs": 0, "shared-groups": 0, "excluded": 0, "kept-float-mask": 0}
        diagnostics: list[Diagnostic] = []
        sites = []
        for node in graph.nodes:
            if node.domain not in ("", "ai.onnx"):
                continue
            site = self.find_site(node)
            if site is None:
                continue
            if node_key(node) in excluded:
                stats["excluded"] += 1
                diagnostics.append(Diagnostic("note", "kept in float (--no-quantize)", node.describe()))
                continue
            sites.append(site)
        if not sites:
            return PassResult(model, modified=False, stats=stats, diagnostics=diagnostics)

        data = check_options(model, options)
        candidates = self.closure(sites, excluded)
        statistics = Statistics(export_model(model), [v.name for v in candidates], data, options.bins, options.mask_threshold)
        masked = {v for v in candidates if statistics.stats[v.name].sentinels}
        kept_sites = []
        for site in sites:
            held = [site.node.inputs[i] for i in site.activations if site.node.inputs[i] in masked]
            if held:
                stats["kept-float-mask"] += 1
                diagnostics.append(Diagnostic("note", f"kept in float: '{held[0].name}' holds mask-like values "
                                              f"(|x| >= {options.mask_threshold:g})", site.node.describe()))
            else:
                kept_sites.append(site)

        groups, edges = self.share(kept_sites, excluded, masked)
        members = shared_groups(groups)
        head_of = {value: head for head, values in members.items() for value in values}
        if options.calibrator != "minmax":
            statistics.add_histograms([v.name for v in groups.parents])
        params = {}
        for head, values in members.items():
            ranges = [calibrate(statistics.stats[v.name], options.calibrator, 255, options.percentile) for v in values]
            lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
            scale, zero = quant_params(lo, hi, options.unsigned)
            params[head] = (graph.add_initializer(graph.fresh_name(f"{head.name}_scale"), np.array(scale)),
                            graph.add_initializer(graph.fresh_name(f"{head.name}_zero_point"), np.array(zero)))
            stats["shared-groups"] += len(values) > 1
            logger.debug("range of %s: [%g, %g] scale %g zero point %d", [v.name for v in values], lo, hi, scale, zero)

        dequantized: dict[Value, Value] = {}
        for value, consumers in edges.items():
            scale, zero = params[head_of[value]]
            dequantized[value] = self.insert_qdq(graph, value, consumers, scale, zero)
            stats["qdq-pairs"] += 1
        weight_cache: dict[tuple[Value, int | None], tuple[Value, np.ndarray]] = {}
        for site in kept_sites:
            node = site.node
            stats["residual-adds" if node.op_type == "Add" else "quantized-ops"] += 1
            for index in site.weights:
                weight = node.inputs[index]
                axis = None if options.per_tensor_weights else weight_axis(node, index, weight)
                if (weight, axis) not in weight_cache:
                    weight_cache[(weight, axis)] = self.quantize_constant(graph, node, weight, axis)
                    stats["quantized-weights"] += 1
                new, scale = weight_cache[(weight, axis)]
                graph.set_input(node, index, new)
                self.drop_if_unused(graph, weight)
            if site.bias is not None and len(site.weights) == 1:
                x_scale = params[head_of[self.original(node.inputs[0], dequantized)]][0].const
                stats["quantized-biases"] += self.quantize_bias(graph, node, site.bias, x_scale, scale)
        return PassResult(model, modified=True, stats=stats, diagnostics=diagnostics)

    # -- placement -------------------------------------------------------------------------

    @staticmethod
    def find_site(node: Node) -> Site | None:
        """Which inputs of ``node`` get Q/DQ, which are weights, and its bias (None: not a site)."""
        inputs = node.inputs
        if node.op_type in LINEAR_OPS:
            activations, weights, bias = [], [], None
            data_inputs = (0, 1) if node.op_type in ("Gemm", "MatMul") else (0,)
            for index in data_inputs:
                if is_float_activation(inputs[index]):
                    activations.append(index)
            weight_index = 1
            if is_float_constant(inputs[weight_index]):
                weights.append(weight_index)
            if node.op_type == "MatMul" and is_float_constant(inputs[0]):
                weights.append(0)
            has_bias = len(inputs) > 2 and is_float_constant(inputs[2]) and inputs[2].const.ndim == 1
            gemm_plain = node.op_type != "Gemm" or (node.attr("alpha", 1.0) == 1.0 and node.attr("beta", 1.0) == 1.0)
            if has_bias and gemm_plain and activations == [0] and weights == [1]:
                bias = 2
            if not activations and not weights:
                return None
            return Site(node, activations, weights, bias)
        if node.op_type == "Add" and len(inputs) == 2 and all(is_float_activation(v) for v in inputs):
            a, b = inputs
            if a is not b and a.shape is not None and a.shape == b.shape:
                return Site(node, [0, 1], [])
        return None

    @staticmethod
    def data_inputs(node: Node) -> list[Value] | None:
        """The data inputs a quantized output of ``node`` shares its scale with, or None."""
        if node.domain not in ("", "ai.onnx") or node.op_type not in DATA_MOVEMENT:
            return None
        if node.op_type == "MaxPool" and len(node.outputs) > 1:
            return None
        indices = DATA_MOVEMENT[node.op_type]
        values = [node.inputs[i] for i in (indices if indices is not None else range(len(node.inputs)))]
        if not all(is_float_activation(v) for v in values):
            return None
        return values

    def closure(self, sites: list[Site], excluded: set[str]) -> list[Value]:
        """Every value that may need a range: site activations and what they share through."""
        seen: dict[Value, None] = {}
        stack = [site.node.inputs[i] for site in sites for i in site.activations]
        while stack:
            value = stack.pop()
            if value in seen:
                continue
            seen[value] = None
            producer = value.producer
            if producer is not None and node_key(producer) not in excluded:
                stack.extend(self.data_inputs(producer) or [])
        return list(seen)

    def share(self, sites: list[Site], excluded: set[str], masked: set[Value]):
        """The groups sharing one scale, and for each value the consumers that read its Q/DQ."""
        groups = UnionFind()
        edges: dict[Value, list[Node]] = {}

        def connect(value: Value, consumer: Node) -> None:
            groups[value]  # adds it as its own group
            consumers = edges.setdefault(value, [])
            if consumer not in consumers:
                consumers.append(consumer)

        stack = []
        for site in sites:
            for index in site.activations:
                connect(site.node.inputs[index], site.node)
                stack.append(site.node.inputs[index])
        done = set()
        while stack:
            value = stack.pop()
            producer = value.producer
            if value in done or producer is None or node_key(producer) in excluded:
                continue
            done.add(value)
            inputs = self.data_inputs(producer)
            if inputs is None or any(v in masked for v in inputs):
                continue
            for source in inputs:
                connect(source, producer)
                groups.union(source, value)
                stack.append(source)
        return groups, edges

    # -- rewriting -------------------------------------------------------------------------

    @staticmethod
    def insert_qdq(graph: Graph, value: Value, consumers: list[Node], scale: Value, zero: Value) -> Value:
        """QuantizeLinear -> DequantizeLinear on ``value``, read by ``consumers`` only."""
        first = min(consumers, key=graph.nodes.index)
        quantized = Value(graph.fresh_name(f"{value.name}_quantized"), zero.dtype, value.shape)
        restored = Value(graph.fresh_name(f"{value.name}_dequantized"), value.dtype, value.shape)
        graph.make_node("QuantizeLinear", [value, scale, zero], [quantized], name=graph.fresh_name(f"{value.name}/QuantizeLinear"),
                        before=first)
        graph.make_node("DequantizeLinear", [quantized, scale, zero], [restored],
                        name=graph.fresh_name(f"{value.name}/DequantizeLinear"), before=first)
        for consumer in consumers:
            for index, used in enumerate(consumer.inputs):
                if used is value:
                    graph.set_input(consumer, index, restored)
        return restored

    @staticmethod
    def original(value: Value, dequantized: dict[Value, Value]) -> Value:
        return next(source for source, restored in dequantized.items() if restored is value)

    @staticmethod
    def dequantize_constant(graph: Graph, node: Node, name: str, q: np.ndarray, scale: np.ndarray,
                            axis: int | None, shape) -> Value:
        """A DequantizeLinear of the stored integers. Their zero point is 0, ONNX's default, so
        it is left out: on a small model one per channel is a visible share of the bytes."""
        stored = graph.add_initializer(graph.fresh_name(f"{name}_quantized"), q)
        scale_value = graph.add_initializer(graph.fresh_name(f"{name}_scale"), scale)
        restored = Value(graph.fresh_name(f"{name}_dequantized"), "float32", shape)
        attrs = {"axis": Attr(onnx.AttributeProto.INT, axis)} if scale.ndim == 1 else {}
        graph.make_node("DequantizeLinear", [stored, scale_value], [restored], attrs,
                        name=graph.fresh_name(f"{name}/DequantizeLinear"), before=node)
        return restored

    def quantize_constant(self, graph: Graph, node: Node, weight: Value, axis: int | None) -> tuple[Value, np.ndarray]:
        q, scale = quantize_weight(weight.const, axis, REDUCED_QMAX if self.options.reduce_range else WEIGHT_QMAX)
        first = min(weight.uses, key=graph.nodes.index)
        return self.dequantize_constant(graph, first, weight.name, q, scale, axis, weight.shape), scale

    def quantize_bias(self, graph: Graph, node: Node, index: int, x_scale: np.ndarray, w_scale: np.ndarray) -> int:
        """int32 bias with scale ``s_x * s_w``; returns 1 if it was quantized."""
        bias = node.inputs[index]
        scale = (np.float32(x_scale) * w_scale).astype(np.float32)
        if scale.ndim == 1 and scale.shape[0] != bias.const.shape[0]:
            return 0
        info = np.iinfo(np.int32)
        q = np.clip(np.round(bias.const.astype(np.float64) / scale.astype(np.float64)), info.min, info.max).astype(np.int32)
        restored = self.dequantize_constant(graph, node, bias.name, q, scale, 0, bias.shape)
        graph.set_input(node, index, restored)
        self.drop_if_unused(graph, bias)
        return 1

    @staticmethod
    def drop_if_unused(graph: Graph, value: Value) -> None:
        if not value.uses and not graph.is_graph_output(value) and graph.initializers.get(value.name) is value:
            del graph.initializers[value.name]

    def check_inputs(self, model: Model) -> None:
        check_options(model, self.options)

    def requires(self, model: Model) -> None:
        if self.options.calibrator not in CALIBRATORS:
            raise CompileError(f"unknown calibrator '{self.options.calibrator}' (known: {', '.join(CALIBRATORS)})")


def with_quantize(pipeline: str, options: QuantizeOptions) -> str:
    """``pipeline`` with a quantize step at its quantize point (before its memory passes)."""
    parsed = Pipeline.parse(pipeline)
    if any(spec.name == Quantize.name for spec in parsed):
        raise UsageError("--calib with a pipeline that already quantizes: give the options in one place")
    return str(insert_at_quantize_point(parsed, PassSpec(Quantize.name, options)))
