"""Integer ONNX ops TVM's frontend lacks, as ONNX it converts, before the frontend.

ConvInteger (which edgec's import also makes of QLinearConv) has no TVM converter. It
becomes a Conv of its operands widened to int32 and shifted by their zero points (the
weight's per output channel where it has one), exactly ConvInteger's definition: padding
with 0 after the shift is padding with the zero point before it. TVM imports that as an
int32 conv2d, the same shape as its MatMulInteger (a matmul of widened, shifted operands),
and ``int8.py`` turns both into 8-bit x 8-bit -> int32 kernels where the weight is a
constant that fits int8 after its shift.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgec.errors import CompileError

T = onnx.TensorProto
REWRITTEN = frozenset({"ConvInteger"})
"""Ops without a TVM converter that this module lowers (``support.py`` counts them)."""


def rewrite_integer_ops(proto: onnx.ModelProto) -> None:
    """Every default-domain ConvInteger of the main graph, in place."""
    if not any(node.op_type == "ConvInteger" for node in proto.graph.node):
        return
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.input, *inferred.value_info]
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    ranks.update({t.name: len(t.dims) for t in proto.graph.initializer})
    nodes: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        if node.op_type == "ConvInteger" and node.domain in ("", "ai.onnx"):
            nodes.extend(conv_integer(node, ranks))
        else:
            nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def conv_integer(node: onnx.NodeProto, ranks: dict[str, int]) -> list[onnx.NodeProto]:
    """Conv(int32(x) - x_zero_point, int32(w) - w_zero_point), the weight's zero point per
    output channel reshaped to [C, 1, 1, ...] (a 1-D one of size 1 broadcasts the same)."""
    x, w, x_zero, w_zero = (list(node.input) + ["", ""])[:4]
    rank = ranks.get(w)
    if rank is None:
        raise CompileError(f"ConvInteger node '{node.name or node.output[0]}': the weight's rank is not known")
    out = node.output[0]
    name = node.name or out
    nodes = []

    def step(op: str, inputs: list[str], suffix: str, **attrs) -> str:
        nodes.append(onnx.helper.make_node(op, inputs, [f"{out}.{suffix}"], name=f"{name}.{suffix}", **attrs))
        return f"{out}.{suffix}"

    def shifted(value: str, zero: str, suffix: str, per_channel: bool) -> str:
        wide = step("Cast", [value], f"{suffix}_i32", to=T.INT32)
        if not zero:
            return wide
        zero = step("Cast", [zero], f"{suffix}_zero_i32", to=T.INT32)
        if per_channel:
            shape = f"{out}.{suffix}_zero_shape"
            nodes.append(onnx.helper.make_node("Constant", [], [shape], name=f"{name}.{suffix}_zero_shape",
                                               value=onnx.numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), np.int64), shape)))
            zero = step("Reshape", [zero, shape], f"{suffix}_zero_column")
        return step("Sub", [wide, zero], f"{suffix}_shifted")

    conv = onnx.NodeProto()
    conv.CopyFrom(node)
    conv.op_type, conv.name = "Conv", name
    del conv.input[:]
    conv.input.extend([shifted(x, x_zero, "x", False), shifted(w, w_zero, "w", True)])
    return nodes + [conv]
