"""ONNX Resize in the forms TVM converts exactly, or as exact per-axis interpolation.

TVM's Resize maps output to input coordinates with the size ratio ``out / in``; ONNX uses the
given scale, which differs whenever ``in * scale`` is not a whole number (a 0.6 downsample of
4 pixels gives 2, at the coordinates of scale 0.6, not 0.5). TVM also has no antialiasing,
no ``half_pixel_symmetric``, divides by zero for align_corners into one pixel, and refuses the
``axes`` attribute and ``keep_aspect_ratio_policy``. With the roi, scales and sizes constant
(exporters write them so), every Resize here becomes either

- a Resize TVM gets right: ``sizes`` over every axis, no ``axes``, scales equal to the size
  ratios (the common 2x upsampling of detectors and segmenters stays TVM's fast kernel); or
- per resized axis, the interpolation as a constant matrix (linear, cubic: MatMul) or index
  list (nearest: Gather), built by onnx's reference implementation applied to the identity:
  Resize is separable and linear in its input, so this is the spec's own arithmetic.

Resizes with run-time roi, scales or sizes are left to TVM's converter, which refuses them.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto as T

from edgec.errors import CompileError

LARGEST_MATRIX = 1 << 22
"""Elements of one axis' interpolation matrix (16 MiB in float32): beyond, the exact form is refused."""


