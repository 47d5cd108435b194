"""Lowering an edgec model through TVM Relax to a shared library.

How the graph reaches TVM: edgec exports it (exactly) to ONNX and uses TVM's own
ONNX frontend. That frontend covers ~190 ONNX ops with their opset-specific
semantics and is maintained upstream; re-implementing that mapping in edgec
would duplicate it and drift. Passes that need TVM-level control (schedules,
integer kernels) act on the Relax module after import instead.

Weights stay out of the library: they are imported as function parameters
(``keep_params_in_input``) and detached, so the artifact stores them once, as
their own member, and the runtime maps them instead of loading a ``.so`` that
embeds them. Small and integer initializers (shapes, axes, scalars) are exported
as ``Constant`` nodes instead, because TVM's importer needs their values to
derive static shapes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgec.errors import CompileError, UsageError
from edgec.exporter import export_model, tensor_proto
from edgec.ir import Model

from .base import TargetSpec
from .tvm_arena import cpu_pipeline_with_arena

logger = logging.getLogger(__name__)

EMBED_BELOW_BYTES = 256
"""Float initializers at most this big are compiled in as constants, not passed as weights."""


@dataclass
class Lowered:
    library: bytes
    params: list[tuple[str, np.ndarray]]
    target_manifest: dict
    tvm_version: str
    runtime_memory: dict | None
    """What the VM allocates for intermediates (``tvm_arena.ArenaReport.to_dict``); None for GPU targets."""


def is_weight(data: np.ndarray) -> bool:
    return data.dtype.kind == "f" and data.nbytes > EMBED_BELOW_BYTES


def onnx_for_tvm(model: Model) -> onnx.ModelProto:
    """The model as ONNX, with non-weight initializers turned into Constant nodes."""
    proto = export_model(model)
    graph = proto.graph
    constants = [t for t in graph.initializer if not is_weight(model.graph.initializers[t.name].const)]
    nodes = [
        onnx.helper.make_node("Constant", [], [t.name], value=tensor_proto("", model.graph.initializers[t.name].const))
        for t in constants
    ]
    keep = [t for t in graph.initializer if is_weight(model.graph.initializers[t.name].const)]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    initializer_names = set(model.graph.initializers)
    inputs = [i for i in graph.input if i.name not in initializer_names]
    del graph.input[:]
    graph.input.extend(inputs)
    for position, node in enumerate(nodes):
        graph.node.insert(position, node)
    proto.ir_version = max(proto.ir_version, 4)  # initializers need not be listed as inputs
    _clip_as_max_min(proto, {t.name: model.graph.initializers[t.name].const for t in constants})
    refuse_dtypes(proto)
    expand_functions(proto)
    refuse_run_time_shapes(proto)
    return proto


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


def refuse_run_time_shapes(proto: onnx.ModelProto) -> None:
    """Refuse, naming the node, an op whose output shape would be decided by values only known
    at run time (a graph input or something computed from one); ``Shape`` of a statically
    shaped value is known at compile time and does not count."""
    dynamic = {v.name for v in proto.graph.input} - {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        position = SHAPE_INPUTS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if position is not None and position < len(node.input) and node.input[position] in dynamic:
            raise CompileError(f"{node.op_type} node '{node.name or node.output[0]}': its output shape is the value of "
                               f"'{node.input[position]}', decided at run time; edgec compiles static shapes only")
        if node.op_type not in ("Shape", "Size") and any(name in dynamic for name in node.input):
            dynamic.update(node.output)


EXPAND_ALWAYS = frozenset({"Attention"})
"""Ops TVM's frontend has a converter for that is not the ONNX op's: its ``Attention`` is
com.microsoft's (``num_heads``, packed QKV weights), not opset 23's."""


def expand_functions(proto: onnx.ModelProto, rounds: int = 4) -> None:
    """Nodes TVM's frontend cannot convert, when ONNX defines the op as a function of other
    ops (Attention, Celu, CenterCropPad, the losses, the window functions...), become that
    function's body, in place; a body's own function ops are expanded in the next round.
    Shapes are static here, so the bodies' shape arithmetic is folded to constants (TVM
    imports ``Shape`` as a ShapeExpr its elementwise ops refuse). Other unsupported ops are
    left for TVM to name."""
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
            if node.domain in ("", "ai.onnx") and node.op_type not in convertible and node.op_type != "Constant":
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
        fold_static(proto, expanded)


FOLD_LIMIT_BYTES = 1 << 16


def fold_static(proto: onnx.ModelProto, names: set[str], rounds: int = 8) -> None:
    """Among the nodes named in ``names``: ``Shape`` and ``Size`` of a value whose shape is
    static, and nodes whose inputs are all such constants (small outputs only), become
    ``Constant`` nodes, evaluated with onnx's reference implementation."""
    for _ in range(rounds):  # a folded shape can make the next value's shape static
        if not _fold_round(proto, names):
            return


def _fold_round(proto: onnx.ModelProto, names: set[str]) -> bool:
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
        if node.name not in names or node.op_type == "Constant":
            folded.append(node)
            continue
        values = None
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            shape = np.array(shapes[node.input[0]], dtype=np.int64)
            if node.op_type == "Size":
                values = [np.array(np.prod(shape), dtype=np.int64)]
            else:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                values = [shape[attrs.get("start", 0):attrs.get("end", len(shape))] if "end" in attrs else shape[attrs.get("start", 0):]]
        elif node.input and all(name == "" or name in constants for name in node.input) and not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
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


