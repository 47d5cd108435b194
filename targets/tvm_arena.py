"""The Relax VM runs in one arena at offsets edgec plans, not in TVM's storages.

TVM 0.27's ``StaticPlanBlockMemory`` gives each group of tensors that may share
memory a storage of its own, sized for the largest: storages never interleave, and
on the model zoo they add up to 1.0-1.6x the smallest arena the same tensors need.
The ``EdgecArena`` pass runs right after it, inside TVM's CPU pipeline:

1. ``account_tvm_memory``: every ``R.memory.alloc_tensor`` on a planned storage is
   a tensor, live from its allocation to the last binding that reads it or anything
   aliasing it (a rebinding, a reshape, a tuple); edgec's offset algorithms
   (``edgec.compiler.arena``) pack them into one arena, at 64-byte-aligned offsets;
2. ``in_arena``: ``main`` allocates that one arena and takes each tensor as a view
   at its offset (``R.memory.view``). TVM's kernels refuse a tensor with a byte
   offset unless their parameters allow one, so each kernel is rewritten (a
   TVMScript round trip) with an ``offset_factor`` on every buffer parameter: the
   offset becomes a free variable the binder reads from the tensor, and checks.

The VM's pooled allocator hands the same block back on every call, so after the
first inference the model runs in one preallocated arena. Graph outputs stay the
VM's own allocations: the caller keeps them. When any step is impossible (a
storage of dynamic size, a kernel the TVMScript printer and parser disagree on),
the module keeps TVM's storages and the report says why. Either way the report
says what the VM allocates: the arena or TVM's storages, the outputs, and the
largest scratch one kernel allocates for itself (``workspace_bytes``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgec.compiler.arena import Buffer, pack

ALIGNMENT = 64
"""Bytes: TVM's kAllocAlignment, which its kernels assume for every tensor's data."""
ALIASING_OPS = frozenset({"relax.reshape", "relax.memory.view", "relax.builtin.stop_lift_params"})
"""Ops whose result shares its input's memory."""


@dataclass
class ArenaReport:
    """What the VM allocates per call, by TVM's own plan and by edgec's."""

    analysed: bool
    """False when ``main`` has storages of dynamic size or other uses (``why_not`` says which)."""
    tvm_storage_bytes: int
    """The sum of StaticPlanBlockMemory's storages: what the VM allocates when it does not run in the arena."""
    arena_bytes: int
    """One arena at edgec's offsets for the same tensors (equal to the above when not analysed)."""
    lower_bound: int
    tensors: int
    algorithm: str = ""
    output_bytes: int = 0
    """Graph outputs, allocated by the VM on each call and handed to the caller."""
    why_not: str = ""
    runs_in_arena: bool = False
    """True when the VM runs in the one arena at edgec's offsets instead of TVM's storages."""
    workspace_bytes: int = 0
    """The largest scratch one kernel allocates for itself while it runs (padded inputs...)."""

    def to_dict(self) -> dict:
        return {"analysed": self.analysed, "tvm_storage_bytes": self.tvm_storage_bytes, "arena_bytes": self.arena_bytes,
                "lower_bound_bytes": self.lower_bound, "tensors": self.tensors, "algorithm": self.algorithm,
                "output_bytes": self.output_bytes, "why_not": self.why_not,
                "runs_in_arena": self.runs_in_arena, "workspace_bytes": self.workspace_bytes}


def static_int(expr) -> int | None:
    """The value of a one-element ``R.shape([n])`` with a constant ``n``."""
    from tvm import relax

    if isinstance(expr, relax.ShapeExpr) and len(expr.values) == 1 and hasattr(expr.values[0], "value"):
        return int(expr.values[0].value)
    return None


def static_shape_bytes(shape, dtype) -> int | None:
    """Bytes of a tensor of ``shape`` (an ``R.shape``) and ``dtype`` (a DataTypeImm), or None if a dim is symbolic."""
    from tvm import relax

    if not isinstance(shape, relax.ShapeExpr) or not all(hasattr(d, "value") for d in shape.values):
        return None
    count = 1
    for dim in shape.values:
        count *= int(dim.value)
    return count * tvm_dtype_bits(str(dtype.value)) // 8


