"""fold-batchnorm: fold an inference BatchNormalization into the Conv or Gemm before it.

With ``s = scale / sqrt(var + epsilon)`` per channel, ``BN(conv(x, W) + b)`` equals
``conv(x, W * s) + (b - mean) * s + bias``; the same holds for Gemm's output columns.

Rules:
- The producer is a default-domain Conv (any group) or Gemm whose weight, bias (if
  any) and the BN's four parameters are all constants.
- The producer's output feeds only the BN and is not a graph output.
- The BN is in inference mode: one output, and ``training_mode`` unset or 0.
- Gemm needs a 2-D output, ``alpha``/``beta`` are folded in and reset to 1.
- A weight used only here is updated in place; a shared one is copied.
- Arithmetic is done in float64 and rounded once to the weight's dtype.
"""

from __future__ import annotations

import numpy as np

import onnx

from edgec.compiler.pass_manager import Diagnostic, Pass, PassResult, register_pass
from edgec.ir import Attr, Graph, Model, Node, Value


def fold_target(bn: Node) -> tuple[Node, str] | tuple[None, str]:
    """The Conv/Gemm this BN folds into, or None and the reason it cannot."""
    if len(bn.outputs) > 1 or bn.attr("training_mode", 0):
        return None, "it runs in training mode"
    source = bn.inputs[0]
    producer = source.producer if source is not None else None
    if producer is None or producer.domain not in ("", "ai.onnx") or producer.op_type not in ("Conv", "Gemm"):
        return None, "its input is not produced by a Conv or Gemm"
    if len(source.uses) != 1:
        return None, f"the {producer.op_type} output has other users"
    if not all(v is not None and v.is_constant for v in bn.inputs[1:5]):
        return None, "its scale, bias, mean and variance are not all constants"
    weight = producer.inputs[1]
    bias = producer.inputs[2] if len(producer.inputs) > 2 else None
    if not weight.is_constant or (bias is not None and not bias.is_constant):
        return None, f"the {producer.op_type} weight or bias is not a constant"
    if producer.op_type == "Gemm" and (source.shape is None or len(source.shape) != 2):
        return None, "the Gemm output is not 2-D"
    return producer, ""


def set_constant(graph: Graph, node: Node, index: int, data: np.ndarray, hint: str) -> None:
    """Give ``node`` input ``index`` new data, in place when nobody else reads it."""
    current = node.inputs[index] if index < len(node.inputs) else None
    if current is not None and len(current.uses) == 1 and not graph.is_graph_output(current):
        current.const = data
        current.shape = tuple(data.shape)
        return
    value = graph.add_initializer(graph.fresh_name(hint), data)
    while len(node.inputs) <= index:
        node.inputs.append(None)
    graph.set_input(node, index, value)


@register_pass
class FoldBatchnorm(Pass):
    name = "fold-batchnorm"

    def call(self, model: Model) -> PassResult:
        graph = model.graph
        stats = {"folded-into-conv": 0, "folded-into-gemm": 0, "not-foldable": 0}
        diagnostics = []
        for bn in list(graph.nodes):
            if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
                continue
            producer, reason = fold_target(bn)
            if producer is not None and graph.is_graph_output(bn.inputs[0]):
                producer, reason = None, f"the {producer.op_type} output is a graph output"
            if producer is None:
                stats["not-foldable"] += 1
                diagnostics.append(Diagnostic("note", f"not folded: {reason}", bn.describe()))
                continue
            self.fold(graph, bn, producer)
            stats["folded-into-conv" if producer.op_type == "Conv" else "folded-into-gemm"] += 1
        modified = stats["folded-into-conv"] + stats["folded-into-gemm"] > 0
        return PassResult(model, modified=modified, stats=stats, diagnostics=diagnostics)

    @staticmethod
    def fold(graph: Graph, bn: Node, producer: Node) -> None:
        scale, beta, mean, var = (v.const.astype(np.float64) for v in bn.inputs[1:5])
        s = scale / np.sqrt(var + bn.attr("epsilon", 1e-5))
        shift = beta - mean * s
        weight: Value = producer.inputs[1]
        bias = producer.inputs[2] if len(producer.inputs) > 2 else None
        dtype = weight.const.dtype
        w = weight.const.astype(np.float64)
        if producer.op_type == "Conv":
            new_weight = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
            old_bias = bias.const.astype(np.float64) if bias is not None else 0.0
            new_bias = np.broadcast_to(old_bias * s + shift, s.shape)
        else:
            alpha, beta_attr = producer.attr("alpha", 1.0), producer.attr("beta", 1.0)
            trans_b = producer.attr("transB", 0)
            new_weight = alpha * w * (s[:, None] if trans_b else s[None, :])
            old_bias = beta_attr * bias.const.astype(np.float64) if bias is not None else 0.0
            new_bias = np.broadcast_to(old_bias, np.broadcast_shapes(np.shape(old_bias), s.shape)) * s + shift
            producer.attrs.pop("alpha", None)
            producer.attrs["beta"] = Attr(onnx.AttributeProto.FLOAT, 1.0)
        set_constant(graph, producer, 1, new_weight.astype(dtype), weight.name + "_bn")
        set_constant(graph, producer, 2, np.ascontiguousarray(new_bias).astype(dtype), "bn_bias")
        graph.forward(bn.outputs[0], producer.outputs[0])
        producer_out = producer.outputs[0]
        producer_out.dtype, producer_out.shape = bn.outputs[0].dtype, bn.outputs[0].shape
        graph.remove_node(bn)