def constant_values(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return values


def text(attrs: dict, name: str, default: str) -> str:
    value = attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def resize(node: onnx.NodeProto, attrs: dict, elem, shape, values: dict, label) -> list[onnx.NodeProto] | None:
    """The node rewritten as the module docstring says, or None to leave it to TVM."""
    x_shape = shape(node.input[0])
    inputs = [*node.input, "", "", ""][:4]
    if len(node.input) == 2:  # opset 10: (X, scales)
        inputs = [node.input[0], "", node.input[1], ""]
    given = [None if not name else values.get(name) for name in inputs[1:]]
    if x_shape is None or any(name and value is None for name, value in zip(inputs[1:], given)):
        return None
    roi, scales, sizes = (None if v is None or v.size == 0 else v.astype(np.float64) for v in given)
    mode = text(attrs, "mode", "nearest")
    if (scales is None and sizes is None) or 0 in x_shape or mode not in ("nearest", "linear", "cubic"):
        return None  # not a valid Resize, or an empty one: TVM's converter refuses or handles it
    plan = axis_plan(x_shape, attrs, roi, scales, sizes)
    coordinates = text(attrs, "coordinate_transformation_mode", "half_pixel")
    resized = [(axis, scale, out, axis_roi) for axis, scale, out, axis_roi in plan
               if not (out == x_shape[axis] and math.isclose(scale, 1.0) and axis_roi in (None, (0.0, 1.0)))]
    exact_in_tvm = (not attrs.get("antialias", 0) and coordinates != "half_pixel_symmetric"
                    and all(math.isclose(scale, out / x_shape[axis], rel_tol=1e-6) and (out > 1 or x_shape[axis] == 1)
                            for axis, scale, out, _ in resized))
    if exact_in_tvm:
        if "axes" not in attrs and text(attrs, "keep_aspect_ratio_policy", "stretch") == "stretch" and sizes is not None:
            return None  # already TVM's form
        return canonical_resize(node, attrs, plan, roi is not None)
    if mode != "nearest" and elem(node.input[0]) != T.FLOAT:
        raise CompileError(f"{label(node)}: {mode} Resize of {onnx.helper.tensor_dtype_to_string(elem(node.input[0]))} "
                           "with these scales is supported in float32 only")
    return interpolation_nodes(node, attrs, x_shape, resized, mode, coordinates, label)


def axis_plan(x_shape: list[int], attrs: dict, roi, scales, sizes) -> list[tuple[int, float, int, tuple | None]]:
    """(axis, scale, output size, (roi start, roi end) or None) for every axis, as ONNX computes them."""
    rank = len(x_shape)
    axes = [a % rank for a in attrs.get("axes", range(rank))]
    scale = [1.0] * rank
    out = list(x_shape)
    if sizes is not None:
        for a, size in zip(axes, sizes):
            out[a], scale[a] = int(size), size / x_shape[a]
        policy = text(attrs, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            chosen = (min if policy == "not_larger" else max)(scale[a] for a in axes)
            for a in axes:
                scale[a], out[a] = chosen, int(chosen * x_shape[a] + 0.5)
    else:
        for a, factor in zip(axes, scales):
            scale[a], out[a] = float(factor), int(factor * x_shape[a])
    rois = [None] * rank
    if roi is not None:
        for i, a in enumerate(axes):
            rois[a] = (float(roi[i]), float(roi[len(axes) + i]))
    return [(a, scale[a], out[a], rois[a]) for a in range(rank)]


def canonical_resize(node: onnx.NodeProto, attrs: dict, plan, with_roi: bool) -> list[onnx.NodeProto]:
    """The same Resize with every axis' size given and no ``axes``: the form TVM converts."""
    out = node.output[0]
    sizes = np.array([size for _, _, size, _ in plan], np.int64)
    nodes = [onnx.helper.make_node("Constant", [], [f"{out}.sizes"], name=f"{out}.sizes",
                                   value=onnx.numpy_helper.from_array(sizes))]
    if with_roi:
        roi = np.array([r[0] if r else 0.0 for *_, r in plan] + [r[1] if r else 1.0 for *_, r in plan], np.float32)
        nodes.append(onnx.helper.make_node("Constant", [], [f"{out}.roi"], name=f"{out}.roi",
                                           value=onnx.numpy_helper.from_array(roi)))
    kept = {k: v for k, v in attrs.items() if k not in ("axes", "keep_aspect_ratio_policy")}
    inputs = [node.input[0], f"{out}.roi" if with_roi else "", "", f"{out}.sizes"]
    return nodes + [onnx.helper.make_node("Resize", inputs, [out], name=node.name, **kept)]


def interpolation_nodes(node, attrs, x_shape, resized, mode, coordinates, label) -> list[onnx.NodeProto]:
    """One MatMul (or Gather, for nearest) per resized axis, then the extrapolation value where
    tf_crop_and_resize samples outside the input."""
    from onnx.reference.ops import op_resize as reference

    rank, out = len(x_shape), node.output[0]
    coefficients = coefficient_function(attrs, mode, reference)
    nodes, current, outside = [], node.input[0], None
    for step, (axis, scale, size, axis_roi) in enumerate(resized):
        if size * x_shape[axis] > LARGEST_MATRIX:
            raise CompileError(f"{label(node)}: resizing axis {axis} from {x_shape[axis]} to {size} with these scales "
                               f"needs a {size}x{x_shape[axis]} interpolation matrix, larger than edgec builds")
        matrix = reference._interpolate_1d_along_axis(
            np.eye(x_shape[axis]), 0, scale, size, coefficients, roi=axis_roi, extrapolation_value=0.0,
            coordinate_transformation_mode=coordinates, exclude_outside=bool(attrs.get("exclude_outside", 0)))
        if coordinates == "tf_crop_and_resize":
            _, extrapolated = reference._compute_x_ori(coordinates, np.arange(size, dtype=np.float64), scale,
                                                       x_shape[axis], scale * x_shape[axis], size, axis_roi)
            mask_shape = [1] * rank
            mask_shape[axis] = size
            mask = extrapolated.reshape(mask_shape)
            outside = mask if outside is None else outside | mask
        name = f"{out}.axis{axis}"
        target = out if step == len(resized) - 1 and outside is None else name
        nodes += along_axis(current, target, matrix, axis, rank, mode, name)
        current = target
    if outside is not None:
        fill = np.array(attrs.get("extrapolation_value", 0.0), np.float32)
        nodes += [onnx.helper.make_node("Constant", [], [f"{out}.outside"], name=f"{out}.outside",
                                        value=onnx.numpy_helper.from_array(outside)),
                  onnx.helper.make_node("Constant", [], [f"{out}.fill"], name=f"{out}.fill",
                                        value=onnx.numpy_helper.from_array(fill)),
                  onnx.helper.make_node("Where", [f"{out}.outside", f"{out}.fill", current], [out],
                                        name=node.name or out)]
    return nodes


def coefficient_function(attrs: dict, mode: str, reference):
    """The reference's kernel for ``mode``, as its Resize picks it."""
    if mode == "nearest":
        nearest = text(attrs, "nearest_mode", "round_prefer_floor")
        return lambda ratio, scale: reference._nearest_coeffs(ratio, mode=nearest)
    a = attrs.get("cubic_coeff_a", -0.75)
    if mode == "cubic":
        kernel = reference._cubic_coeffs_antialias if attrs.get("antialias", 0) else reference._cubic_coeffs
        return lambda ratio, scale: kernel(ratio, scale, A=a)
    return reference._linear_coeffs_antialias if attrs.get("antialias", 0) else reference._linear_coeffs


def along_axis(source: str, target: str, matrix: np.ndarray, axis: int, rank: int, mode: str,
               name: str) -> list[onnx.NodeProto]:
    """``target`` = ``source`` interpolated along ``axis`` by ``matrix`` (out x in)."""
    if mode == "nearest":  # one 1 per row: gathering is exact where a product with inf would give NaN
        indices = onnx.numpy_helper.from_array(matrix.argmax(axis=1).astype(np.int64))
        return [onnx.helper.make_node("Constant", [], [f"{name}.indices"], name=f"{name}.indices", value=indices),
                onnx.helper.make_node("Gather", [source, f"{name}.indices"], [target], name=name, axis=axis)]
    weights = onnx.numpy_helper.from_array(matrix.T.astype(np.float32))
    nodes = [onnx.helper.make_node("Constant", [], [f"{name}.weights"], name=f"{name}.weights", value=weights)]
    if axis == rank - 1:
        return nodes + [onnx.helper.make_node("MatMul", [source, f"{name}.weights"], [target], name=name)]
    last = [*range(axis), *range(axis + 1, rank), axis]
    back = list(np.argsort(last))
    return nodes + [
        onnx.helper.make_node("Transpose", [source], [f"{name}.last"], name=f"{name}.last", perm=last),
        onnx.helper.make_node("MatMul", [f"{name}.last", f"{name}.weights"], [f"{name}.moved"], name=f"{name}.moved"),
        onnx.helper.make_node("Transpose", [f"{name}.moved"], [target], name=name, perm=[int(p) for p in back]),
    ]