def account_tvm_memory(func) -> tuple[ArenaReport, dict]:
    """TVM's storages in ``func`` (a lowered Relax function, after StaticPlanBlockMemory) and edgec's packing of them."""
    from tvm import relax

    alloc_storage = "relax.memory.alloc_storage"
    alloc_tensor = "relax.memory.alloc_tensor"
    builtin_alloc = "relax.builtin.alloc_tensor"

    def op_name(value) -> str:
        return value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else ""

    body = func.body
    bindings = [binding for block in body.blocks for binding in block.bindings]
    storages: dict[object, int] = {}
    tensors: dict[object, int] = {}  # alloc_tensor var -> binding index
    sizes: dict[object, int] = {}
    roots: dict[object, set] = {}  # any var -> the planned tensors whose memory it may hold
    last_use: dict[object, int] = {}
    output_bytes = 0

    def unanalysed(why: str) -> ArenaReport:
        total = sum(storages.values())
        return ArenaReport(False, total, total, 0, len(tensors), output_bytes=output_bytes, why_not=why), {}

    for index, binding in enumerate(bindings):
        if not isinstance(binding, relax.VarBinding):
            return unanalysed("a match-cast binding")
        value, name = binding.value, op_name(binding.value)
        if name == alloc_storage:
            size = static_int(value.args[0])
            if size is None:
                return unanalysed(f"storage {binding.var.name} has a dynamic size")
            storages[binding.var] = size
            continue
        if name == builtin_alloc:
            output_bytes += static_shape_bytes(value.args[0], value.args[1]) or 0
        used = relax.analysis.free_vars(value)
        if name == alloc_tensor:
            size = static_shape_bytes(value.args[2], value.args[3])
            if value.args[0] not in storages or size is None:
                return unanalysed(f"tensor {binding.var.name} is not a static shape on a planned storage")
            if int(getattr(value.args[1], "value", -1)) != 0:
                return unanalysed(f"tensor {binding.var.name} already has an offset")
            tensors[binding.var] = index
            sizes[binding.var] = size
            roots[binding.var] = {binding.var}
            last_use[binding.var] = index
            continue
        held = set()
        for var in used:
            if var in storages:
                return unanalysed(f"storage {var.name} is used by {name or 'a binding'} (not an alloc_tensor)")
            for root in roots.get(var, ()):
                last_use[root] = index
                held.add(root)
        aliases = isinstance(value, (relax.Var, relax.Tuple, relax.TupleGetItem)) or name in ALIASING_OPS
        if held and aliases:
            roots[binding.var] = held
    for var in relax.analysis.free_vars(body.body):
        for root in roots.get(var, ()):
            last_use[root] = len(bindings)
    if not tensors:
        return unanalysed("no tensor to plan")

    ordered = list(tensors)
    bufs = [Buffer([var], sizes[var], tensors[var], last_use[var], i) for i, var in enumerate(ordered)]
    packing = pack(bufs, len(bindings) + 1, ALIGNMENT)
    offsets = {var: packing.offsets[i] for i, var in enumerate(ordered)}
    return ArenaReport(True, sum(storages.values()), packing.arena_bytes, packing.lower_bound, len(ordered),
                       packing.algorithm, output_bytes), offsets


LARGEST_REWRITTEN_KERNEL = 256 * 1024
"""Characters of TVMScript: ``offsetable``'s round trip through TVM's parser took over a minute on the
1.4 MB box-decoding kernel of torchvision's SSD-lite; a model with a larger kernel keeps TVM's storages."""


