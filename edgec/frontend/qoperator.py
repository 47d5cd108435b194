"""onnxruntime's QOperator format as standard ONNX, at import, before shape inference.

onnxruntime's quantization tool writes QLinearConv and QLinearMatMul (ONNX) and, beside
them, ``com.microsoft`` contrib ops that onnx knows no schema or shape inference for, so
the IR could not type their outputs. Each becomes default-domain ONNX that means the same:

- QLinearConv, QLinearMatMul and com.microsoft QGemm: the integer op (ConvInteger,
  MatMulInteger; QGemm's int32 bias added to its product), then the requantize as
  onnxruntime's kernels compute it: the int32 result times ``scale_a * scale_b / scale_y``
  (in the scales' dtype) in float32, rounded half to even, plus ``y_zero_point``, saturated.
  (ONNX's reference multiplies in float64; the two differ only where float32 rounds a
  product across a half, and onnxruntime is what the models are quantized for.) QGemm
  without ``y_scale`` returns the float32 product times ``alpha * scale_a * scale_b``.
  The integer op lowers to an 8-bit x 8-bit -> int32 kernel (``targets/int8.py``).
- com.microsoft QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
  QLinearGlobalAveragePool, QLinearAveragePool (NCHW only: ``channels_last`` is
  refused) and QLinearConcat: QDQ, i.e. DequantizeLinear of each input, the float op, then
  QuantizeLinear, as onnxruntime's own QDQ fusion reads them.
- com.microsoft QuantizeLinear and DequantizeLinear: the default-domain ops.

Other com.microsoft ops stay, and the importer refuses them (unknown op domain). The
requantize needs Round (opset 11): an older model is converted to opset 11 first.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import ModelError

T = onnx.TensorProto
CONTRIB = "com.microsoft"
ELEMENTWISE = {"QLinearAdd": "Add", "QLinearMul": "Mul"}
UNARY = {"QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu",
         "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearAveragePool": "AveragePool"}
INTEGER = {("", "QLinearConv"), ("", "QLinearMatMul"), (CONTRIB, "QGemm")}
TRANSLATED = {*INTEGER, *((CONTRIB, op) for op in (*ELEMENTWISE, *UNARY, "QLinearConcat",
                                                    "QuantizeLinear", "DequantizeLinear"))}
"""(domain, op) of every op this module turns into standard ONNX."""
INPUTS = {"QLinearConv": (8, 9), "QLinearMatMul": (8, 8), "QGemm": (6, 9), "QLinearAdd": (7, 8), "QLinearMul": (7, 8),
          "QLinearConcat": (5, None), "QuantizeLinear": (2, 3), "DequantizeLinear": (2, 3),
          **dict.fromkeys(UNARY, (4, 5))}
"""The fewest and most inputs of each op (QLinearConcat: 2, then 3 per input)."""
ATTRIBUTES = {"alpha": onnx.AttributeProto.FLOAT, "transA": onnx.AttributeProto.INT, "transB": onnx.AttributeProto.INT,
              "axis": onnx.AttributeProto.INT, "channels_last": onnx.AttributeProto.INT,
              "auto_pad": onnx.AttributeProto.STRING, "ceil_mode": onnx.AttributeProto.INT,
              "count_include_pad": onnx.AttributeProto.INT, "kernel_shape": onnx.AttributeProto.INTS,
              "pads": onnx.AttributeProto.INTS, "strides": onnx.AttributeProto.INTS,
              "dilations": onnx.AttributeProto.INTS, "block_size": onnx.AttributeProto.INT,
              "output_dtype": onnx.AttributeProto.INT, "saturate": onnx.AttributeProto.INT}
"""The type of each attribute the com.microsoft ops here take (their schemas are not in onnx)."""


def is_default(domain: str) -> bool:
    return domain in ("", "ai.onnx")


def translate(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model with every QOperator node of its main graph rewritten (in place, unless the
    model is converted to opset 11 first)."""
    found = [n for n in proto.graph.node if ("" if is_default(n.domain) else n.domain, n.op_type) in TRANSLATED]
    if not found:
        return proto
    opset = next((o.version for o in proto.opset_import if is_default(o.domain)), 0)
    if opset < 11:  # the requantize needs Round (opset 11)
        try:
            proto = onnx.version_converter.convert_version(proto, 11)
        except Exception as exc:  # the converter raises bare RuntimeErrors
            raise ModelError(f"{source}: {found[0].op_type} node '{found[0].name or found[0].output[0]}': the model "
                             f"has opset {opset} and cannot be converted to opset 11 ({' '.join(str(exc).split())})") from None
    for node in found:
        check(node, source)
    try:
        types, ranks = element_types(proto)
    except onnx.shape_inference.InferenceError as exc:
        raise ModelError(f"{source}: shape inference failed: {' '.join(str(exc).split())}") from None
    nodes: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        key = ("" if is_default(node.domain) else node.domain, node.op_type)
        if key not in TRANSLATED:
            nodes.append(node)
            continue
        new = Builder(node, types, ranks)
        nodes.extend(new.translate())
        types.update(new.produced)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def check(node: onnx.NodeProto, source: str) -> None:
    """Refuse, in one line, a node whose inputs or attributes its op does not take."""
    where = f"{source}: {node.op_type} node '{node.name or (node.output[0] if node.output else '?')}'"
    fewest, most = INPUTS[node.op_type]
    count = len(node.input)
    if count < fewest or most is not None and count > most or node.op_type == "QLinearConcat" and (count - 2) % 3:
        raise ModelError(f"{where}: {count} inputs is not a valid number for {node.op_type}")
    if not node.input[0] or len(node.output) != 1 or not node.output[0]:
        raise ModelError(f"{where}: needs its first input and exactly one output")
    if node.op_type == "QLinearConcat" and not any(a.name == "axis" for a in node.attribute):
        raise ModelError(f"{where}: the axis attribute is required")
    if is_default(node.domain):
        return  # onnx's schema checked the attributes
    for attribute in node.attribute:
        if ATTRIBUTES.get(attribute.name) != attribute.type:
            raise ModelError(f"{where}: attribute '{attribute.name}' is not one {node.op_type} takes with this type")


