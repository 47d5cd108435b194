"""plan-memory: place every activation tensor at an offset in one arena.

Rules:
- The plan follows the graph's node order (``Graph.nodes``), which is the
  execution order: step ``i`` runs node ``i``. Run ``reorder-for-memory`` first
  to lower the peak.
- Every non-constant value with a static shape is planned: graph inputs (live
  from step 0), node outputs (live from their producer's step), graph outputs
  (live to the last step). A value lives through the step of its last use; an
  output nothing reads still needs room at the step that writes it. Values of
  unknown size are left out and named in a warning.
- In-place reuse (option ``inplace``, on by default): the single output of an
  elementwise op (Relu, Add, BatchNormalization...) takes the buffer of an input
  of the same dtype and shape that dies at that op; a view op (Reshape, Flatten,
  Squeeze, Unsqueeze, Identity) takes its data input's buffer the same way.
  Graph inputs and outputs are never overwritten, so the caller can read them
  after a run.
- Offsets are multiples of ``alignment`` (default 64 bytes: TVM's allocation
  alignment and a cache line on x86-64 and arm64 cores; see ``target_alignment``).
- Two tensors live at the same step never overlap, except an in-place pair.
- The lower bound is the largest total of bytes live at any one step: no packing
  can do better. ``algorithm=auto`` (the default) runs every offset algorithm of
  ``edgec.compiler.arena`` (greedy-by-size, best-fit, greedy-by-breadth) and keeps the
  smallest arena, then the exact search for at most ``EXACT_MAX_TENSORS`` buffers
  when no heuristic meets the lower bound.
- The graph is not changed (``modified`` is always false). The plan is returned
  by ``plan_memory`` and, after the pass, is the attribute ``model.memory_plan``
  (a ``MemoryPlan``); it is not model metadata, which would be exported to ONNX.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edgec.compiler.arena import CHOICES, Buffer, live_bytes, pack
from edgec.compiler.pass_manager import Diagnostic, Pass, PassResult, register_pass
from edgec.errors import CompileError
from edgec.ir import Graph, Model, Node, Value
from edgec.units import human_size

logger = logging.getLogger(__name__)

DEFAULT_ALIGNMENT = 64
"""Bytes. TVM aligns its allocations to 64 (kAllocAlignment); it is also a cache line."""
CUDA_ALIGNMENT = 256
"""Bytes. cudaMalloc returns 256-byte aligned memory, which coalesced loads rely on."""

ELEMENTWISE = frozenset({
    "Abs", "Add", "BatchNormalization", "Ceil", "Clip", "Cos", "Div", "Elu", "Erf", "Exp", "Floor",
    "HardSigmoid", "HardSwish", "LeakyRelu", "Log", "Max", "Mean", "Min", "Mul", "Neg", "Pow", "PRelu",
    "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Softplus", "Sqrt", "Sub", "Sum", "Tanh",
})
VIEWS = frozenset({"Flatten", "Identity", "Reshape", "Squeeze", "Unsqueeze"})


def target_alignment(target) -> int:
    """The arena alignment for a ``TargetSpec``, until targets declare their own."""
    return CUDA_ALIGNMENT if target.device == "cuda" else DEFAULT_ALIGNMENT


# -- liveness ------------------------------------------------------------------------------------


def planned_values(graph: Graph) -> list[Value]:
    """Every non-constant value, in definition order: graph inputs, then node outputs."""
    return [v for v in [*graph.inputs, *(v for n in graph.nodes for v in n.outputs)] if not v.is_constant]


def inplace_candidates(node: Node) -> list[Value]:
    """Inputs whose buffer the node's single output may take, in input order."""
    if len(node.outputs) != 1 or node.domain not in ("", "ai.onnx"):
        return []
    out = node.outputs[0]
    if out.nbytes is None:
        return []
    if node.op_type in ELEMENTWISE:
        return [v for v in node.inputs if v is not None and v.dtype == out.dtype and v.shape == out.shape]
    if node.op_type in VIEWS and node.inputs and node.inputs[0] is not None:
        data = node.inputs[0]
        return [data] if data.dtype == out.dtype and data.nbytes == out.nbytes else []
    return []


def can_overwrite(graph: Graph, value: Value) -> bool:
    """Whether a dying input's buffer may be handed to the output of the op that reads it last."""
    return not value.is_constant and value.producer is not None and not graph.is_graph_output(value)


@dataclass
class Lifetime:
    """A planned value: its size and the steps it is live, and whose buffer it took."""

    value: Value
    size: int
    first: int
    last: int
    shares: Value | None = None


