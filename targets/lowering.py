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
from edgec.frontend.exporter import export_model, tensor_proto
from edgec.ir import Model

from .base import TargetSpec
from .detection import bound_detections
from .onnx_rewrites import ShapeInput, prepare_for_tvm
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
    valid_rows: dict | None = None
    """{output: {"count": its count output, "shape": its static upper bound}} for outputs that only
    their first ``count`` rows are real in (NonMaxSuppression's; see ``detection``)."""
    members: dict[str, bytes] | None = None
    """A bare-metal target's artifact members (the C project and the firmware) instead of ``library``."""


def is_weight(data: np.ndarray) -> bool:
    return data.dtype.kind == "f" and data.nbytes > EMBED_BELOW_BYTES


def onnx_for_tvm(model: Model) -> tuple[onnx.ModelProto, list[ShapeInput]]:
    """The model as ONNX, with non-weight initializers turned into Constant nodes, and the
    shape inputs compiled to the shape the model declares (which the runtime checks)."""
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
    return proto, prepare_for_tvm(proto)


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


def lower(model: Model, target: TargetSpec, tuning_db: Path | None = None, name: str = "model") -> Lowered:
    """Compile ``model`` for ``target``; kernels with a record in ``tuning_db`` use it. ``name``
    names a bare-metal target's C API (``<name>_init``, ``<name>_run``)."""
    if target.family == "cortex-m":
        if tuning_db is not None:
            raise UsageError(f"--tuning-db holds records for TVM's VM kernels; target {target.name} has none")
        from .cortex_m import lower_mcu

        return lower_mcu(model, target, name)
    import tvm
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    if tuning_db is not None and target.device != "cpu":
        raise UsageError(f"--tuning-db holds CPU kernel records; target {target.name} runs on {target.device}")
    options = export_options(target)  # a missing cross toolchain fails before any TVM work
    check_signature(model)
    target_manifest = target.manifest()
    proto, shape_inputs = onnx_for_tvm(model)
    if shape_inputs:
        target_manifest["shape_inputs"] = [pinned.to_dict() for pinned in shape_inputs]
    cut = bound_detections(proto)
    bounds = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.output}
    valid_rows = {name: {"count": count, "shape": bounds[name]} for name, count in cut.items()} or None
    try:
        mod = from_onnx(proto, keep_params_in_input=True)
    except Exception as exc:  # TVM raises a variety of types; the op name is in the text
        raise CompileError(f"TVM's ONNX frontend rejected the model: {first_line(exc)}") from exc
    if target.device == "cpu":
        # Quantized conv2d/matmul patterns become int8 x int8 -> int32 kernels (see int8).
        from .int8 import lower_integer_kernels
        from .int8_schedules import dot_product_for

        mod, integer = lower_integer_kernels(mod, dot_product_for(target))
        if integer.lowered or integer.kept_float or integer.kept_int32:
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
    refuse_empty_constants(main, [value.name for value in model.graph.outputs])
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
    return Lowered(library, list(zip(names, arrays)), target_manifest, tvm.__version__, runtime_memory,
                   valid_rows=valid_rows)


def check_signature(model: Model) -> None:
    """Refuse graph inputs and outputs an artifact cannot carry: the signature holds tensors
    of a known dtype and rank (a sequence, map or optional has neither)."""
    for kind, values in (("input", model.graph.inputs), ("output", model.graph.outputs)):
        for value in values:
            if value.dtype is None or value.shape is None:
                maker = f" (made by {value.producer.op_type} node '{value.producer.name or value.name}')" if value.producer else ""
                what = "is not a tensor (a sequence, map or optional?)" if value.dtype is None else "has no known rank"
                raise CompileError(f"graph {kind} '{value.name}'{maker} {what}; an edgec artifact takes and returns "
                                   "tensors of known dtype and rank only")


def refuse_empty_constants(main, output_names: list[str]) -> None:
    """Refuse a constant with no elements whose first dim is not 0 (CausalConvWithState's state
    at kernel size 1, 2x4x0): TVM 0.27 writes it into the library in a form its loader rejects
    ("Invalid DLTensor file format"), so the artifact would compile and then never load.
    Shapes 0 and 0x2 load (ConstantOfShape of an empty shape), 2x0, 1x0 and 3x0x0 do not."""
    import tvm
    from tvm import relax

    def unloadable(shape) -> bool:
        return len(shape) > 0 and shape[0] != 0 and 0 in shape

    empty = []
    relax.analysis.post_order_visit(main, lambda node: empty.append(node) if isinstance(
        node, tvm.ir.expr.Constant) and unloadable(getattr(getattr(node, "value", None), "shape", ())) else None)
    if not empty:
        return
    bound = {b.var: b.value for block in main.body.blocks for b in block.bindings}
    result = bound.get(main.body.body, main.body.body)
    results = [bound.get(r, r) for r in (result.fields if isinstance(result, relax.Tuple) else [result])]
    shape = "x".join(str(d) for d in empty[0].value.shape)
    for name, result in zip(output_names, results):
        if any(result.same_as(constant) for constant in empty):
            raise CompileError(f"graph output '{name}' is an empty constant (shape {shape}); TVM cannot store such a "
                               "tensor in the compiled library, so the artifact would not load")
    raise CompileError(f"the model computes an empty constant (shape {shape}); TVM cannot store such a tensor in "
                       "the compiled library, so the artifact would not load")


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
