"""ONNX-level rewrites and refusals before TVM's ONNX frontend, in ``prepare_for_tvm``'s order.

TVM's frontend converts ~190 ops, some of them wrongly in cases edgec can see beforehand.
Each rule here either rewrites the node into ONNX that TVM converts right, or refuses the
model with one line naming the op, the node and the reason; a silent wrong result is
never an option. Rules (ConvInteger first, in ``qoperator``):

- ``refuse_dtypes``: tensors TVM's CPU code gets wrong or cannot hold (sub-byte, float8).
- ``fix_ops``, node by node:
  - IsInf with one sign (TVM ignores the flags): ``x == +inf`` or ``x == -inf``;
  - ConvTranspose with ``output_shape`` (TVM ignores it): the pads and output padding;
  - BitShift by a negative amount or the width or more (undefined in LLVM): ONNX's fill;
  - SpaceToDepth in CRD order (TVM ignores the mode): reshape, transpose, reshape;
  - float ReduceMax/ReduceMin over only infinities or nothing (TVM starts from the largest
    finite value): the infinity, as attention's fully masked rows need;
  - float16 Attention (TVM's half-precision matmuls and softmax round off the reference by
    more than the tolerance): in float32, as onnxruntime does;
  - integer Pow, and Pow of mixed dtypes (TVM's power takes floats of one dtype): through
    float64, or the exponent cast to the base's dtype;
  - float Mod with ``fmod=0`` (TVM's floor modulo is NaN for infinite divisors): from
    ``fmod``, as numpy does it;
  - Resize with constant roi, scales and sizes: TVM's form (every axis' size, no ``axes``)
    where TVM's size-ratio coordinates are ONNX's, else exact per-axis interpolation
    (``targets/resize.py``);
  - EyeLike of a static shape (TVM refuses its ``dtype``): a constant;
  - OneHot with constant depth and values (TVM's converter passes the depth wrongly): Equal
    with every class, then Where;
  - Split into parts of size 0 (TVM wants increasing split points): empty Slices for those;
  - ops TVM has no converter for: LpNormalization, ReverseSequence, CumProd (a product over
    a masked square, along a constant axis), and
    RNN, GRU and LSTM unrolled over their static sequence length (their activations and
    clip: ``targets/recurrent.py``);
  - Dropout's mask in inference (TVM returns it as float32): all true, bool; Dropout with a
    constant ratio of 0, in training mode too: the input and that mask;
  - refused: BatchNormalization and Dropout in training mode, RoiAlign's max mode.
- ``expand_functions``: ops TVM cannot convert, or converts wrongly (LayerNormalization's
  Mean/InvStdDev outputs, RMSNormalization over every axis), that ONNX defines as functions
  of other ops become their bodies, their static shape arithmetic folded; ``fix_ops`` then
  runs on the bodies' nodes.
- ``pin_run_time_shapes``: Expand and ConstantOfShape whose shape is a graph input compile to
  the output shape the model declares, and the runtime refuses a value that gives another;
  to a shape computed at run time any other way, they are refused.
- ``fold_shape_outputs``: a graph output made by Shape or Size becomes a constant.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from edgec.errors import CompileError
from edgec.passes.fold_constants import NONDETERMINISTIC

from .qoperator import rewrite_integer_ops
from .recurrent import activations
from .resize import constant_values, resize


def prepare_for_tvm(proto: onnx.ModelProto) -> list[ShapeInput]:
    """Apply every rule, in place; returns the shape inputs the runtime must check."""
    rewrite_integer_ops(proto)
    refuse_dtypes(proto)
    fix_ops(proto)
    expanded = expand_functions(proto)
    fix_ops(proto, lambda node: node.name in expanded)  # the bodies' own ReduceMax, Pow...
    pinned = pin_run_time_shapes(proto)
    fold_shape_outputs(proto)
    return pinned


def fold_shape_outputs(proto: onnx.ModelProto) -> None:
    """A graph output made by Shape or Size of a static value becomes a constant: TVM returns
    a Shape output as a shape tuple, not the int64 tensor ONNX says it is."""
    outputs = {v.name for v in proto.graph.output}
    fold_static(proto, lambda node: node.op_type in ("Shape", "Size") and node.output[0] in outputs)


def label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{node.name or node.output[0]}'"


T = onnx.TensorProto
UNSUPPORTED_DTYPES = {
    **dict.fromkeys((T.INT2, T.UINT2, T.INT4, T.UINT4, T.FLOAT4E2M1),
                    "TVM's CPU code does not pack sub-byte tensors"),
    **dict.fromkeys((T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ),
                    "TVM's float8 conversions do not follow ONNX for NaN, infinity and saturation"),
}
"""Element types the lowering refuses, and why."""
UNSUPPORTED_RESULTS = {T.FLOAT8E8M0: "TVM's conversion to float8_e8m0 does not round as ONNX does"}
"""Element types the lowering reads but refuses to compute, and why."""


def refuse_dtypes(proto: onnx.ModelProto) -> None:
    """Refuse, naming the first node that reads or makes one, a tensor of an unsupported dtype."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info, *inferred.output]
             if v.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in proto.graph.initializer})
    for node in proto.graph.node:
        for name, table in [*((n, UNSUPPORTED_DTYPES) for n in node.input),
                            *((n, {**UNSUPPORTED_DTYPES, **UNSUPPORTED_RESULTS}) for n in node.output)]:
            if types.get(name) in table:
                dtype = onnx.helper.tensor_dtype_to_string(types[name]).removeprefix("TensorProto.").lower()
                raise CompileError(f"{node.op_type} node '{node.name or node.output[0]}': {dtype} tensor '{name}' "
                                   f"is not supported: {table[types[name]]}")


SHAPE_INPUTS = {"Expand": 1, "ConstantOfShape": 0}
"""Ops whose output shape is an input's value. TVM's frontend takes a value computed at run
time but gets it wrong: Expand keeps the input's dims, ConstantOfShape fails to legalize."""