def lifetimes(graph: Graph, inplace: bool = True) -> tuple[list[Lifetime], list[Value]]:
    """Lifetimes of the sized values in node order, and the values of unknown size."""
    steps = {id(node): index for index, node in enumerate(graph.nodes)}
    end = max(len(graph.nodes) - 1, 0)
    result: dict[int, Lifetime] = {}
    unknown = []
    for value in planned_values(graph):
        if value.nbytes is None:
            unknown.append(value)
            continue
        first = steps[id(value.producer)] if value.producer is not None else 0
        last = max((steps[id(u)] for u in value.uses), default=first)
        result[id(value)] = Lifetime(value, value.nbytes, first, end if graph.is_graph_output(value) else last)
    if inplace:
        taken: set[int] = set()
        for step, node in enumerate(graph.nodes):
            out = result.get(id(node.outputs[0])) if node.outputs else None
            if out is None or graph.is_graph_output(out.value):
                continue
            for candidate in inplace_candidates(node):
                held = result.get(id(candidate))
                if held and held.last == step and id(candidate) not in taken and can_overwrite(graph, candidate):
                    out.shares = candidate
                    taken.add(id(candidate))
                    break
    return list(result.values()), unknown


def buffers(lives: list[Lifetime]) -> list[Buffer]:
    """Merge in-place chains: a value that took another's buffer joins that buffer."""
    owner: dict[int, Buffer] = {}
    result: list[Buffer] = []
    for life in lives:  # definition order: a shared input is always seen before its taker
        if life.shares is not None:
            buffer = owner[id(life.shares)]
            buffer.members.append(life)
            buffer.last = max(buffer.last, life.last)
        else:
            buffer = Buffer([life], life.size, life.first, life.last, len(result))
            result.append(buffer)
        owner[id(life.value)] = buffer
    return result


def peak_live_bytes(graph: Graph, inplace: bool = True) -> int:
    """The largest total of bytes live at one step in the current node order (the arena's lower bound)."""
    return max(live_bytes(buffers(lifetimes(graph, inplace)[0]), len(graph.nodes)))



# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorPlacement:
    """Where one tensor lives in the arena and at which steps (both inclusive)."""

    name: str
    offset: int
    size: int
    first: int
    last: int
    dtype: str
    shape: tuple[int, ...]
    shares: str | None = None
    """The input whose buffer this tensor took in place, if any."""

    def to_dict(self) -> dict:
        return {"name": self.name, "offset": self.offset, "size": self.size, "first_step": self.first,
                "last_step": self.last, "dtype": self.dtype, "shape": list(self.shape), "shares": self.shares}


