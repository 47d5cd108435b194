"""Integer kernels: quantized conv2d and matmul patterns run as int8 x int8 -> int32.

TVM's ONNX frontend imports QDQ as fake quantization: ``dequantize`` in front of
float kernels. This rewrite, on the Relax module after import, turns a linear op
whose inputs are both dequantized into an integer kernel and a rescale:

    conv2d(dequantize(x_q, s_x, z_x), dequantize(W_q, s_w, 0))
      -> multiply(cast_f32(conv2d_i32(pad(x_q, value=z_x), W_q) - z_x * sum(W_q[c])), s_x * s_w[c])

Rules:
- ``x_q`` is int8 or uint8 with a constant scalar scale and zero point; ``W_q`` is
  a constant int8 weight with zero points all 0 (symmetric) and a scalar scale or
  one per output channel (conv2d axis 0; matmul the output axis).
- conv2d: NCHW/OIHW, any stride, dilation and groups. The input is padded with
  its zero point (the integer that means float 0), so the integer conv runs
  without padding; ``z_x * sum(W_q[c])`` is folded to an int32 constant. Its
  activation takes the dtype of the target's int8 dot product where that is exact for
  the weights, else int8 (``dot_operand``): the contract of ``int8_schedules``.
- matmul: ``x @ W`` and the transposed weight Gemm imports as
  ``x @ permute_dims(W)``; the weight is transposed as int8 at compile time. On a target
  with a dot product, a static 2-D ``x`` makes it a 1x1 conv, which takes the dot product.
- matmul of two dequantized activations (attention): int32 product, and the
  zero-point terms from the operands' row and column sums at run time.
- A following bias add whose bias is an int32 constant with scale exactly
  ``s_x * s_w`` and zero point 0 (what the quantize pass writes) is folded into
  the int32 correction; any other bias stays a float add after the rescale.
- What follows (relu, the next quantize) stays as imported and fuses into the
  kernel's epilogue: that is the requantize step.
- A pattern that cannot be lowered stays in float; the report says why.
- With VNNI, activation Q/DQ with constant scalar parameters then become the elementwise
  ops they legalize to, which TVM's ConvertLayout carries through in NHWC
  (``elementwise_qdq``), and an int8 activation only dequantizes read is quantized to uint8
  instead (``unsigned_activations``).

Integer ops (MatMulInteger, and ConvInteger as ``qoperator`` rewrites it; edgec's import
makes both of QLinearConv, QLinearMatMul and QGemm) import as an int32 conv2d or matmul of
operands widened from 8 bits and shifted by their zero points:

    matmul(astype(x_q, i32) - z_x, astype(W_q, i32) - z_w)
      -> matmul_i32(x_q, W_q - z_w) - z_x * colsum(W_q - z_w)

- The weight is a constant; ``W_q - z_w`` (zero points per tensor or per output channel)
  is stored as int8 where it fits, so a symmetric int8 weight and a uint8 one with zero
  point 128 both do. Where it does not fit (a uint8 weight, any zero point) it is stored
  shifted into int8 per output channel, ``w8 - z``, and ``z`` times the activation's sums
  is subtracted at run time: its row sums for a matmul, each window's sum (a conv with
  ones) for a conv.
- ``z_x`` is a constant, or a scalar computed at run time (DynamicQuantizeLinear): its
  correction is then a run-time product with the constant column sums, and a conv
  with padding or a shifted weight stays int32 (its pad value is a compile-time attribute).
- The result is the op's exact int32: what follows (bias, requantize) is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .int8_schedules import DotProduct

QUANTIZED_INPUTS = ("int8", "uint8")
"""Activation dtypes lowered to integers (uint8 x int8 accumulates in int32 too)."""


@dataclass
class IntegerReport:
    lowered: list[str] = field(default_factory=list)
    """The op of each pattern that became an integer kernel, in order."""
    kept_float: list[str] = field(default_factory=list)
    """``op: reason`` for each quantized pattern left in float."""
    kept_int32: list[str] = field(default_factory=list)
    """``op: reason`` for each integer op (MatMulInteger, ConvInteger) left widened to int32."""

    def to_dict(self) -> dict:
        return {"lowered": list(self.lowered), "kept_float": list(self.kept_float), "kept_int32": list(self.kept_int32)}


class Constants:
    """Compile-time values of a function: literal constants, and the weights the import
    passed as parameters (``params`` attribute), which is where lowering puts float
    tensors over 256 bytes, per-channel scales included."""

    def __init__(self, func):
        self.params = {}
        if "params" in func.attrs:
            weights = func.params[int(func.attrs["num_input"]):]
            self.params = {var.name: (var, value.numpy()) for var, value in zip(weights, func.attrs["params"])}

    def of(self, expr) -> np.ndarray | None:
        from tvm.ir.expr import GenericConst

        if isinstance(expr, GenericConst):
            return expr.value.numpy() if hasattr(expr.value, "numpy") else None
        var, value = self.params.get(getattr(expr, "name", None), (None, None))
        return value if var is not None and var.same_as(expr) else None


def dtype_of(expr) -> str:
    return str(expr.ty.dtype)


def dequantize_parts(call, values: Constants):
    """(data, scale array, zero array, axis) of a ``relax.dequantize`` call."""
    return call.args[0], values.of(call.args[1]), values.of(call.args[2]), int(call.attrs.axis)


def why_not(x_dq, w_dq, values: Constants) -> str | None:
    """The reason this activation/weight pair cannot become integer, or None."""
    x, sx, zx, _ = dequantize_parts(x_dq, values)
    w, sw, zw, _ = dequantize_parts(w_dq, values)
    if dtype_of(x) not in QUANTIZED_INPUTS:
        return f"activation is {dtype_of(x)}"
    if sx is None or zx is None or sx.size != 1 or zx.size != 1:
        return "activation scale or zero point is not a constant scalar"
    if values.of(w) is None or dtype_of(w) != "int8":
        return "weight is not a constant int8 tensor"
    if sw is None or zw is None or np.any(zw != 0):
        return "weight is not symmetric (zero point not 0) or its scale is not constant"
    return None


def integer_conv(call, x_call, w_call, values: Constants, dot: DotProduct | None = None):
    """(int32 accumulator expr, int32 correction, float32 scale), shaped for NCHW, or why not.
    ``dot``: the target's int8 dot product, which sums 4 input channels per step; an
    ungrouped conv it is exact for gets its input channels padded to a multiple (zero
    weights), so an RGB stem takes it too."""
    attrs = call.attrs
    reason = why_not(x_call, w_call, values)
    if reason is None and (attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW"):
        reason = f"layout {attrs.data_layout}/{attrs.kernel_layout}"
    if reason is not None:
        return reason
    x, sx, zx, _ = dequantize_parts(x_call, values)
    w, sw, _, w_axis = dequantize_parts(w_call, values)
    if sw.size != 1 and w_axis != 0:
        return f"weight scales along axis {w_axis}, not the output channels"
    weight = values.of(w)
    channels = weight.shape[0]
    acc, correction, *_ = conv_kernel(x, int(zx.reshape(())), weight, attrs, dot)
    scale = (np.float32(sx.reshape(())) * np.broadcast_to(sw.astype(np.float32), (channels,))).astype(np.float32)
    return acc, correction, scale.reshape(1, channels, 1, 1)


def conv_kernel(x, zero: int, weight: np.ndarray, attrs, dot: DotProduct | None):
    """(int32 conv of the 8-bit ``x`` and the constant int8 ``weight``, int32 correction shaped
    [1, C, 1, 1], the padded activation, its zero point, the conv's own padding): ``x`` padded
    with its zero point, and ``-zero * sum(W[c])`` to subtract the zero point's share. ``dot``:
    see ``integer_conv``.

    Where the zero point is 0 (a ReLU's output in uint8, the dot product's dtype) the
    conv pads by itself, as a float conv does: its padding then stays inside the conv's kernel,
    where the depthwise rule reads it inline. A separate ``pad`` is a kernel of its own, a copy
    of the whole activation (MobileNetV2 int8: 10% of its time)."""
    from tvm import relax

    channels = weight.shape[0]
    x, zero, fits = dot_operand(x, zero, weight, dot)
    w = relax.const(weight, "int8")
    extra = 0
    if fits and int(attrs.groups) == 1 and weight.shape[1] % dot.depth:
        extra = dot.depth - weight.shape[1] % dot.depth
        w = relax.const(np.pad(weight, [(0, 0), (0, extra), (0, 0), (0, 0)]), "int8")
    padding = [int(p) for p in attrs.padding]
    top, left, bottom, right = (0, 0, 0, 0) if zero == 0 else padding
    conv_padding = padding if zero == 0 else [0, 0, 0, 0]
    widths = [0, 0, 0, extra, top, bottom, left, right]
    padded = relax.op.nn.pad(x, widths, pad_value=float(zero)) if any(widths) else x
    acc = relax.op.nn.conv2d(padded, w, strides=attrs.strides, padding=conv_padding, dilation=attrs.dilation,
                             groups=int(attrs.groups), out_dtype="int32")
    correction = -zero * weight.astype(np.int64).reshape(channels, -1).sum(axis=1)
    return acc, correction.reshape(1, channels, 1, 1), padded, zero, conv_padding


def shifted_weight_conv(x, zero: int, weight: np.ndarray, attrs):
    """The int32 conv of ``x`` less its zero point with a weight that spans up to 256 values per
    output channel but does not fit int8 (uint8 weights with any zero point): stored as int8
    ``w8 = e - min(e[c]) - 128``, so ``e = w8 - z[c]``; ``z[c]`` times each window's sum of the
    activation (a conv with ones) is subtracted at run time."""
    from tvm import relax

    channels = weight.shape[0]
    flat = weight.reshape(channels, -1)
    low = flat.min(axis=1)
    if np.any(flat.max(axis=1) - low > 255):
        return "the weight less its zero point spans more than 256 values"
    z = -(low + 128)
    w8 = (weight - low.reshape(-1, *[1] * (weight.ndim - 1)) - 128).astype(np.int8)
    acc, correction, padded, zero, conv_padding = conv_kernel(x, zero, w8, attrs, None)
    groups = int(attrs.groups)
    ones = relax.const(np.ones((groups, *weight.shape[1:]), np.int8), "int8")
    window = relax.op.nn.conv2d(padded, ones, strides=attrs.strides, padding=conv_padding, dilation=attrs.dilation,
                                groups=groups, out_dtype="int32")
    if channels != groups:
        window = relax.op.repeat(window, channels // groups, axis=1)
    acc = relax.op.subtract(acc, relax.op.multiply(window, relax.const(z.reshape(1, -1, 1, 1).astype(np.int32), "int32")))
    correction = correction + (z * flat.shape[1] * zero).reshape(1, -1, 1, 1)
    return relax.op.add(acc, relax.const(correction.astype(np.int32), "int32"))


def dot_operand(x, zero: int, weight: np.ndarray, dot: DotProduct | None):
    """(activation, zero point, whether it is in ``dot``'s dtype) as the dot-product schedules
    want them: the dtype of the target's dot product where that product is exact for these
    weights (AVX2's uint8 x int8: 7-bit weights), else int8; shifted by 128 where needed (the
    zero point moves with it). The schedules rely on this: they see only dtypes."""
    from tvm import relax

    fits = dot is not None and dot.exact_for(weight)
    wanted = dot.activation if fits else "int8"
    if dtype_of(x) == wanted:
        return x, zero, fits
    shift = 128 if wanted == "uint8" else -128
    wide = relax.op.add(relax.op.astype(x, "int16"), relax.const(shift, "int16"))
    return relax.op.astype(wide, wanted), zero + shift, fits


def integer_matmul(x_call, w_call, transposed: bool, values: Constants, dot: DotProduct | None = None):
    """(int32 accumulator expr, int32 correction, float32 scale) over the output columns, or why not.
    With a dot product and a static 2-D activation (a classifier's Gemm) the product is a 1x1
    conv (``dense_as_conv``)."""
    from tvm import relax

    reason = why_not(x_call, w_call, values)
    weight = values.of(w_call.args[0])
    if reason is None and weight.ndim != 2:
        reason = f"{weight.ndim}-D weight"
    if reason is not None:
        return reason
    x, sx, zx, _ = dequantize_parts(x_call, values)
    _, sw, _, w_axis = dequantize_parts(w_call, values)
    if transposed:
        weight, out_axis = weight.T, 0  # Gemm transB: W is [N, K], its scales run along axis 0
    else:
        out_axis = 1
    if sw.size != 1 and w_axis != out_axis:
        return f"weight scales along axis {w_axis}, not the output columns"
    columns = weight.shape[1]
    zero = int(zx.reshape(()))
    if dot is not None and len(x.ty.shape.values) == 2 and all(hasattr(d, "value") for d in x.ty.shape.values):
        acc, zero = dense_as_conv(x, zero, weight, dot)
    else:
        acc = relax.op.matmul(x, relax.const(np.ascontiguousarray(weight), "int8"), out_dtype="int32")
    correction = -zero * weight.astype(np.int64).sum(axis=0)
    scale = (np.float32(sx.reshape(())) * np.broadcast_to(sw.astype(np.float32), (columns,))).astype(np.float32)
    return acc, correction, scale


def dense_as_conv(x, zero: int, weight: np.ndarray, dot: DotProduct):
    """(int32 ``x @ weight`` of a 2-D ``x`` [rows, K] and a constant [K, N], the zero point of the
    activation it reads): a 1x1 conv over a [1, K, rows, 1] image, so that it takes the conv's
    dot-product schedule with its weights packed at compile time (the matmul rule widens every
    product to int32: MobileNetV2's 1280x1000 classifier ran at 5 GFLOP/s). The transposes
    around the conv cancel with those ConvertLayout puts on its NHWC operands."""
    from tvm import relax

    rows, depth = (int(d) for d in x.ty.shape.values)
    kernel = np.ascontiguousarray(weight.T).reshape(weight.shape[1], depth, 1, 1)
    x, zero, _ = dot_operand(x, zero, kernel, dot)
    extra = -depth % dot.depth  # zero weights for the dot product's whole steps, as conv_kernel's
    if extra:
        x = relax.op.nn.pad(x, [0, 0, 0, extra], pad_value=float(zero))
        kernel = np.pad(kernel, [(0, 0), (0, extra), (0, 0), (0, 0)])
    image = relax.op.permute_dims(relax.op.reshape(x, [1, rows, 1, depth + extra]), [0, 3, 1, 2])
    acc = relax.op.nn.conv2d(image, relax.const(kernel, "int8"), out_dtype="int32")
    return relax.op.reshape(relax.op.permute_dims(acc, [0, 2, 3, 1]), [rows, weight.shape[1]]), zero


def integer_matmul_activations(x_call, y_call, values: Constants):
    """``x @ y`` of two dequantized activations (attention's QK^T and weights x V): the int32
    product, less the zero-point terms, which need the operands' row and column sums at
    run time (``zy * rowsum(x) + zx * colsum(y) - K * zx * zy``), then the scale ``s_x * s_y``."""
    from tvm import relax

    operands = []
    for call in (x_call, y_call):
        data, scale, zero, _ = dequantize_parts(call, values)
        if dtype_of(data) not in QUANTIZED_INPUTS:
            return f"operand is {dtype_of(data)}"
        if scale is None or zero is None or scale.size != 1 or zero.size != 1:
            return "an operand's scale or zero point is not a constant scalar"
        operands.append((data, np.float32(scale.reshape(())), int(zero.reshape(()))))
    (x, sx, zx), (y, sy, zy) = operands
    depth = x.ty.shape.values[-1] if isinstance(x.ty.shape, relax.ShapeExpr) else None
    if depth is None or not hasattr(depth, "value"):
        return "the reduction length is not static"
    result = relax.op.matmul(x, y, out_dtype="int32")

    def summed(t, axis: int):
        return relax.op.sum(relax.op.astype(t, "int32"), axis=[axis], keepdims=True)

    if zy:
        result = relax.op.subtract(result, relax.op.multiply(summed(x, -1), relax.const(zy, "int32")))
    if zx:
        result = relax.op.subtract(result, relax.op.multiply(summed(y, -2), relax.const(zx, "int32")))
    if zx and zy:
        result = relax.op.add(result, relax.const(int(depth.value) * zx * zy, "int32"))
    return relax.op.multiply(relax.op.astype(result, "float32"), relax.const(np.float32(sx * sy), "float32"))


def folded_bias(b_call, scale: np.ndarray, values: Constants) -> np.ndarray | None:
    """The int32 bias, when its scale is exactly ``s_x * s_w`` and its zero point 0 (else None)."""
    bias, sb, zb, _ = dequantize_parts(b_call, values)
    bias = values.of(bias)
    if bias is None or bias.dtype != np.int32 or bias.ndim != 1 or sb is None or zb is None or np.any(zb != 0):
        return None
    flat = scale.reshape(-1)
    if bias.shape[0] != flat.shape[0] or not np.array_equal(np.broadcast_to(sb.astype(np.float32), flat.shape), flat):
        return None
    return bias.astype(np.int64)


def linear_rewriter(report: IntegerReport, op: str, with_bias: bool, values: Constants, dot: DotProduct | None):
    """A (pattern, rewriter) pair for ``op`` (conv2d, matmul or matmul-transposed), optionally
    with the bias add after it. The bias form only fires when the bias folds into the int32
    correction; otherwise it leaves the call for the plain form, which records any reason."""
    from tvm.relax.dpl import is_op, wildcard

    x_dq = is_op("relax.dequantize")(wildcard(), wildcard(), wildcard())
    w_dq = is_op("relax.dequantize")(wildcard(), wildcard(), wildcard())
    if op == "conv2d":
        linear = is_op("relax.nn.conv2d")(x_dq, w_dq)
    else:
        linear = is_op("relax.matmul")(x_dq, is_op("relax.permute_dims")(w_dq) if op == "matmul-transposed" else w_dq)
    b_dq = is_op("relax.dequantize")(wildcard(), wildcard(), wildcard())
    bias = is_op("relax.reshape")(b_dq, wildcard()) if op == "conv2d" else b_dq
    pattern = is_op("relax.add")(linear, bias) if with_bias else linear
    reported = []

    def rewrite(call, matchings):
        activations = op == "matmul" and values.of(matchings[w_dq].args[0]) is None
        if op == "conv2d":
            lowered = integer_conv(matchings[linear], matchings[x_dq], matchings[w_dq], values, dot)
        elif activations:
            lowered = integer_matmul_activations(matchings[x_dq], matchings[w_dq], values)
        else:
            lowered = integer_matmul(matchings[x_dq], matchings[w_dq], op == "matmul-transposed", values, dot)
        if isinstance(lowered, str) or with_bias and activations:
            if not with_bias and not any(seen.same_as(call) for seen in reported):
                reported.append(call)  # rewrite_call may offer the same call again
                report.kept_float.append(f"{op.split('-')[0]}: {lowered}")
            return call
        if activations:
            report.lowered.append("matmul-activations")
            return lowered
        acc, correction, scale = lowered
        if with_bias:
            bias = folded_bias(matchings[b_dq], scale, values)
            if bias is None:
                return call
            correction = correction + bias.reshape(correction.shape)
        report.lowered.append(op.split("-")[0] + ("+bias" if with_bias else ""))
        return rescale(acc, correction, scale)

    return pattern, rewrite


def rescale(acc, correction: np.ndarray, scale: np.ndarray):
    """float32((acc + correction) * scale): the zero-point correction in int32, then the requantize scale."""
    from tvm import relax

    shifted = relax.op.add(acc, relax.const(correction.astype(np.int32), "int32"))
    return relax.op.multiply(relax.op.astype(shifted, "float32"), relax.const(scale, "float32"))


def resolve(expr, bindings: dict):
    """The value a dataflow variable is bound to, through any chain of variables."""
    while expr in bindings:
        expr = bindings[expr]
    return expr


def op_name(expr) -> str:
    from tvm.ir.expr import Call

    return getattr(expr.op, "name", "") if isinstance(expr, Call) else ""


def constant_value(expr, bindings: dict, values: Constants) -> np.ndarray | None:
    """The compile-time value of a constant, or of astype/subtract/reshape/expand_dims of constants."""
    expr = resolve(expr, bindings)
    found = values.of(expr)
    if found is not None:
        return found
    name = op_name(expr)
    if name not in ("relax.astype", "relax.subtract", "relax.reshape", "relax.expand_dims"):
        return None
    first = constant_value(expr.args[0], bindings, values)
    if first is None:
        return None
    if name == "relax.astype":
        return first.astype(np.int64)
    if name == "relax.subtract":
        second = constant_value(expr.args[1], bindings, values)
        return None if second is None else first.astype(np.int64) - second.astype(np.int64)
    return first.reshape([int(d) for d in expr.ty.shape.values])


def widened(expr, bindings: dict):
    """(8-bit tensor, zero point expr or None) of ``astype(q, int32) [- zero]``, or None."""
    expr = resolve(expr, bindings)
    zero = None
    if op_name(expr) == "relax.subtract":
        expr, zero = resolve(expr.args[0], bindings), expr.args[1]
    if op_name(expr) == "relax.astype" and dtype_of(expr.args[0]) in QUANTIZED_INPUTS:
        return expr.args[0], zero
    return None


def integer_op_rewriter(report: IntegerReport, op: str, bindings: dict, values: Constants, dot: DotProduct | None):
    """A (pattern, rewriter) pair for an int32 ``op`` (conv2d or matmul) of widened 8-bit
    operands: the integer ops' form."""
    from tvm.relax.dpl import is_op, wildcard

    pattern = is_op("relax.nn.conv2d" if op == "conv2d" else "relax.matmul")(wildcard(), wildcard())

    def rewrite(call, matchings):
        lowered = integer_op_of(op, call, bindings, values, dot)
        if lowered is None or isinstance(lowered, str):
            return call  # reported by ``report_kept_int32`` once the rewrite is done
        report.lowered.append(f"{op}-integer")
        return lowered

    return pattern, rewrite


def integer_op_of(op: str, call, bindings: dict, values: Constants, dot: DotProduct | None):
    """The 8-bit kernel for an int32 ``op`` call of widened operands, why not, or None when the
    call is not made of 8-bit values (a plain int32 op)."""
    if op_name(call) != ("relax.nn.conv2d" if op == "conv2d" else "relax.matmul"):
        return None
    if str(call.ty.dtype) != "int32" or any(dtype_of(arg) != "int32" for arg in call.args):
        return None
    activation = widened(call.args[0], bindings)
    return None if activation is None else integer_op(op, call, activation, bindings, values, dot)


def report_kept_int32(report: IntegerReport, func, values: Constants) -> None:
    """Why each integer op still widened to int32 after the rewrite stayed so."""
    bindings = {binding.var: binding.value for block in func.body.blocks for binding in block.bindings}
    for value in bindings.values():
        for op in ("conv2d", "matmul"):
            reason = integer_op_of(op, value, bindings, values, None)
            if isinstance(reason, str):
                report.kept_int32.append(f"{op}: {reason}")


def integer_op(op: str, call, activation, bindings: dict, values: Constants, dot: DotProduct | None):
    """The 8-bit kernel for an int32 conv2d or matmul of widened operands, or why not."""
    from tvm import relax

    x, zero_expr = activation
    zero = 0 if zero_expr is None else constant_value(zero_expr, bindings, values)
    if zero is not None and np.size(zero) != 1:
        return "the activation's zero point is not a scalar"
    if zero_expr is not None and zero is None and zero_expr.ty.shape is not None and len(zero_expr.ty.shape.values) != 0:
        return "the activation's zero point is not a scalar"
    weight = constant_value(call.args[1], bindings, values)
    if weight is None:
        return "the weight is not a constant"
    fits = weight.min(initial=0) >= -128 and weight.max(initial=0) <= 127
    if op == "conv2d":
        attrs = call.attrs
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout != "NCHW":
            return f"layout {attrs.data_layout}/{attrs.kernel_layout}"
        if zero is None and (any(int(p) for p in attrs.padding) or not fits):
            return "the activation's zero point is computed at run time and the conv pads or its weight leaves int8"
        if not fits:
            return shifted_weight_conv(x, int(np.reshape(zero, ())), weight, attrs)
        weight = weight.astype(np.int8)
        acc, correction, *_ = conv_kernel(x, 0 if zero is None else int(np.reshape(zero, ())), weight, attrs, dot)
        sums = weight.astype(np.int64).reshape(weight.shape[0], -1).sum(axis=1).reshape(1, -1, 1, 1)
    else:
        if weight.ndim != 2:
            return f"{weight.ndim}-D weight"
        low = weight.min(axis=0)
        if np.any(weight.max(axis=0) - low > 255):
            return "the weight less its zero point spans more than 256 values"
        # Stored as int8 less a per-column shift where it does not fit: e = w8 - z[n].
        weight_zero = None if fits else -(low + 128).reshape(1, -1)
        w8 = weight if fits else weight + weight_zero
        weight8 = relax.const(w8.astype(np.int8), "int8")
        sums = w8.sum(axis=0)
        acc = relax.op.matmul(x, weight8, out_dtype="int32")
        correction = np.zeros_like(sums)
        if weight_zero is not None:
            rowsum = relax.op.sum(relax.op.astype(x, "int32"), axis=[-1], keepdims=True)
            acc = relax.op.subtract(acc, relax.op.multiply(rowsum, relax.const(weight_zero.astype(np.int32), "int32")))
            depth = weight.shape[0]
            if zero is not None:
                correction = correction + depth * int(np.reshape(zero, ())) * weight_zero.reshape(-1)
            else:
                acc = relax.op.add(acc, relax.op.multiply(zero_expr, relax.const((depth * weight_zero).astype(np.int32), "int32")))
        if zero is not None:
            correction = correction - int(np.reshape(zero, ())) * sums
    if zero is None:  # a run-time zero point times the constant column sums
        acc = relax.op.subtract(acc, relax.op.multiply(zero_expr, relax.const(sums.astype(np.int32), "int32")))
    if op == "conv2d":
        return relax.op.add(acc, relax.const(correction.astype(np.int32), "int32"))
    return relax.op.add(acc, relax.const(correction.astype(np.int32), "int32")) if np.any(correction) else acc


def elementwise_qdq(func, values: Constants):
    """``quantize``/``dequantize`` with constant scalar parameters as the elementwise ops they
    legalize to (same expressions, so bit for bit): TVM's ConvertLayout knows those but not the
    Q/DQ ops, and left each activation's requantize between a pair of NHWC<->NCHW transposes in
    a kernel of its own, after the conv had written float32. As elementwise ops it fuses into
    the conv's epilogue, which then writes 8-bit NHWC."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Elementwise(relax.PyExprMutator):
        def visit_call_(self, original):
            call = super().visit_call_(original)
            name = op_name(call)
            if name not in ("relax.quantize", "relax.dequantize"):
                return call
            scale, zero = values.of(call.args[1]), values.of(call.args[2])
            if scale is None or zero is None or scale.size != 1 or zero.size != 1:
                return call
            data, out_dtype = call.args[0], str(call.attrs.out_dtype)
            if name == "relax.quantize":
                if dtype_of(data) != "float32" or out_dtype not in QUANTIZED_INPUTS:
                    return call
                info = np.iinfo(out_dtype)
                scaled = relax.op.round(relax.op.divide(data, relax.const(np.float32(scale.reshape(())), "float32")))
                shifted = relax.op.add(scaled, relax.const(np.float32(zero.reshape(())), "float32"))
                clipped = relax.op.maximum(relax.op.minimum(shifted, relax.const(np.float32(info.max), "float32")),
                                           relax.const(np.float32(info.min), "float32"))
                return relax.op.astype(clipped, out_dtype)
            if dtype_of(data) not in QUANTIZED_INPUTS or out_dtype != "float32":
                return call
            centred = relax.op.subtract(relax.op.astype(data, "int32"), relax.const(int(zero.reshape(())), "int32"))
            return relax.op.multiply(relax.op.astype(centred, "float32"),
                                     relax.const(np.float32(scale.reshape(())), "float32"))

    return Elementwise().visit_expr(func)


def unsigned_activations(func, values: Constants):
    """Each int8 ``quantize`` (constant scalar parameters) whose every use is a ``dequantize``
    made uint8, its zero point and its dequantizes' moved by 128: the same values, in the dtype
    that VNNI's vpdpbusd reads. Otherwise each conv's input is shifted where it is read, and
    where a tensor has two readers (a residual block's sum: the next conv and the next residual
    add) that shift is a kernel of its own."""
    from tvm import relax

    bindings = [binding for block in func.body.blocks for binding in block.bindings]
    quantized = {binding.var for binding in bindings if op_name(binding.value) == "relax.quantize"
                 and str(binding.value.attrs.out_dtype) == "int8" and scalar(binding.value, values)}
    readers: dict = {}

    def note(expr, reader):
        if isinstance(expr, relax.Var) and expr in quantized:
            readers.setdefault(expr, []).append(reader)

    for binding in bindings:
        relax.analysis.post_order_visit(binding.value, lambda e, b=binding.value: note(e, b))
    relax.analysis.post_order_visit(func.body.body, lambda e: note(e, None))
    eligible = {var for var in quantized if all(op_name(r) == "relax.dequantize" and r.args[0].same_as(var)
                                                and scalar(r, values) for r in readers.get(var, [None]))}

    def moved(zero_expr):
        return relax.const(np.uint8(int(values.of(zero_expr).reshape(())) + 128), "uint8")

    @relax.expr_functor.mutator
    class Unsigned(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            value = binding.value
            if binding.var in eligible:
                new = relax.op.quantize(self.visit_expr(value.args[0]), value.args[1], moved(value.args[2]),
                                        int(value.attrs.axis), "uint8")
            elif op_name(value) == "relax.dequantize" and value.args[0] in eligible:
                new = relax.op.dequantize(self.visit_expr(value.args[0]), value.args[1], moved(value.args[2]),
                                          int(value.attrs.axis), str(value.attrs.out_dtype))
            else:
                return super().visit_var_binding_(binding)
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            self.set_var_remap(binding.var, emit(new, binding.var.name))

    return Unsigned().visit_expr(func) if eligible else func


def scalar(call, values: Constants) -> bool:
    """Whether a Q/DQ call's scale and zero point are constant scalars."""
    scale, zero = values.of(call.args[1]), values.of(call.args[2])
    return scale is not None and zero is not None and scale.size == 1 and zero.size == 1


def lower_integer_kernels(mod, dot: DotProduct | None = None):
    """Rewrite every function of ``mod``; returns the new module and what happened.
    ``dot``: the target's int8 dot product (``int8_schedules.dot_product_for``)."""
    from tvm import relax
    from tvm.relax.dpl import rewrite_call

    report = IntegerReport()
    updated = {}
    for gvar, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        values = Constants(func)
        vnni = dot is not None and dot.activation == "uint8" and dot.weight_limit is None
        if vnni:
            func = unsigned_activations(func, values)
        for pattern, rewrite in [linear_rewriter(report, op, with_bias, values, dot) for with_bias in (True, False)
                                 for op in ("conv2d", "matmul-transposed", "matmul")]:
            func = rewrite_call(pattern, rewrite, func)
        for op in ("conv2d", "matmul"):
            bindings = {binding.var: binding.value for block in func.body.blocks for binding in block.bindings}
            func = rewrite_call(*integer_op_rewriter(report, op, bindings, values, dot), func)
        report_kept_int32(report, func, values)
        # Only with VNNI: on x86-64-v3 with 8-bit weights (the generic int32 loop) the
        # requantize in the conv's epilogue made MobileNetV2 int8 1.3x slower (Zen 4, 1 thread).
        updated[gvar] = elementwise_qdq(func, values) if vnni else func
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod, report