@dataclass(frozen=True)
class ShapeInput:
    """A graph input whose value is a shape, compiled as the one output shape the model declares.

    The runtime checks each run's value against it: ``broadcast(data_shape, value)`` must be
    ``shape`` (Expand broadcasts its data; ConstantOfShape has none, so ``data_shape`` is [])."""

    input: str
    node: str
    op: str
    data_shape: list[int]
    shape: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def pin_run_time_shapes(proto: onnx.ModelProto) -> list[ShapeInput]:
    """Expand and ConstantOfShape whose shape operand is a graph input, and whose output shape
    the model declares, compile to that shape (in place); the returned list is what the
    runtime checks each run. Any other op whose output shape would be decided by values only
    known at run time (something computed from a graph input) is refused, naming the node;
    ``Shape`` of a statically shaped value is known at compile time and does not count."""
    inputs = {v.name for v in proto.graph.input} - {t.name for t in proto.graph.initializer}
    dynamic = set(inputs)
    declared = {v.name: static_shape(v.type) for v in [*proto.graph.value_info, *proto.graph.output]}
    data_shapes = {v.name: static_shape(v.type) for v in [*proto.graph.input, *proto.graph.value_info]}
    pinned: list[ShapeInput] = []
    for node in list(proto.graph.node):
        position = SHAPE_INPUTS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if position is not None and position < len(node.input) and node.input[position] in dynamic:
            source, shape = node.input[position], declared.get(node.output[0])
            data_shape = data_shapes.get(node.input[0]) if node.op_type == "Expand" else []
            if source not in inputs or shape is None or data_shape is None:
                raise CompileError(f"{label(node)}: its output shape is the value of '{source}', decided at run "
                                   "time; edgec compiles static shapes only")
            pinned.append(ShapeInput(source, node.name or node.output[0], node.op_type, data_shape, shape))
            const = f"{node.output[0]}.shape"
            proto.graph.node.insert(list(proto.graph.node).index(node), constant(const, np.array(shape, np.int64)))
            node.input[position] = const
        if node.op_type not in ("Shape", "Size") and any(name in dynamic for name in node.input):
            dynamic.update(node.output)
    return pinned


def static_shape(type_proto: onnx.TypeProto) -> list[int] | None:
    """A tensor type's dims, if every one is a fixed size."""
    if not type_proto.tensor_type.HasField("shape"):
        return None
    dims = type_proto.tensor_type.shape.dim
    return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None


EXPAND_ALWAYS = frozenset({"Attention"})
"""Ops TVM's frontend has a converter for that is not the ONNX op's: its ``Attention`` is
com.microsoft's (``num_heads``, packed QKV weights), not opset 23's."""


def converted_wrongly(node: onnx.NodeProto, types: dict) -> bool:
    """Nodes TVM's converter gets wrong that its ONNX function gets right: LayerNormalization's
    Mean/InvStdDev outputs (0-d placeholders), RMSNormalization over every axis (its
    legalization fails)."""
    if node.op_type == "LayerNormalization":
        return any(node.output[1:])
    if node.op_type == "RMSNormalization":
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        rank = len(types[node.input[0]].tensor_type.shape.dim) if node.input[0] in types else None
        return rank is not None and axis % rank == 0
    return False


def expand_functions(proto: onnx.ModelProto, rounds: int = 4) -> set[str]:
    """Nodes TVM's frontend cannot convert, when ONNX defines the op as a function of other
    ops (Attention, Celu, CenterCropPad, the losses, the window functions...), become that
    function's body, in place; a body's own function ops are expanded in the next round.
    Shapes are static here, so the bodies' shape arithmetic is folded to constants (TVM
    imports ``Shape`` as a ShapeExpr its elementwise ops refuse). Other unsupported ops are
    left for TVM to name. Returns the names of the nodes the bodies brought in."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convertible = set(_get_convert_map()) - EXPAND_ALWAYS
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    expanded: set[str] = set()
    for _ in range(rounds):
        inferred = onnx.shape_inference.infer_shapes(proto).graph
        types = {v.name: v.type for v in [*inferred.input, *inferred.value_info, *inferred.output]}
        types.update({t.name: onnx.helper.make_tensor_type_proto(t.data_type, t.dims) for t in proto.graph.initializer})
        nodes: list[onnx.NodeProto] = []
        count = 0
        for node in proto.graph.node:
            found = None
            if node.domain in ("", "ai.onnx") and (node.op_type not in convertible and node.op_type != "Constant"
                                                   or converted_wrongly(node, types)):
                found = function_body(node, opset, types)
            if found is None:
                nodes.append(node)
                continue
            count += 1
            body, bound = found
            new = inline(bound, body, f"{node.name or node.output[0]}.{node.op_type}{len(expanded) + count}.")
            expanded.update(n.name for n in new)
            nodes.extend(new)
        if not count:
            break
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    if expanded:
        fold_static(proto, lambda node: node.name in expanded)
    return expanded


FOLD_LIMIT_BYTES = 1 << 16


def fold_static(proto: onnx.ModelProto, chosen, rounds: int = 8) -> None:
    """Among the nodes ``chosen(node)`` is true for: ``Shape`` and ``Size`` of a value whose shape is
    static, and nodes whose inputs are all such constants (small outputs only), become
    ``Constant`` nodes, evaluated with onnx's reference implementation."""
    for _ in range(rounds):  # a folded shape can make the next value's shape static
        if not _fold_round(proto, chosen):
            return