@dataclass(frozen=True)
class MemoryPlan:
    """One arena for a model's activations, with the numbers that judge it."""

    tensors: list[TensorPlacement]
    arena_bytes: int
    lower_bound: int
    """The largest total of bytes live at one step; no packing of this order does better."""
    naive_bytes: int
    """Every tensor in a buffer of its own."""
    algorithm: str
    alternatives: dict[str, int]
    """Arena bytes of every algorithm tried, the chosen one included."""
    alignment: int
    steps: list[str]
    """How diagnostics name each step's node."""
    live: list[int] = field(repr=False)
    """Bytes live at each step."""
    unplanned: list[str] = field(default_factory=list)
    """Values of unknown size, left out of the plan."""
    optimal: bool = False
    """True when the arena is proven smallest: it meets the lower bound or the exact search finished."""

    @property
    def inplace(self) -> list[tuple[str, str]]:
        """(tensor, the input whose buffer it took) for every in-place reuse."""
        return [(t.name, t.shares) for t in self.tensors if t.shares is not None]

    @property
    def peak_step(self) -> int:
        """The first step with the largest live set."""
        return self.live.index(max(self.live)) if self.live else 0

    def live_at(self, step: int) -> list[TensorPlacement]:
        """The tensors live at a step, largest first."""
        return sorted((t for t in self.tensors if t.first <= step <= t.last), key=lambda t: (-t.size, t.name))

    def to_dict(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes, "lower_bound_bytes": self.lower_bound, "naive_bytes": self.naive_bytes,
            "algorithm": self.algorithm, "alternatives": dict(self.alternatives), "alignment": self.alignment,
            "optimal": self.optimal, "peak_step": self.peak_step, "inplace": [list(p) for p in self.inplace],
            "unplanned": list(self.unplanned), "tensors": [t.to_dict() for t in self.tensors],
        }

    def explain(self, budget_bytes: int | None = None) -> str:
        """Where the peak is and what would lower it, for a budget report."""
        lines = [f"arena {human_size(self.arena_bytes)} ({self.algorithm}; lower bound {human_size(self.lower_bound)}, "
                 f"{human_size(self.naive_bytes)} without reuse)"]
        if budget_bytes is not None:
            verdict = "fits" if self.arena_bytes <= budget_bytes else \
                f"is {human_size(self.arena_bytes - budget_bytes)} over"
            lines[0] += f" {verdict} the budget of {human_size(budget_bytes)}"
        if not self.tensors:
            return lines[0]
        step, peak = self.peak_step, self.live_at(self.peak_step)
        lines.append(f"largest live set: {human_size(max(self.live))} at step {step}, {self.steps[step]}: "
                     + ", ".join(f"{t.name} ({human_size(t.size)})" for t in peak))
        lines.extend("  - " + s for s in self.suggestions(step, peak, budget_bytes))
        return "\n".join(lines)

    def suggestions(self, step: int, peak: list[TensorPlacement], budget: int | None) -> list[str]:
        from edgec.ir import numpy_dtype

        found = []
        wide = [t for t in peak if t.dtype not in ("int8", "uint8", "bool") and numpy_dtype(t.dtype).itemsize > 1]
        if wide:
            saved = sum(t.size - t.size // numpy_dtype(t.dtype).itemsize for t in wide)
            found.append(f"quantization to int8 would shrink the largest live set by about {human_size(saved)}")
        waiting = [t for t in peak if t.last > step and t.first < step]
        if waiting:
            one = len(waiting) == 1
            names = ", ".join(t.name for t in waiting[:4]) + (", ..." if len(waiting) > 4 else "")
            found.append(f"{len(waiting)} tensor{'' if one else 's'} at the peak wait{'s' if one else ''} for later "
                         f"steps ({names}); reorder-for-memory may run {'its' if one else 'their'} readers sooner")
        batched = [t for t in peak if t.shape and t.shape[0] > 1]
        if batched:
            found.append(f"a smaller batch: {batched[0].name} has batch {batched[0].shape[0]}, and the live set "
                         "shrinks with it")
        if self.arena_bytes > max(self.live):
            found.append(f"packing loses {human_size(self.arena_bytes - max(self.live))} over the lower bound")
        if budget is not None and not found and self.arena_bytes > budget:
            found.append("a model with smaller activations: nothing above applies")
        return found


def plan_memory(model: Model, alignment: int = DEFAULT_ALIGNMENT, algorithm: str = "auto",
                inplace: bool = True) -> MemoryPlan:
    """Plan the activation arena of ``model`` in its current node order."""
    graph = model.graph
    lives, unknown = lifetimes(graph, inplace)
    bufs = buffers(lives)
    packing = pack(bufs, len(graph.nodes), alignment, algorithm)
    offsets, chosen = packing.offsets, packing.algorithm
    placement = {}
    for buffer in bufs:
        for life in buffer.members:
            placement[id(life.value)] = offsets[buffer.index]
    tensors = [TensorPlacement(life.value.name, placement[id(life.value)], life.size, life.first, life.last,
                               life.value.dtype, tuple(life.value.shape),
                               life.shares.name if life.shares is not None else None) for life in lives]
    plan = MemoryPlan(tensors, packing.arena_bytes, packing.lower_bound, sum(life.size for life in lives), chosen,
                      packing.sizes, alignment, [node.describe() for node in graph.nodes] or ["the graph inputs"],
                      packing.live, [v.name for v in unknown], packing.optimal)
    logger.debug("planned %d tensors in %d bytes with %s (lower bound %d)", len(tensors), plan.arena_bytes, chosen, packing.lower_bound)
    return plan


@register_pass
class PlanMemory(Pass):
    name = "plan-memory"

    @dataclass
    class Options:
        alignment: int = DEFAULT_ALIGNMENT
        algorithm: str = "auto"
        inplace: bool = True

    def requires(self, model: Model) -> None:
        if self.options.algorithm not in CHOICES:
            raise CompileError(f"unknown algorithm '{self.options.algorithm}' (known: {', '.join(CHOICES)})")
        if self.options.alignment < 1:
            raise CompileError(f"alignment must be positive, got {self.options.alignment}")

    def call(self, model: Model) -> PassResult:
        plan = plan_memory(model, self.options.alignment, self.options.algorithm, self.options.inplace)
        model.memory_plan = plan
        stats = {"tensors": len(plan.tensors), "inplace-reuses": len(plan.inplace), "arena-bytes": plan.arena_bytes,
                 "lower-bound-bytes": plan.lower_bound, "naive-bytes": plan.naive_bytes}
        diagnostics = [Diagnostic("note", f"arena {human_size(plan.arena_bytes)} by {plan.algorithm} (lower bound "
                                          f"{human_size(plan.lower_bound)}, {human_size(plan.naive_bytes)} without reuse)")]
        if plan.unplanned:
            diagnostics.append(Diagnostic("warning", f"{len(plan.unplanned)} values of unknown size are not planned: "
                                                     + ", ".join(plan.unplanned[:8])))
        return PassResult(model, modified=False, stats=stats, diagnostics=diagnostics)
