"""What TVM's Relax VM allocates for a model's intermediates, next to edgec's plan.

edgec's ``plan-memory`` packs the graph's tensors into one arena at planned
offsets. TVM 0.27 does not run in it: ``StaticPlanBlockMemory`` gives each group
of tensors that may share memory a storage of its own, sized for the largest, and
the VM allocates those storages on each call (its pooled allocator hands the same
blocks back, so they are resident after the first run). Running the VM in one
arena at edgec's offsets needs every kernel changed: TVM's kernels refuse a
tensor with a byte offset into a larger buffer ("Invalid byte_offset ...,
expected 0"; views made by ``R.memory.view`` carry one), and ``PrimFunc.specialize``
cannot turn a parameter's fixed element offset into a free one.

So edgec measures and says exactly what each side plans. ``account_tvm_memory``
reads the lowered ``main`` right after StaticPlanBlockMemory:

- ``tvm_storage_bytes``: the sum of TVM's storages, what the VM really allocates;
- ``arena_bytes``: the one arena edgec's offset algorithms (``edgec.arena``) would
  need for those same tensors, live from their allocation to the last binding that
  reads them or anything aliasing them (a rebinding, a reshape, a tuple), and its
  lower bound: the gap TVM leaves;
- ``output_bytes``: the graph outputs, allocated per call and handed to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgec.arena import Buffer, pack

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
    """The sum of StaticPlanBlockMemory's storages: what the VM allocates."""
    arena_bytes: int
    """One arena at edgec's offsets for the same tensors (equal to the above when not analysed)."""
    lower_bound: int
    tensors: int
    algorithm: str = ""
    output_bytes: int = 0
    """Graph outputs, allocated by the VM on each call and handed to the caller."""
    why_not: str = ""

    def to_dict(self) -> dict:
        return {"analysed": self.analysed, "tvm_storage_bytes": self.tvm_storage_bytes, "arena_bytes": self.arena_bytes,
                "lower_bound_bytes": self.lower_bound, "tensors": self.tensors, "algorithm": self.algorithm,
                "output_bytes": self.output_bytes, "why_not": self.why_not}


def static_int(expr) -> int | None:
    """The value of a one-element ``R.shape([n])`` with a constant ``n``."""
    from tvm import relax

    if isinstance(expr, relax.ShapeExpr) and len(expr.values) == 1 and hasattr(expr.values[0], "value"):
        return int(expr.values[0].value)
    return None


def dtype_bytes(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize


def account_tvm_memory(func) -> ArenaReport:
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
    roots: dict[object, set] = {}  # any var -> the planned tensors whose memory it may hold
    last_use: dict[object, int] = {}
    output_bytes = 0

    def unanalysed(why: str) -> ArenaReport:
        total = sum(storages.values())
        return ArenaReport(False, total, total, 0, len(tensors), output_bytes=output_bytes, why_not=why)

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
            shape = value.args[0]
            if isinstance(shape, relax.ShapeExpr) and all(hasattr(d, "value") for d in shape.values):
                count = 1
                for dim in shape.values:
                    count *= int(dim.value)
                output_bytes += count * dtype_bytes(str(value.args[1].value))
        used = relax.analysis.free_vars(value)
        if name == alloc_tensor:
            shape = value.args[2]
            static = isinstance(shape, relax.ShapeExpr) and all(hasattr(d, "value") for d in shape.values)
            if value.args[0] not in storages or not static:
                return unanalysed(f"tensor {binding.var.name} is not a static shape on a planned storage")
            if int(getattr(value.args[1], "value", -1)) != 0:
                return unanalysed(f"tensor {binding.var.name} already has an offset")
            tensors[binding.var] = index
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
    bufs = [Buffer([var], tensor_bytes(bindings[tensors[var]].value), tensors[var], last_use[var], i)
            for i, var in enumerate(ordered)]
    packing = pack(bufs, len(bindings) + 1, ALIGNMENT)

    return ArenaReport(True, sum(storages.values()), packing.arena_bytes, packing.lower_bound, len(ordered),
                       packing.algorithm, output_bytes)


def tensor_bytes(alloc) -> int:
    """Bytes of an ``R.memory.alloc_tensor(storage, offset, shape, dtype, device)`` with a static shape."""
    count = 1
    for dim in alloc.args[2].values:
        count *= int(dim.value)
    return count * dtype_bytes(str(alloc.args[3].value))


def accounting_pass(reports: list[ArenaReport]):
    """A module pass that leaves the module alone and appends ``main``'s memory report to ``reports``."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="EdgecMemoryAccounting")
    def account(mod, _ctx):
        if "main" in [gv.name_hint for gv in mod.functions]:
            reports.append(account_tvm_memory(mod["main"]))
        return mod

    return account


def cpu_pipeline_with_accounting(target, reports: list[ArenaReport]):
    """TVM's CPU pipeline (``relax.backend.cpu_generic``), reading the memory plan right after StaticPlanBlockMemory."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    finalize = []
    for item in cpu_generic.finalize_passes(target):
        finalize.append(item)
        if item.info.name == "StaticPlanBlockMemory":
            finalize.append(accounting_pass(reports))
    if len(finalize) == len(cpu_generic.finalize_passes(target)):
        raise RuntimeError("TVM's CPU pipeline has no StaticPlanBlockMemory to follow")

    @tvm.transform.module_pass(opt_level=0, name="EdgecCpuPipeline")
    def pipeline(mod, _ctx):
        with target:
            passes = (cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
                      + cpu_generic.dataflow_lower_passes(target) + finalize)
            return tvm.transform.Sequential(passes)(mod)

    return pipeline