def _fold_round(proto: onnx.ModelProto, chosen) -> bool:
    from onnx.reference import ReferenceEvaluator

    inferred = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {}
    for v in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = v.type.tensor_type.shape.dim if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape") else None
        if dims is not None and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    constants: dict[str, np.ndarray] = {}
    for node in proto.graph.node:
        if node.op_type == "Constant" and not node.input:
            try:
                constants[node.output[0]] = _constant_value(node)
            except ValueError:  # sparse or string forms: not folded through
                pass
    opsets = {o.domain: o.version for o in proto.opset_import}
    folded, changed = [], 0
    for node in proto.graph.node:
        if not chosen(node) or node.op_type == "Constant":
            folded.append(node)
            continue
        values = None
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            shape = np.array(shapes[node.input[0]], dtype=np.int64)
            if node.op_type == "Size":
                values = [np.array(np.prod(shape), dtype=np.int64)]
            else:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                values = [shape[attrs.get("start", 0):attrs.get("end", len(shape))]]  # ONNX clamps as Python slices do
        elif (node.input and node.op_type not in NONDETERMINISTIC
              and all(name == "" or name in constants for name in node.input)
              and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)):
            try:
                feeds = {name: constants[name] for name in node.input if name}
                graph = onnx.helper.make_graph(
                    [node], "fold",
                    [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                     for name, v in feeds.items()],
                    [onnx.helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o])
                evaluator = ReferenceEvaluator(onnx.helper.make_model(
                    graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]))
                values = evaluator.run(None, feeds)
            except Exception:  # left to TVM, which will name what it cannot do
                values = None
            if values is not None and any(np.asarray(v).nbytes > FOLD_LIMIT_BYTES for v in values):
                values = None
        if values is None:
            folded.append(node)
            continue
        changed += 1
        for output, value in zip([o for o in node.output if o], values):
            value = np.asarray(value)
            constants[output] = value
            folded.append(onnx.helper.make_node("Constant", [], [output], name=f"{node.name}.folded",
                                                value=onnx.numpy_helper.from_array(value, output)))
    del proto.graph.node[:]
    proto.graph.node.extend(folded)
    return changed > 0


DENSE_CONSTANT_FORMS = ("value_float", "value_int", "value_floats", "value_ints")


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    """The value of a dense ``Constant`` node."""
    attr = node.attribute[0]
    value = onnx.helper.get_attribute_value(attr)
    if attr.name == "value":
        return onnx.numpy_helper.to_array(value)
    if attr.name in ("value_float", "value_int"):
        return np.array(value, dtype=np.float32 if attr.name == "value_float" else np.int64)
    if attr.name in ("value_floats", "value_ints"):
        return np.array(value, dtype=np.float32 if attr.name == "value_floats" else np.int64)
    raise ValueError(f"Constant with {attr.name}")


def function_body(node: onnx.NodeProto, opset: int, types: dict) -> tuple[onnx.FunctionProto, onnx.NodeProto] | None:
    """The op's ONNX function for ``opset`` (the newest at or below it, else the oldest),
    context-dependent ones built for the node's attributes and input types, and the node
    with the schema's attribute defaults filled in; None if the op has no function or a
    body needs an input type shape inference did not give."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None
    plain, dependent = list(schema.function_opset_versions), list(schema.context_dependent_function_opset_versions)
    versions = sorted(plain + dependent)
    if not versions:
        return None
    version = max((v for v in versions if v <= opset), default=versions[0])
    bound = onnx.NodeProto()
    bound.CopyFrom(node)
    given = {a.name for a in node.attribute}
    bound.attribute.extend(a.default_value for name, a in schema.attributes.items()
                           if name not in given and a.default_value.name)
    if version in plain:
        return onnx.FunctionProto.FromString(schema.get_function_with_opset_version(version)), bound
    if any(name and name not in types for name in node.input):
        return None
    input_types = [(types[name] if name else onnx.TypeProto()).SerializeToString() for name in node.input]
    text = schema.get_context_dependent_function_with_opset_version(version, bound.SerializeToString(), input_types)
    return onnx.FunctionProto.FromString(text), bound


def inline(node: onnx.NodeProto, body: onnx.FunctionProto, prefix: str) -> list[onnx.NodeProto]:
    """The body's nodes with its formal inputs, outputs and attribute references bound to the node's."""
    names = {formal: actual for formal, actual in zip(body.input, node.input)}
    names.update({formal: actual for formal, actual in zip(body.output, node.output) if actual})
    attributes = {a.name: a for a in node.attribute}
    for name, default in ((a.name, a) for a in body.attribute_proto):
        attributes.setdefault(name, default)

    def rename(name: str) -> str:
        return names.get(name, "") if name in body.input and name not in names else names.get(name, name and prefix + name)

    inlined = []
    for inner in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or inner.op_type)
        del copy.input[:], copy.output[:], copy.attribute[:]
        copy.input.extend(rename(n) for n in inner.input)
        copy.output.extend(rename(n) for n in inner.output)
        for attribute in inner.attribute:
            if attribute.ref_attr_name:
                if attribute.ref_attr_name not in attributes:
                    continue  # an optional attribute the node leaves out
                bound = onnx.AttributeProto()
                bound.CopyFrom(attributes[attribute.ref_attr_name])
                bound.name = attribute.name
                copy.attribute.append(bound)
            else:
                copy.attribute.append(attribute)
        if copy.op_type == "Constant" and copy.attribute and copy.attribute[0].name in DENSE_CONSTANT_FORMS:
            value = _constant_value(copy)  # TVM's Constant converter reads only the tensor form
            del copy.attribute[:]
            copy.attribute.append(onnx.helper.make_attribute("value", onnx.numpy_helper.from_array(value)))
        inlined.append(copy)
    return inlined


FLOATS = (T.FLOAT, T.FLOAT16, T.DOUBLE, T.BFLOAT16)


def fix_ops(proto: onnx.ModelProto, chosen=lambda node: True) -> None:
    """The op rules of the module docstring, in place, on the nodes ``chosen`` picks."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    tensors = {v.name: v.type.tensor_type for v in [*inferred.input, *inferred.value_info, *inferred.output]
               if v.type.HasField("tensor_type")}
    tensors.update({t.name: onnx.helper.make_tensor_type_proto(t.data_type, t.dims).tensor_type
                    for t in proto.graph.initializer})

    def elem(name: str) -> int | None:
        return tensors[name].elem_type if name in tensors else None

    def shape(name: str) -> list[int] | None:
        if name not in tensors or not tensors[name].HasField("shape"):
            return None
        dims = tensors[name].shape.dim
        return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    values = constant_values(proto)
    rewritten: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type if node.domain in ("", "ai.onnx") and chosen(node) else None
        if op == "BatchNormalization" and attrs.get("training_mode", 0):
            raise CompileError(f"{label(node)}: training mode (batch statistics, running mean and variance "
                               "updates) is not supported; export the model for inference")
        if op == "Dropout" and len(node.input) > 1 and constant_zero(proto, node.input[1]):
            rewritten.extend(_dropout_nothing(node, shape))  # ratio 0 keeps every element, in training too
            continue
        if op == "Dropout" and len(node.input) > 2 and node.input[2] and not constant_false(proto, node.input[2]):
            raise CompileError(f"{label(node)}: training mode (a random mask, given by input '{node.input[2]}') is "
                               "not supported; export the model for inference, or make training_mode a constant false")
        if op == "RoiAlign" and attrs.get("mode", b"avg") == b"max":
            raise CompileError(f"{label(node)}: RoiAlign's max mode is not supported (TVM's max pooling of the "
                               "samples differs from ONNX's)")
        fix = {"IsInf": _is_inf, "BitShift": _bit_shift, "ConvTranspose": _conv_transpose_output_shape,
               "SpaceToDepth": _space_to_depth_crd, "ReduceMax": _reduce_to_infinity,
               "ReduceMin": _reduce_to_infinity, "Attention": _attention_in_float32,
               "Pow": _integer_pow, "Mod": _float_floor_mod,
               "LpNormalization": _lp_normalization,
               "ReverseSequence": _reverse_sequence, "Dropout": _dropout_mask, "EyeLike": _eye_like}.get(op)
        if op in GATES:
            fix = functools.partial(_recurrent, opset=opset)
        if op == "Resize":
            fix = functools.partial(resize, values=values, label=label)
        if op == "OneHot":
            fix = functools.partial(_one_hot, values=values)
        if op == "Split":
            fix = functools.partial(_split_with_empty_parts, values=values)
        if op == "CumProd":
            fix = functools.partial(_cumulative_product, values=values)
        replacement = fix(node, attrs, elem, shape) if fix else None
        rewritten.extend(replacement if replacement is not None else [node])
    del proto.graph.node[:]
    proto.graph.node.extend(rewritten)