def element_types(proto: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """The element type and the rank of each value shape inference types (it stops at
    contrib ops)."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    tensors = [v.type.tensor_type for v in [*inferred.input, *inferred.value_info, *inferred.output]
               if v.type.HasField("tensor_type")]
    names = [v.name for v in [*inferred.input, *inferred.value_info, *inferred.output] if v.type.HasField("tensor_type")]
    types = {name: t.elem_type for name, t in zip(names, tensors) if t.elem_type}
    ranks = {name: len(t.shape.dim) for name, t in zip(names, tensors) if t.HasField("shape")}
    constants = list(proto.graph.initializer) + [n.attribute[0].t for n in proto.graph.node if n.op_type == "Constant"
                                                 and n.attribute and n.attribute[0].name == "value"]
    outputs = [t.name for t in proto.graph.initializer] + [n.output[0] for n in proto.graph.node if n.op_type == "Constant"
                                                          and n.attribute and n.attribute[0].name == "value"]
    for name, tensor in zip(outputs, constants):
        types[name], ranks[name] = tensor.data_type, len(tensor.dims)
    return types, ranks


class Builder:
    """The standard nodes for one QOperator node, each output named after it."""

    def __init__(self, node: onnx.NodeProto, types: dict[str, int], ranks: dict[str, int]):
        self.node, self.types, self.ranks = node, types, ranks
        self.name = node.name or node.output[0]
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.nodes: list[onnx.NodeProto] = []
        self.produced: dict[str, int] = {}
        self.count = 0

    def input(self, position: int) -> str:
        return self.node.input[position] if position < len(self.node.input) else ""

    def __call__(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self.count += 1
        output = output or f"{self.name}.{op.lower()}{self.count}"
        self.nodes.append(onnx.helper.make_node(op, inputs, [output], name=f"{self.name}.{op.lower()}{self.count}", **attrs))
        return output

    def const(self, value: np.ndarray) -> str:
        self.count += 1
        name = f"{self.name}.const{self.count}"
        self.nodes.append(onnx.helper.make_node("Constant", [], [name], name=name,
                                                value=onnx.numpy_helper.from_array(np.asarray(value), name)))
        return name

    def translate(self) -> list[onnx.NodeProto]:
        op = self.node.op_type
        if op in ("QuantizeLinear", "DequantizeLinear"):
            self(op, list(self.node.input), self.node.output[0], **self.attrs)
        elif op in ("QLinearConv", "QLinearMatMul", "QGemm"):
            self.integer()
        elif op == "QLinearConcat":
            self.concat()
        else:
            self.qdq()
        return self.nodes

    def quantized_dtype(self, value: str, zero: str) -> int:
        """The 8-bit type of a quantized value: its zero point's, else its own, else uint8."""
        return self.types.get(zero) or self.types.get(value) or T.UINT8

    def quantize(self, value: str, scale: str, zero: str, dtype: int, output: str) -> None:
        if not zero:  # QuantizeLinear without a zero point makes uint8: give it the dtype's zero
            zero = self.const(np.array(0, onnx.helper.tensor_dtype_to_np_dtype(dtype)))
        self("QuantizeLinear", [value, scale, zero], output)
        self.produced[output] = dtype

    def qdq(self) -> None:
        """DequantizeLinear of each quantized input, the float op, QuantizeLinear."""
        op = self.node.op_type
        if op in ELEMENTWISE:
            a = self("DequantizeLinear", [self.input(0), self.input(1), self.input(2)])
            b = self("DequantizeLinear", [self.input(3), self.input(4), self.input(5)])
            value, (scale, zero) = self(ELEMENTWISE[op], [a, b]), (self.input(6), self.input(7))
        else:
            if self.attrs.get("channels_last", 0):
                raise ModelError(f"{op} node '{self.name}': channels_last=1 (NHWC) is not supported")
            x = self("DequantizeLinear", [self.input(0), self.input(1), self.input(2)])
            value = self(UNARY[op], [x], **{k: v for k, v in self.attrs.items() if k != "channels_last"})
            scale, zero = self.input(3), self.input(4)
        self.quantize(value, scale, zero, self.quantized_dtype(self.input(0), zero), self.node.output[0])

    def concat(self) -> None:
        """QLinearConcat(Y_scale, Y_zero_point, then X, X_scale, X_zero_point per input)."""
        parts = [self("DequantizeLinear", list(self.node.input[i:i + 3])) for i in range(2, len(self.node.input), 3)]
        value = self("Concat", parts, axis=self.attrs["axis"])
        zero = self.input(1)
        self.quantize(value, self.input(0), zero, self.quantized_dtype(self.input(2), zero), self.node.output[0])

    def integer(self) -> None:
        """The integer op, its int32 bias, then the requantize."""
        op = self.node.op_type
        x, x_scale, x_zero, w, w_scale, w_zero = (self.input(i) for i in range(6))
        scale = self("Mul", [x_scale, w_scale])
        if op == "QLinearConv":
            y_scale, y_zero, bias = self.input(6), self.input(7), self.input(8)
            rank = len(self.attrs["kernel_shape"]) + 2 if "kernel_shape" in self.attrs else self.ranks.get(w)
            if rank is None:
                raise ModelError(f"QLinearConv node '{self.name}': the weight's rank is unknown (no kernel_shape)")
            column = self.const(np.array([-1] + [1] * (rank - 2), np.int64))  # over [C, spatial...]
            product = self("ConvInteger", [x, w, x_zero, w_zero], **self.attrs)
            if bias:
                product = self("Add", [product, self("Reshape", [bias, column])])
            scale = self("Reshape", [scale, column])  # per output channel
        elif op == "QLinearMatMul":
            y_scale, y_zero, bias = self.input(6), self.input(7), ""
            product = self("MatMulInteger", [x, w, x_zero, w_zero])
        else:
            y_scale, y_zero, bias = self.input(7), self.input(8), self.input(6)
            if self.attrs.get("transA", 0):
                x = self("Transpose", [x])
            if self.attrs.get("transB", 0):
                w = self("Transpose", [w])
            product = self("MatMulInteger", [x, w, x_zero, w_zero])
            if bias:
                product = self("Add", [product, bias])
            alpha = self.attrs.get("alpha", 1.0)
            if alpha != 1.0:
                scale = self("Mul", [scale, self.const(np.array(alpha, np.float32))])
            if not y_scale:  # a float result
                self("Mul", [self("Cast", [product], to=T.FLOAT), self("Cast", [scale], to=T.FLOAT)], self.node.output[0])
                return
        dtype = self.quantized_dtype(self.input(0), y_zero)
        info = np.iinfo(onnx.helper.tensor_dtype_to_np_dtype(dtype))
        multiplier = self("Cast", [self("Div", [scale, y_scale])], to=T.FLOAT)
        value = self("Round", [self("Mul", [self("Cast", [product], to=T.FLOAT), multiplier])])
        if y_zero:  # after the rounding, as onnxruntime adds it: a sum in float32 could round up to a tie
            value = self("Add", [value, self("Cast", [y_zero], to=T.FLOAT)])
        bounded = self("Clip", [value, self.const(np.array(info.min, np.float32)), self.const(np.array(info.max, np.float32))])
        self("Cast", [bounded], self.node.output[0], to=dtype)
        self.produced[self.node.output[0]] = dtype