def arena_pass(reports: list[ArenaReport]):
    """A module pass putting ``main`` in one arena where it can; ``main``'s memory report goes to ``reports``."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="EdgecArena")
    def account(mod, _ctx):
        if "main" not in [gv.name_hint for gv in mod.functions]:
            return mod
        report, offsets = account_tvm_memory(mod["main"])
        scripts = {gv: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
        report.workspace_bytes = max(map(kernel_workspace_bytes, scripts.values()), default=0)
        reports.append(report)
        largest = max(scripts.items(), key=lambda item: len(item[1]), default=(None, ""))
        if report.analysed and len(largest[1]) > LARGEST_REWRITTEN_KERNEL:
            name = largest[0].name_hint
            report.why_not = (f"kernel {name[:48]}{'...' if len(name) > 48 else ''} is {len(largest[1]) // 1024} KiB "
                              "of TVMScript, too large to rewrite for offsets in reasonable time")
            return mod
        rewritten = in_arena(mod, report, offsets, scripts) if report.analysed else None
        if rewritten is None:
            report.why_not = report.why_not or "a kernel could not be rewritten to take offsets"
            return mod
        report.runs_in_arena = True
        return rewritten

    return account


def cpu_pipeline_with_arena(target, reports: list[ArenaReport]):
    """TVM's CPU pipeline (``relax.backend.cpu_generic``) with edgec's arena right after StaticPlanBlockMemory."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    finalize = []
    for item in cpu_generic.finalize_passes(target):
        finalize.append(item)
        if item.info.name == "StaticPlanBlockMemory":
            finalize.append(arena_pass(reports))
    if len(finalize) == len(cpu_generic.finalize_passes(target)):
        raise RuntimeError("TVM's CPU pipeline has no StaticPlanBlockMemory to follow")

    @tvm.transform.module_pass(opt_level=0, name="EdgecCpuPipeline")
    def pipeline(mod, _ctx):
        with target:
            passes = (cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
                      + cpu_generic.dataflow_lower_passes(target) + finalize)
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def offsetable(text: str):
    """The PrimFunc printed as ``text``, taking every buffer at an ``ALIGNMENT``-aligned offset into a larger one,
    or None when it cannot be rewritten.

    TVMScript round trip: each parameter ``T.Buffer(shape, dtype)`` gains an ``offset_factor``,
    which gives it a free element offset that the packed-function binder reads from the
    tensor's ``byte_offset`` (and checks is a multiple of the factor).
    """
    from tvm.script import parser

    head, sep, rest = text.partition("\ndef ")
    signature, colon, body = rest.partition(":\n")
    if not sep or not colon or "metadata[" in text or "call_packed" in text:
        return None  # a packed function the kernel calls (TVM's sort, topk) ignores a tensor's byte_offset
    rewritten, cursor = [], 0
    while (start := signature.find("T.Buffer(", cursor)) != -1:
        end = closing_paren(signature, start + len("T.Buffer"))
        arguments = signature[start + len("T.Buffer("):end]
        # The dtype is the quoted positional argument (float32 when absent); keywords such as
        # elem_offset= may follow it (Scatter, ScatterND and MaxUnpool kernels have them).
        quoted = re.findall(r'(?:^|,)\s*"([\w.]+)"', arguments)
        dtype = quoted[0] if quoted else "float32"
        factor = max(1, ALIGNMENT * 8 // tvm_dtype_bits(dtype))
        rewritten.append(signature[cursor:end] + f", offset_factor={factor}")
        cursor = end
    rewritten.append(signature[cursor:])
    try:
        return parser.parse(f"{head}{sep}{''.join(rewritten)}{colon}{body}")
    except Exception:  # noqa: BLE001 - any kernel the printer and parser disagree on keeps TVM's storages
        return None


GLOBAL_ALLOC = re.compile(r"T\.sblock_alloc_buffer\((\((?:[^()]|\([^()]*\))*\))(?:, \"(\w+)\")?(, scope=\"[\w.]+\")?")
"""A kernel's own buffer: its shape, its dtype (float32 when absent) and its scope (global when absent)."""


def kernel_workspace_bytes(script: str) -> int:
    """Bytes of the global-scope buffers a kernel (as TVMScript) allocates for itself."""
    total = 0
    for shape, dtype, scope in GLOBAL_ALLOC.findall(script):
        if scope:  # local, shared...: registers or on-chip, not the heap
            continue
        count = 1
        for dim in re.findall(r"\d+", re.sub(r"T\.int(32|64)", "", shape)):
            count *= int(dim)
        total += count * tvm_dtype_bits(dtype or "float32") // 8
    return total


def closing_paren(text: str, opening: int) -> int:
    """The index of the ``)`` matching the ``(`` at ``opening``."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in {text!r}")


def tvm_dtype_bits(dtype: str) -> int:
    import tvm

    kind = tvm.runtime.DataType(dtype)
    return kind.bits * kind.lanes


def in_arena(mod, report: ArenaReport, offsets: dict, scripts: dict):
    """``mod`` with ``main``'s planned tensors as views into one arena and every kernel (``scripts``:
    each PrimFunc's TVMScript) taking offsets, or None (TVM's storages stay) when one cannot be rewritten."""
    from tvm import relax

    kernels = {}
    for gv, text in scripts.items():
        kernels[gv] = offsetable(text)
        if kernels[gv] is None:
            return None
    main = mod["main"]
    body = main.body
    storages = {b.var for block in body.blocks for b in block.bindings
                if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.memory.alloc_storage"}
    storage = relax.Var("edgec_arena_storage", next(iter(storages)).ty)
    arena = relax.Var("edgec_arena", relax.TensorType([report.arena_bytes], "uint8"))
    head = [relax.VarBinding(storage, relax.op.memory.alloc_storage(
                relax.ShapeExpr([report.arena_bytes]), 0, "global", "uint8")),
            relax.VarBinding(arena, relax.op.memory.alloc_tensor(
                storage, 0, relax.ShapeExpr([report.arena_bytes]), "uint8"))]
    blocks = []
    for index, block in enumerate(body.blocks):
        bindings = list(head) if index == 0 else []
        for binding in block.bindings:
            if binding.var in storages:
                continue
            if binding.var in offsets:
                old = binding.value
                binding = relax.VarBinding(binding.var, relax.op.memory.view(
                    arena, old.args[2], old.args[3], relax.prim_value(offsets[binding.var])))
            bindings.append(binding)
        blocks.append(relax.BindingBlock(bindings))
    out = mod.clone()
    out["main"] = relax.Function(main.params, relax.SeqExpr(blocks, body.body), main.ret_ty, main.is_pure,
                                 main.attrs, main.span)
    for gv, kernel in kernels.items():
        out[gv] = kernel
    return out