def constant_false(proto: onnx.ModelProto, name: str) -> bool:
    """``name`` is an initializer or Constant holding false (Dropout's training_mode off)."""
    for tensor in proto.graph.initializer:
        if tensor.name == name:
            return not onnx.numpy_helper.to_array(tensor).any()
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute[0].name == "value":
            return not onnx.numpy_helper.to_array(node.attribute[0].t).any()
    return False


def constant_zero(proto: onnx.ModelProto, name: str) -> bool:
    """``name`` is an initializer or Constant holding zero (Dropout's ratio 0)."""
    return bool(name) and constant_false(proto, name)


def _dropout_nothing(node: onnx.NodeProto, shape) -> list[onnx.NodeProto]:
    """Dropout with ratio 0, in training mode or not: the input itself, and an all-true mask if asked."""
    nodes = [onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name or node.output[0])]
    if len(node.output) > 1 and node.output[1]:
        x_shape = shape(node.input[0])
        if x_shape is None:
            raise CompileError(f"{label(node)}: its mask needs a static input shape")
        nodes.append(constant(node.output[1], np.ones(x_shape, dtype=bool)))
    return nodes


def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return onnx.helper.make_node("Constant", [], [name], name=name, value=onnx.numpy_helper.from_array(np.asarray(value), name))


def _is_inf(node, attrs, elem, shape):
    """IsInf with one sign only: x == +inf or x == -inf (neither: x == NaN, always false)."""
    positive, negative = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    if positive and negative or elem(node.input[0]) is None:
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem(node.input[0]))
    value = np.inf if positive else -np.inf if negative else np.nan
    bound = f"{node.output[0]}.bound"
    return [constant(bound, np.array(value, dtype=dtype)),
            onnx.helper.make_node("Equal", [node.input[0], bound], [node.output[0]], name=node.name)]


def _bit_shift(node, attrs, elem, shape):
    """BitShift by a negative amount or the width or more: ONNX says the sign fill alone (-1 for
    a right shift of a negative signed value, else 0); LLVM leaves it undefined."""
    if elem(node.input[0]) is None:
        return None
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem(node.input[0])))
    x, s = node.input
    out = node.output[0]

    def name(suffix: str) -> str:
        return f"{out}.{suffix}"

    nodes = [
        onnx.helper.make_node("BitShift", [x, s], [name("shifted")], name=node.name, direction=attrs["direction"]),
        constant(name("width"), np.array(dtype.itemsize * 8, dtype=dtype)),
        constant(name("zero"), np.array(0, dtype=dtype)),
        onnx.helper.make_node("Less", [s, name("width")], [name("below")], name=name("below")),
        onnx.helper.make_node("GreaterOrEqual", [s, name("zero")], [name("nonnegative")], name=name("nonnegative")),
        onnx.helper.make_node("And", [name("below"), name("nonnegative")], [name("in_range")], name=name("in_range")),
    ]
    fill = name("zero")
    if attrs["direction"] == b"RIGHT" and dtype.kind == "i":
        nodes += [constant(name("minus_one"), np.array(-1, dtype=dtype)),
                  onnx.helper.make_node("Less", [x, name("zero")], [name("negative")], name=name("negative")),
                  onnx.helper.make_node("Where", [name("negative"), name("minus_one"), name("zero")], [name("fill")],
                                        name=name("fill"))]
        fill = name("fill")
    return nodes + [onnx.helper.make_node("Where", [name("in_range"), name("shifted"), fill], [out], name=name("where"))]


