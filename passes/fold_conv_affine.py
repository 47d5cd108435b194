"""fold-conv-affine: fold a per-channel Mul or Add that follows a Conv into its weight and bias.

Caffe2 exports (the model zoo's Inception v2) write batch norm as ``Mul`` by a scale and
``Add`` of a shift after each Conv. Left alone, each pair is an elementwise kernel over
the whole activation; worse, TVM's layout conversion stops at them, so every such Conv is
transposed to NHWC and back. ``conv(x, W) + b`` times ``s`` is ``conv(x, W * s) + b * s``,
and plus ``t`` is ``conv(x, W) + (b + t)``.

Rules:
- The Mul/Add is default-domain, one of its inputs is a default-domain Conv's output that
  nothing else reads and that is not a graph output, the other a constant.
- The constant is per output channel or a scalar: every dimension but the channel one
  (counted from the right, as broadcasting does) is 1, and it has no more dimensions than
  the Conv's output, so the result keeps the Conv's shape.
- The Conv's weight and bias (if any) are constants; a weight used only here is updated in
  place, a shared one copied (as in fold-batchnorm).
- Float arithmetic in float64, rounded once to the weight's dtype. A chain (Mul then Add)
  folds completely: the pass repeats until nothing changes.
"""

from __future__ import annotations

import numpy as np

from edgec.compiler.pass_manager import Diagnostic, Pass, PassResult, register_pass
from edgec.ir import Graph, Model, Node

from .fold_batchnorm import set_constant


def per_channel(constant: np.ndarray, output_rank: int, channels: int) -> np.ndarray | None:
    """The constant as a length-``channels`` vector, or None when it is not per channel."""
    if constant.ndim > output_rank or constant.size not in (1, channels):
        return None
    shape = (1,) * (output_rank - constant.ndim) + constant.shape
    if any(size != 1 for axis, size in enumerate(shape) if axis != 1):
        return None
    return np.broadcast_to(constant.reshape(-1).astype(np.float64), (channels,))


def fold_site(graph: Graph, node: Node) -> tuple[Node, np.ndarray] | tuple[None, str | None]:
    """(the Conv, the per-channel vector), or None and why the node does not fold (None
    again when no input is a Conv's output: nothing to explain)."""
    if len(node.inputs) != 2:
        return None, "it does not have two inputs"
    for position in (0, 1):
        source, other = node.inputs[position], node.inputs[1 - position]
        producer = source.producer if source is not None else None
        if producer is None or producer.op_type != "Conv" or producer.domain not in ("", "ai.onnx"):
            continue
        if other is None or not other.is_constant or other.const.dtype.kind != "f":
            return None, "its other input is not a float constant"
        if len(source.uses) != 1 or graph.is_graph_output(source):
            return None, "the Conv output has other users"
        weight = producer.inputs[1]
        bias = producer.inputs[2] if len(producer.inputs) > 2 else None
        if not weight.is_constant or (bias is not None and not bias.is_constant):
            return None, "the Conv weight or bias is not a constant"
        if source.shape is None or len(source.shape) < 2:
            return None, "the Conv output's shape is unknown"
        vector = per_channel(other.const, len(source.shape), int(weight.const.shape[0]))
        if vector is None:
            return None, f"its constant of shape {list(other.const.shape)} is not per output channel"
        return producer, vector
    return None, None


@register_pass
class FoldConvAffine(Pass):
    name = "fold-conv-affine"

    def call(self, model: Model) -> PassResult:
        graph = model.graph
        stats = {"muls-folded": 0, "adds-folded": 0}
        changed = True
        while changed:  # the last round folds nothing, so its notes are the current ones
            changed, diagnostics = False, []
            for node in list(graph.nodes):
                if node.op_type not in ("Mul", "Add") or node.domain not in ("", "ai.onnx"):
                    continue
                conv, vector = fold_site(graph, node)
                if conv is None:
                    if vector is not None:
                        diagnostics.append(Diagnostic("note", f"not folded: {vector}", node.describe()))
                    continue
                self.fold(graph, node, conv, vector)
                stats["muls-folded" if node.op_type == "Mul" else "adds-folded"] += 1
                changed = True
        return PassResult(model, modified=bool(stats["muls-folded"] + stats["adds-folded"]), stats=stats,
                          diagnostics=diagnostics)

    @staticmethod
    def fold(graph: Graph, node: Node, conv: Node, vector: np.ndarray) -> None:
        weight = conv.inputs[1]
        bias = conv.inputs[2] if len(conv.inputs) > 2 else None
        dtype = weight.const.dtype
        old_bias = bias.const.astype(np.float64) if bias is not None else np.zeros(vector.shape)
        if node.op_type == "Mul":
            w = weight.const.astype(np.float64) * vector.reshape((-1,) + (1,) * (weight.const.ndim - 1))
            set_constant(graph, conv, 1, w.astype(dtype), weight.name + "_scaled")
            new_bias = old_bias * vector
        else:
            new_bias = old_bias + vector
        set_constant(graph, conv, 2, np.ascontiguousarray(new_bias).astype(dtype), "conv_bias")
        graph.forward(node.outputs[0], conv.outputs[0])
        conv_out = conv.outputs[0]
        conv_out.dtype, conv_out.shape = node.outputs[0].dtype, node.outputs[0].shape
        graph.remove_node(node)