def _clip_as_max_min(proto: onnx.ModelProto, constants: dict[str, np.ndarray]) -> None:
    """Clip with constant bounds (ReLU6) becomes Max then Min, in place.

    TVM imports Clip as opaque TE kernels that ConvertLayout cannot see through, so every
    ReLU6 of an NHWC CNN sat between two transposes in a kernel of its own; Max and Min import
    as Relax ops that take any layout and fuse into the conv before them. Only the opset-11+
    form with constant, non-NaN bounds is rewritten (earlier Max/Min do not broadcast)."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        return
    rewritten = []
    for node in proto.graph.node:
        steps = [(op, bound) for op, bound in zip(("Max", "Min"), node.input[1:3]) if bound]
        if (node.op_type != "Clip" or node.domain not in ("", "ai.onnx") or not steps
                or any(b not in constants or np.isnan(constants[b]).any() for _, b in steps)):
            rewritten.append(node)
            continue
        value = node.input[0]
        for position, (op, bound) in enumerate(steps, 1):
            output = node.output[0] if position == len(steps) else f"{node.output[0]}.{op.lower()}"
            rewritten.append(onnx.helper.make_node(op, [value, bound], [output], name=f"{node.name or node.output[0]}.{op.lower()}"))
            value = output
    del proto.graph.node[:]
    proto.graph.node.extend(rewritten)


def lower(model: Model, target: TargetSpec, tuning_db: Path | None = None) -> Lowered:
    """Compile ``model`` for ``target``; kernels with a record in ``tuning_db`` use it."""
    import tvm
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    if tuning_db is not None and target.device != "cpu":
        raise UsageError(f"--tuning-db holds CPU kernel records; target {target.name} runs on {target.device}")
    options = export_options(target)  # a missing cross toolchain fails before any TVM work
    target_manifest = target.manifest()
    proto = onnx_for_tvm(model)
    try:
        mod = from_onnx(proto, keep_params_in_input=True)
    except Exception as exc:  # TVM raises a variety of types; the op name is in the text
        raise CompileError(f"TVM's ONNX frontend rejected the model: {first_line(exc)}") from exc
    if target.device == "cpu":
        # Quantized conv2d/matmul patterns become int8 x int8 -> int32 kernels (see int8).
        from .int8 import lower_integer_kernels
        from .int8_schedules import dot_product_for

        mod, integer = lower_integer_kernels(mod, dot_product_for(target))
        if integer.lowered or integer.kept_float:
            target_manifest["integer_kernels"] = integer.to_dict()
        # TVM's default CPU pipeline schedules nothing; edgec's rules do (see cpu_schedules).
        from .cpu_schedules import schedule_for_cpu
        from .tuning import open_database

        database = open_database(tuning_db, target) if tuning_db else None
        tuned: list[str] = []
        mod, notes = schedule_for_cpu(mod, target, database, tuned)
        for note in notes:
            logger.info("kernel left to a fallback schedule: %s", note)
        if database is not None:
            logger.info("%d kernel(s) scheduled from tuning records in %s", len(tuned), tuning_db)
            target_manifest["tuned_kernels"] = sorted(tuned)
    main = mod["main"]
    num_inputs = int(main.attrs["num_input"])
    names = unique_names([param.name for param in main.params[num_inputs:]])
    mod, detached = detach_params(mod)
    arrays = [param.numpy() for param in detached.get("main", [])]
    if len(arrays) != len(names):
        raise CompileError(f"TVM detached {len(arrays)} weights but the function takes {len(names)}")

    tvm_target = tvm.target.Target(target.tvm_target)
    arena_reports: list = []
    pipeline = cpu_pipeline_with_arena(tvm_target, arena_reports) if target.device == "cpu" else "default"
    try:
        executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    except Exception as exc:
        raise CompileError(f"TVM failed to compile for {target.name}: {first_line(exc)}") from exc
    runtime_memory = arena_reports[0].to_dict() if arena_reports else None
    if arena_reports and not arena_reports[0].runs_in_arena:
        logger.info("the VM keeps TVM's own storages: %s", arena_reports[0].why_not)

    with tempfile.TemporaryDirectory(prefix="edgec-") as workdir:
        library_path = Path(workdir) / "model.so"
        executable.export_library(str(library_path), **options)
        library = library_path.read_bytes()
    return Lowered(library, list(zip(names, arrays)), target_manifest, tvm.__version__, runtime_memory)


def unique_names(names: list[str]) -> list[str]:
    """Weight names as the artifact stores them: TVM's lifting can give two parameters one name."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [name if seen[name] == 1 else f"{name}#{position}" for position, name in enumerate(names)]


def export_options(target: TargetSpec) -> dict:
    """Link natively, or with the target's cross toolchain (named if it is missing)."""
    if target.cross_compiler is None:
        return {}
    if shutil.which(target.cross_compiler) is None:
        raise CompileError(
            f"target {target.name} links with {target.cross_compiler}, which is not installed; "
            f"install it with: apt-get install {target.cross_package}"
        )
    from tvm.support import cc

    return {"fcompile": cc.cross_compiler(target.cross_compiler)}


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