def _conv_transpose_output_shape(node, attrs, elem, shape):
    """ConvTranspose with ``output_shape``: the pads (and output padding, where the shape asks
    for more than the kernel gives) that make that shape, as ONNX defines them."""
    if "output_shape" not in attrs:
        return None
    x, w = shape(node.input[0]), shape(node.input[1])
    if x is None or w is None:
        raise CompileError(f"{label(node)}: output_shape needs the input and weight shapes, which are not static")
    spatial = len(x) - 2
    wanted = list(attrs["output_shape"])[-spatial:]
    strides = attrs.get("strides", [1] * spatial)
    dilations = attrs.get("dilations", [1] * spatial)
    kernel = attrs.get("kernel_shape", w[2:])
    extra = list(attrs.get("output_padding", [0] * spatial))
    begin, end = [0] * spatial, [0] * spatial
    for i in range(spatial):
        total = strides[i] * (x[2 + i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1 - wanted[i]
        if total < 0:
            extra[i] -= total
            continue
        small, large = total // 2, total - total // 2
        begin[i], end[i] = (large, small) if attrs.get("auto_pad", b"NOTSET") == b"SAME_UPPER" else (small, large)
    fixed = onnx.NodeProto()
    fixed.CopyFrom(node)
    del fixed.attribute[:]
    fixed.attribute.extend(a for a in node.attribute if a.name not in ("output_shape", "auto_pad", "pads", "output_padding"))
    fixed.attribute.extend([onnx.helper.make_attribute("pads", begin + end),
                            onnx.helper.make_attribute("output_padding", extra)])
    return [fixed]


def _space_to_depth_crd(node, attrs, elem, shape):
    """SpaceToDepth in CRD order (TVM's converter ignores the mode): reshape, transpose, reshape."""
    if attrs.get("mode", b"DCR") != b"CRD":
        return None
    x = shape(node.input[0])
    if x is None:
        raise CompileError(f"{label(node)}: CRD mode needs a static input shape")
    n, c, h, w = x
    b = attrs["blocksize"]
    out = node.output[0]
    return [
        constant(f"{out}.split", np.array([n, c, h // b, b, w // b, b], dtype=np.int64)),
        onnx.helper.make_node("Reshape", [node.input[0], f"{out}.split"], [f"{out}.blocks"], name=f"{out}.blocks"),
        onnx.helper.make_node("Transpose", [f"{out}.blocks"], [f"{out}.moved"], name=f"{out}.moved", perm=[0, 1, 3, 5, 2, 4]),
        constant(f"{out}.merge", np.array([n, c * b * b, h // b, w // b], dtype=np.int64)),
        onnx.helper.make_node("Reshape", [f"{out}.moved", f"{out}.merge"], [out], name=node.name or out),
    ]


def _reduce_to_infinity(node, attrs, elem, shape):
    """Float ReduceMax (ReduceMin) that is -inf (+inf) where no element differs from it: TVM's
    reduction starts from the lowest (highest) finite value, so an all-infinite or empty
    reduction gave that instead. A bool one (TVM has no lowest bool) reduces uint8."""
    if elem(node.input[0]) == T.BOOL:
        return _reduce_bool_as_uint8(node)
    if elem(node.input[0]) not in FLOATS:
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem(node.input[0]))
    out = node.output[0]
    infinity = -np.inf if node.op_type == "ReduceMax" else np.inf
    reduced, counted = onnx.NodeProto(), onnx.NodeProto()
    reduced.CopyFrom(node)
    reduced.output[0] = f"{out}.reduced"
    counted.CopyFrom(node)
    counted.name, counted.op_type = f"{out}.any_other", "ReduceMax"
    counted.input[0], counted.output[0] = f"{out}.other_int", f"{out}.any_other"
    return [
        reduced,
        constant(f"{out}.infinity", np.array(infinity, dtype=dtype)),
        onnx.helper.make_node("Equal", [node.input[0], f"{out}.infinity"], [f"{out}.is_infinity"], name=f"{out}.is_infinity"),
        onnx.helper.make_node("Not", [f"{out}.is_infinity"], [f"{out}.other"], name=f"{out}.other"),
        onnx.helper.make_node("Cast", [f"{out}.other"], [f"{out}.other_int"], name=f"{out}.other_int", to=T.INT32),
        counted,
        constant(f"{out}.one", np.array(1, dtype=np.int32)),
        onnx.helper.make_node("Less", [f"{out}.any_other", f"{out}.one"], [f"{out}.none_other"], name=f"{out}.none_other"),
        onnx.helper.make_node("Where", [f"{out}.none_other", f"{out}.infinity", f"{out}.reduced"], [out], name=node.name or out),
    ]


def _reduce_bool_as_uint8(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    out = node.output[0]
    reduced = onnx.NodeProto()
    reduced.CopyFrom(node)
    reduced.input[0], reduced.output[0], reduced.name = f"{out}.uint8", f"{out}.reduced", f"{out}.reduced"
    return [onnx.helper.make_node("Cast", [node.input[0]], [f"{out}.uint8"], name=f"{out}.uint8", to=T.UINT8),
            reduced,
            onnx.helper.make_node("Cast", [f"{out}.reduced"], [out], name=node.name or out, to=T.BOOL)]


def _one_hot(node, attrs, elem, shape, values):
    """OneHot with a constant depth and values (TVM's converter passes the depth wrongly): a
    comparison of the indices, negative ones counted from the end, with every class."""
    indices, depth_name, values_name = node.input
    rank = len(shape(indices)) if shape(indices) is not None else None
    if rank is None or depth_name not in values or values_name not in values:
        return None
    depth = int(values[depth_name].reshape(-1)[0])
    axis = attrs.get("axis", -1) % (rank + 1)
    off, on = values[values_name].reshape(-1)
    out = node.output[0]
    classes = np.arange(depth, dtype=np.int64).reshape([depth] + [1] * (rank - axis))
    return [
        onnx.helper.make_node("Cast", [indices], [f"{out}.index"], name=f"{out}.index", to=T.INT64),
        constant(f"{out}.depth", np.array(depth, np.int64)),
        constant(f"{out}.zero", np.array(0, np.int64)),
        onnx.helper.make_node("Less", [f"{out}.index", f"{out}.zero"], [f"{out}.negative"], name=f"{out}.negative"),
        onnx.helper.make_node("Add", [f"{out}.index", f"{out}.depth"], [f"{out}.from_end"], name=f"{out}.from_end"),
        onnx.helper.make_node("Where", [f"{out}.negative", f"{out}.from_end", f"{out}.index"], [f"{out}.class"],
                              name=f"{out}.class"),
        constant(f"{out}.axis", np.array([axis], np.int64)),
        onnx.helper.make_node("Unsqueeze", [f"{out}.class", f"{out}.axis"], [f"{out}.wanted"], name=f"{out}.wanted"),
        constant(f"{out}.classes", classes),
        onnx.helper.make_node("Equal", [f"{out}.wanted", f"{out}.classes"], [f"{out}.hot"], name=f"{out}.hot"),
        constant(f"{out}.on", np.array(on)),
        constant(f"{out}.off", np.array(off)),
        onnx.helper.make_node("Where", [f"{out}.hot", f"{out}.on", f"{out}.off"], [out], name=node.name or out),
    ]


def _split_with_empty_parts(node, attrs, elem, shape, values):
    """Split with parts of size 0 (TVM requires increasing split points): the other parts split,
    each empty one an empty Slice."""
    given = node.input[1] if len(node.input) > 1 and node.input[1] else None
    sizes = values.get(given) if given else np.array(attrs.get("split", []))
    if sizes is None or sizes.size == 0 or sizes.all():
        return None
    axis, out = attrs.get("axis", 0), node.output[0]
    kept = [name for name, size in zip(node.output, sizes) if size]
    nodes = [constant(f"{out}.zero", np.array([0], np.int64)), constant(f"{out}.axis", np.array([axis], np.int64))]
    if kept:
        nodes += [constant(f"{out}.kept_sizes", np.array([size for size in sizes if size], np.int64)),
                  onnx.helper.make_node("Split", [node.input[0], f"{out}.kept_sizes"], kept, name=node.name or out,
                                        axis=axis)]
    return nodes + [onnx.helper.make_node("Slice", [node.input[0], f"{out}.zero", f"{out}.zero", f"{out}.axis"], [name],
                                          name=name) for name, size in zip(node.output, sizes) if not size]


LARGEST_CUMPROD = 1 << 24
"""Elements of CumProd's masked square (its input's size times the axis length) edgec builds."""


def _cumulative_product(node, attrs, elem, shape, values):
    """CumProd along a constant axis (TVM has no converter): y[i] is the product over the j that
    the mask keeps (j <= i; j < i when exclusive; reversed, j >= i or j > i), the others set to 1."""
    x_shape = shape(node.input[0])
    if x_shape is None or node.input[1] not in values:
        return None
    rank, out = len(x_shape), node.output[0]
    axis = int(values[node.input[1]].reshape(-1)[0]) % rank
    length = x_shape[axis]
    if length * int(np.prod(x_shape)) > LARGEST_CUMPROD:
        raise CompileError(f"{label(node)}: CumProd over {length} elements of a {'x'.join(map(str, x_shape))} "
                           "tensor is larger than edgec's form of it (a masked square) allows")
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    keep = {(0, 0): j <= i, (1, 0): j < i, (0, 1): j >= i, (1, 1): j > i}[
        (attrs.get("exclusive", 0), attrs.get("reverse", 0))]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem(node.input[0]))
    return [
        constant(f"{out}.axis", np.array([axis], np.int64)),
        onnx.helper.make_node("Unsqueeze", [node.input[0], f"{out}.axis"], [f"{out}.rows"], name=f"{out}.rows"),
        constant(f"{out}.keep", keep.reshape([length, length] + [1] * (rank - axis - 1))),
        constant(f"{out}.one", np.array(1, dtype)),
        onnx.helper.make_node("Where", [f"{out}.keep", f"{out}.rows", f"{out}.one"], [f"{out}.kept"], name=f"{out}.kept"),
        constant(f"{out}.over", np.array([axis + 1], np.int64)),
        onnx.helper.make_node("ReduceProd", [f"{out}.kept", f"{out}.over"], [out], name=node.name or out, keepdims=0),
    ]


def _eye_like(node, attrs, elem, shape):
    """EyeLike of a static shape is a constant (TVM's converter refuses a ``dtype`` other than the input's)."""
    dims = shape(node.input[0])
    to = attrs.get("dtype", elem(node.input[0]))
    if dims is None or to is None:
        return None
    eye = np.eye(dims[0], dims[1], attrs.get("k", 0), dtype=onnx.helper.tensor_dtype_to_np_dtype(to))
    return [constant(node.output[0], eye)]


def _attention_in_float32(node, attrs, elem, shape):
    """float16 Attention: its float16 inputs cast to float32, its outputs cast back."""
    half = elem(node.input[0])
    if half != T.FLOAT16:  # bfloat16's reference rounds like TVM's bfloat16 more than like float32
        return None
    nodes, inputs = [], []
    for name in node.input:
        if name and elem(name) == half:
            nodes.append(onnx.helper.make_node("Cast", [name], [f"{name}.f32"], name=f"{name}.f32", to=T.FLOAT))
            name = f"{name}.f32"
        inputs.append(name)
    wide = onnx.NodeProto()
    wide.CopyFrom(node)
    del wide.input[:], wide.output[:]
    wide.input.extend(inputs)
    wide.output.extend(f"{o}.f32" if o else "" for o in node.output)
    nodes.append(wide)
    nodes += [onnx.helper.make_node("Cast", [f"{o}.f32"], [o], name=f"{o}.half", to=half) for o in node.output if o]
    return nodes


def _integer_pow(node, attrs, elem, shape):
    """Integer Pow through float64 (exact while the result fits its 53-bit mantissa), cast back;
    a float base with an exponent of another dtype takes the exponent cast to its own."""
    base, exponent = elem(node.input[0]), elem(node.input[1])
    if base is None or exponent is None or base == T.BOOL:
        return None
    out = node.output[0]
    if base in FLOATS:  # TVM's power wants one dtype: the exponent's cast to the base's
        if exponent == base:
            return None
        return [onnx.helper.make_node("Cast", [node.input[1]], [f"{out}.exponent"], name=f"{out}.exponent", to=base),
                onnx.helper.make_node("Pow", [node.input[0], f"{out}.exponent"], [out], name=node.name or out)]
    return [
        onnx.helper.make_node("Cast", [node.input[0]], [f"{out}.base"], name=f"{out}.base", to=T.DOUBLE),
        onnx.helper.make_node("Cast", [node.input[1]], [f"{out}.exponent"], name=f"{out}.exponent", to=T.DOUBLE),
        onnx.helper.make_node("Pow", [f"{out}.base", f"{out}.exponent"], [f"{out}.power"], name=node.name or out),
        onnx.helper.make_node("Cast", [f"{out}.power"], [out], name=f"{out}.cast", to=base),
    ]


def _float_floor_mod(node, attrs, elem, shape):
    """Float Mod with ``fmod=0`` (the divisor's sign): ``r = fmod(x, y)``, plus ``y`` where
    ``r`` is nonzero and its sign differs from ``y``'s, as numpy (ONNX's reference) computes it."""
    if attrs.get("fmod", 0) or elem(node.input[0]) not in FLOATS:
        return None
    x, y = node.input
    out = node.output[0]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem(node.input[0]))

    def step(op: str, inputs: list[str], suffix: str, **attributes) -> onnx.NodeProto:
        return onnx.helper.make_node(op, inputs, [f"{out}.{suffix}"], name=f"{out}.{suffix}", **attributes)

    return [
        step("Mod", [x, y], "fmod", fmod=1),
        constant(f"{out}.zero", np.array(0, dtype=dtype)),
        step("Equal", [f"{out}.fmod", f"{out}.zero"], "is_zero"),
        step("Not", [f"{out}.is_zero"], "nonzero"),
        step("Less", [f"{out}.fmod", f"{out}.zero"], "r_negative"),
        step("Less", [y, f"{out}.zero"], "y_negative"),
        step("Xor", [f"{out}.r_negative", f"{out}.y_negative"], "signs_differ"),
        step("And", [f"{out}.nonzero", f"{out}.signs_differ"], "shift"),
        step("Add", [f"{out}.fmod", y], "shifted"),
        onnx.helper.make_node("Where", [f"{out}.shift", f"{out}.shifted", f"{out}.fmod"], [out], name=node.name or out),
    ]


def _lp_normalization(node, attrs, elem, shape):
    """LpNormalization (no TVM converter): x divided by its L1 or L2 norm along ``axis``, 0 where
    the norm is 0 (as ONNX's reference)."""
    p = attrs.get("p", 2)
    if p not in (1, 2):
        raise CompileError(f"{label(node)}: p={p} is not an ONNX LpNormalization (p is 1 or 2)")
    out = node.output[0]
    return [
        constant(f"{out}.axes", np.array([attrs.get("axis", -1)], dtype=np.int64)),
        onnx.helper.make_node(f"ReduceL{p}", [node.input[0], f"{out}.axes"], [f"{out}.norm"], name=f"{out}.norm", keepdims=1),
        onnx.helper.make_node("Div", [node.input[0], f"{out}.norm"], [f"{out}.quotient"], name=f"{out}.quotient"),
        constant(f"{out}.zero", np.array(0, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem(node.input[0])))),
        onnx.helper.make_node("Equal", [f"{out}.norm", f"{out}.zero"], [f"{out}.is_zero"], name=f"{out}.is_zero"),
        onnx.helper.make_node("Where", [f"{out}.is_zero", f"{out}.zero", f"{out}.quotient"], [out], name=node.name or out),
    ]


GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


class Steps:
    """Nodes built one after another, each output named after the op it replaces."""

    def __init__(self, prefix: str, opset: int):
        self.prefix, self.opset, self.nodes, self.count = prefix, opset, [], 0

    def __call__(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self.count += 1
        output = output or f"{self.prefix}.{op.lower()}{self.count}"
        self.nodes.append(onnx.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def const(self, value: np.ndarray) -> str:
        self.count += 1
        name = f"{self.prefix}.const{self.count}"
        self.nodes.append(constant(name, value))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64))

    def take(self, x: str, index: int, axis: int) -> str:
        """``x``'s slice ``index`` along ``axis``, that axis removed."""
        return self("Gather", [x, self.const(np.array(index, dtype=np.int64))], axis=axis)

    def cut(self, x: str, start: int, end: int, axis: int) -> str:
        return self("Slice", [x, self.ints(start), self.ints(end), self.ints(axis)])

    def unsqueeze(self, x: str, axis: int) -> str:
        if self.opset >= 13:
            return self("Unsqueeze", [x, self.ints(axis)])
        return self("Unsqueeze", [x], axes=[axis])


def _recurrent(node, attrs, elem, shape, opset):
    """RNN, GRU and LSTM (no TVM converter) unrolled over their static sequence length, in
    ONNX's equations: gates from one MatMul of all inputs and one per step of the hidden
    state; ``sequence_lens`` masks the steps past each batch's length (outputs 0, states held)."""
    op = node.op_type
    inputs = list(node.input) + [""] * (8 - len(node.input))
    x_name, w_name, r_name, b_name, lens_name, h0_name = inputs[:6]
    c0_name, p_name = (inputs[6], inputs[7]) if op == "LSTM" else ("", "")
    hidden, gates = attrs["hidden_size"], GATES[op]
    directions = {b"forward": [False], b"reverse": [True], b"bidirectional": [False, True]}[attrs.get("direction", b"forward")]
    x_shape = shape(x_name)
    if x_shape is None:
        raise CompileError(f"{label(node)}: the input's shape is not static")
    batchwise = attrs.get("layout", 0) == 1
    steps_count = x_shape[1] if batchwise else x_shape[0]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem(x_name))
    s = Steps(f"{node.output[0] or node.name or op}.{op.lower()}", opset)
    gate_activations = activations(s, label(node), op, attrs, len(directions), dtype)
    input_forget = op == "LSTM" and attrs.get("input_forget", 0)
    x = s("Transpose", [x_name], perm=[1, 0, 2]) if batchwise else x_name  # [T, B, I]
    def start_state(name: str) -> str | None:  # [D, B, H]
        if not name:
            return None
        return s("Transpose", [name], perm=[1, 0, 2]) if batchwise else name

    h0, c0 = start_state(h0_name), start_state(c0_name)
    batch = x_shape[0] if batchwise else x_shape[1]
    zero_state = s.const(np.zeros((batch, hidden), dtype))  # [B, H]
    lens = s("Cast", [lens_name], to=T.INT64) if lens_name else None
    ys, last_h, last_c = [], [], []
    for d, reverse in enumerate(directions):
        w_t = s("Transpose", [s.take(w_name, d, 0)])  # [I, G*H]
        r_t = s("Transpose", [s.take(r_name, d, 0)])  # [H, G*H]
        projected = s("MatMul", [x, w_t])  # [T, B, G*H]
        r_bias = None
        if b_name:
            bias = s.take(b_name, d, 0)
            projected = s("Add", [projected, s.cut(bias, 0, gates * hidden, 0)])
            r_bias = s.cut(bias, gates * hidden, 2 * gates * hidden, 0)
        peephole = s.take(p_name, d, 0) if p_name else None
        acts = gate_activations[d]
        h = s.take(h0, d, 0) if h0 else zero_state
        c = s.take(c0, d, 0) if c0 else zero_state
        outputs = [None] * steps_count
        for t in (reversed(range(steps_count)) if reverse else range(steps_count)):
            xt = s.take(projected, t, 0)
            recurrent = s("MatMul", [h, r_t])
            if r_bias and op != "GRU":  # GRU's reset gate needs its recurrent bias apart
                recurrent = s("Add", [recurrent, r_bias])
            if op == "RNN":
                new_h, new_c = acts[0](s("Add", [xt, recurrent])), None
            elif op == "GRU":
                new_h, new_c = _gru_step(s, attrs, hidden, xt, recurrent, r_bias, r_t, h, dtype, acts), None
            else:
                new_h, new_c = _lstm_step(s, hidden, s("Add", [xt, recurrent]), peephole, c, acts, input_forget, dtype)
            if lens:  # steps past a batch's length: output 0, state held
                running = s.unsqueeze(s("Less", [s.const(np.array(t, dtype=np.int64)), lens]), 1)
                outputs[t] = s("Where", [running, new_h, zero_state])
                new_h = s("Where", [running, new_h, h])
                new_c = s("Where", [running, new_c, c]) if new_c else None
            else:
                outputs[t] = new_h
            h, c = new_h, new_c if new_c else c
        ys.append(s("Concat", [s.unsqueeze(y, 0) for y in outputs], axis=0))  # [T, B, H]
        last_h.append(s.unsqueeze(h, 0))
        last_c.append(s.unsqueeze(c, 0))
    y_name, yh_name, yc_name = (list(node.output) + ["", ""])[:3]
    if y_name:
        y = s("Concat", [s.unsqueeze(y, 1) for y in ys], axis=1)  # [T, D, B, H]
        s("Transpose", [y], y_name, perm=[2, 0, 1, 3]) if batchwise else s("Identity", [y], y_name)
    for name, states in ((yh_name, last_h), (yc_name, last_c)):
        if name:
            joined = s("Concat", states, axis=0)  # [D, B, H]
            s("Transpose", [joined], name, perm=[1, 0, 2]) if batchwise else s("Identity", [joined], name)
    return s.nodes


def _gru_step(s: Steps, attrs: dict, hidden: int, xt: str, recurrent: str, r_bias: str | None, r_t: str, h: str, dtype,
              acts) -> str:
    """One GRU step (gates z, r, h), its recurrent bias kept apart for the reset gate."""
    def gate(k: int, source: str) -> str:
        return s.cut(source, k * hidden, (k + 1) * hidden, 1)

    def biased(value: str, k: int) -> str:
        return s("Add", [value, s.cut(r_bias, k * hidden, (k + 1) * hidden, 0)]) if r_bias else value

    f, g = acts
    z = f(biased(s("Add", [gate(0, xt), gate(0, recurrent)]), 0))
    r = f(biased(s("Add", [gate(1, xt), gate(1, recurrent)]), 1))
    if attrs.get("linear_before_reset", 0):
        candidate = s("Add", [gate(2, xt), s("Mul", [r, biased(gate(2, recurrent), 2)])])
    else:
        candidate = biased(s("Add", [gate(2, xt), s("MatMul", [s("Mul", [r, h]), s.cut(r_t, 2 * hidden, 3 * hidden, 1)])]), 2)
    one = s.const(np.ones((), dtype))
    return s("Add", [s("Mul", [s("Sub", [one, z]), g(candidate)]), s("Mul", [z, h])])


def _lstm_step(s: Steps, hidden: int, total: str, peephole: str | None, c: str, acts, input_forget: bool,
               dtype) -> tuple[str, str]:
    """One LSTM step (gates i, o, f, c), peepholes on the cell state where given; ``input_forget``
    couples the forget gate to the input gate (f = 1 - i), as onnxruntime does."""
    def gate(k: int, cell: str | None = None) -> str:
        value = s.cut(total, k * hidden, (k + 1) * hidden, 1)
        if peephole and cell:
            value = s("Add", [value, s("Mul", [s.cut(peephole, k * hidden, (k + 1) * hidden, 0), cell])])
        return value

    act_f, act_g, act_h = acts
    i = act_f(gate(0, c))
    f = s("Sub", [s.const(np.ones((), dtype)), i]) if input_forget else act_f(gate(2, c))
    new_c = s("Add", [s("Mul", [f, c]), s("Mul", [i, act_g(gate(3))])])
    o = act_f(gate(1, new_c))
    return s("Mul", [o, act_h(new_c)]), new_c


def _reverse_sequence(node, attrs, elem, shape):
    """ReverseSequence (no TVM converter): a GatherElements along the time axis, index
    ``len - 1 - t`` below each batch's length and ``t`` from there on."""
    x_shape = shape(node.input[0])
    if x_shape is None:
        raise CompileError(f"{label(node)}: the input's shape is not static")
    batch_axis, time_axis = attrs.get("batch_axis", 1), attrs.get("time_axis", 0)
    s = Steps(node.output[0], 13)
    steps = x_shape[time_axis]
    index_shape = [1] * len(x_shape)
    index_shape[time_axis] = steps
    lens_shape = [1] * len(x_shape)
    lens_shape[batch_axis] = x_shape[batch_axis]
    t = s.const(np.arange(steps, dtype=np.int64).reshape(index_shape))
    lens = s("Reshape", [s("Cast", [node.input[1]], to=T.INT64), s.ints(*lens_shape)])
    reversed_index = s("Sub", [s("Sub", [lens, s.const(np.array(1, np.int64))]), t])
    index = s("Where", [s("Less", [t, lens]), reversed_index, t])
    s("GatherElements", [node.input[0], s("Expand", [index, s.ints(*x_shape)])], node.output[0], axis=time_axis)
    return s.nodes


def _dropout_mask(node, attrs, elem, shape):
    """Dropout in inference with its mask asked for: the input itself and an all-true bool mask."""
    if len(node.output) < 2 or not node.output[1] or len(node.input) > 2 and node.input[2]:
        return None  # no mask, or a training_mode input: left to TVM
    x_shape = shape(node.input[0])
    if x_shape is None:
        return None
    return [onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name or node.output[0]),
            constant(node.output[1], np.ones(x_shape, dtype=bool))]
