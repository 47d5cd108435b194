"""reorder-for-memory: choose a node order that lowers the peak of live activation bytes.

Rules:
- The cost of an order is ``plan-memory``'s lower bound for it: the largest total
  of bytes live at one step, with the same liveness and in-place rules
  (``edgec.passes.plan_memory``; option ``inplace`` as there). Constants cost
  nothing; values of unknown size count as zero.
- The graph splits at cut nodes, nodes that every other node precedes or follows.
  Every topological order runs the same segments in the same sequence, and the
  bytes that cross a segment add the same to each of its orders, so each segment
  is scheduled alone.
- A segment is scheduled by dynamic programming over the sets of its nodes
  already run (Serenity, Ahn et al., MLSys 2020): a set fixes the live bytes after
  it, and the best peak to reach a set is the best over its last node. Without
  in-place reuse this is exact while no step has more than ``max-states`` sets.
  With it, whether an op may overwrite an input depends on the order of that
  input's other readers, which a set does not record, so the result is never
  worse than the current order but not proven optimal. Past ``max-states`` only the
  ``max-states`` best sets (lowest peak, then fewest live bytes) are kept, a
  beam search: the heuristic for large, wide graphs.
- Ties are broken by output names, never by the current order, so the result
  does not depend on where the nodes start.
- A segment is rewritten only when its new order strictly lowers its peak, so a
  second run changes nothing.
- Only ``Graph.nodes`` is permuted; values, names and attributes stay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edgec.compiler.pass_manager import Diagnostic, Pass, PassResult, register_pass
from edgec.errors import CompileError
from edgec.ir import Graph, Model, Node, Value
from edgec.passes.plan_memory import can_overwrite, inplace_candidates, peak_live_bytes
from edgec.units import human_size

logger = logging.getLogger(__name__)

DEFAULT_MAX_STATES = 1024


def node_key(node: Node) -> str:
    """A tie-break name independent of the node's position (value names are unique)."""
    return node.outputs[0].name if node.outputs else f"{node.op_type}:{node.name}"


def reads(node: Node) -> list[Value]:
    """The distinct non-constant values a node reads, subgraph reads included."""
    return list(dict.fromkeys(v for v in [*node.inputs, *node.implicit_inputs] if v is not None and not v.is_constant))


def segments(graph: Graph) -> list[list[Node]]:
    """Split the node list at cut nodes (comparable with every other node), keeping the current order."""
    nodes = graph.nodes
    index = {id(n): i for i, n in enumerate(nodes)}
    preds = [[index[id(v.producer)] for v in reads(n) if v.producer is not None] for n in nodes]
    ancestors = [0] * len(nodes)
    for i in range(len(nodes)):
        for p in preds[i]:
            ancestors[i] |= ancestors[p] | (1 << p)
    descendants = [0] * len(nodes)
    for i in reversed(range(len(nodes))):
        for p in preds[i]:
            descendants[p] |= descendants[i] | (1 << i)
    found: list[list[Node]] = []
    current: list[Node] = []
    for i, node in enumerate(nodes):
        if ancestors[i].bit_count() == i and descendants[i].bit_count() == len(nodes) - 1 - i:
            found.extend([current, [node]] if current else [[node]])
            current = []
        else:
            current.append(node)
    if current:
        found.append(current)
    return found


@dataclass
class Segment:
    """A segment's nodes in tie-break order, with the search's inputs as bit masks and bytes."""

    nodes: list[Node]
    preds: list[int]
    """Per node, the mask of its predecessors in the segment."""
    succs: list[list[int]]
    adds: list[int]
    """Per node, the bytes of its outputs."""
    drops: list[int]
    """Per node, the bytes of its outputs that nothing reads: freed right after it runs."""
    frees: list[list[tuple[int, int]]]
    """Per node, (mask of the value's readers here, bytes) for each input that dies in this segment."""
    inplace: list[list[tuple[int, int]]]
    """Per node, the same for the inputs whose buffer its output may take."""

    def step(self, done: int, i: int, live: int) -> tuple[int, int]:
        """(bytes live while node ``i`` runs, bytes live after it) given the nodes ``done`` before it."""
        after_mask = done | (1 << i)
        dying = [(readers, size) for readers, size in self.frees[i] if not readers & ~after_mask]
        saving = next((size for readers, size in self.inplace[i] if not readers & ~after_mask), 0)
        during = live + self.adds[i] - saving
        return during, live + self.adds[i] - self.drops[i] - sum(size for _, size in dying)


def build_segment(graph: Graph, nodes: list[Node], later: set[int]) -> Segment:
    """``later``: ids of the nodes in the segments after this one."""
    nodes = sorted(nodes, key=node_key)
    bit = {id(n): 1 << i for i, n in enumerate(nodes)}
    position = {id(n): i for i, n in enumerate(nodes)}

    def readers_here(value: Value) -> int:
        return sum(dict.fromkeys(bit[id(u)] for u in value.uses if id(u) in bit))

    def dies_here(value: Value) -> bool:
        return not graph.is_graph_output(value) and not any(id(u) in later for u in value.uses)

    preds, succs = [], [[] for _ in nodes]
    for i, node in enumerate(nodes):
        inside = list(dict.fromkeys(position[id(v.producer)] for v in reads(node) if id(v.producer) in position))
        preds.append(sum(1 << p for p in inside))
        for p in inside:
            succs[p].append(i)
    adds = [sum(v.nbytes or 0 for v in n.outputs) for n in nodes]
    drops = [sum(v.nbytes or 0 for v in n.outputs if not v.uses and not graph.is_graph_output(v)) for n in nodes]
    frees = [[(readers_here(v), v.nbytes or 0) for v in reads(n) if dies_here(v)] for n in nodes]
    inplace = []
    for node in nodes:
        out = node.outputs[0] if node.outputs else None
        takers = [] if out is None or out.nbytes is None or graph.is_graph_output(out) else [
            (readers_here(v), v.nbytes or 0) for v in inplace_candidates(node) if can_overwrite(graph, v) and dies_here(v)]
        inplace.append(takers)
    return Segment(nodes, preds, succs, adds, drops, frees, inplace)


def simulate(segment: Segment, order: list[int]) -> int:
    """The peak of an order, relative to the bytes live when the segment starts."""
    done, live, peak = 0, 0, None
    for i in order:
        during, live = segment.step(done, i, live)
        peak = during if peak is None else max(peak, during)
        done |= 1 << i
    return peak


def schedule(segment: Segment, max_states: int) -> tuple[list[int], int, bool]:
    """(order, relative peak, exact): dynamic programming over run sets, a beam past ``max_states``."""
    n = len(segment.nodes)
    start = tuple(i for i in range(n) if not segment.preds[i])
    layer = {0: (None, 0, -1, start)}  # run set -> (peak, live bytes, last node, ready nodes)
    history, exact = [], True
    for _ in range(n):
        following: dict[int, tuple] = {}
        for done, (peak, live, _, ready) in layer.items():
            for i in ready:
                during, after = segment.step(done, i, live)
                best = during if peak is None else max(peak, during)
                mask = done | (1 << i)
                known = following.get(mask)
                if known is None or (best, i) < (known[0], known[2]):
                    following[mask] = (best, after, i, ready)
        for mask, (best, after, i, ready) in following.items():
            opened = [j for j in segment.succs[i] if not segment.preds[j] & ~mask]
            following[mask] = (best, after, i, tuple(sorted(j for j in (*ready, *opened) if j != i)))
        if len(following) > max_states:
            exact = False
            kept = sorted(following, key=lambda m: (following[m][0], following[m][1], m))[:max_states]
            following = {m: following[m] for m in kept}
        history.append(following)
        layer = following
    mask = (1 << n) - 1
    peak = history[-1][mask][0]
    order = []
    for states in reversed(history):
        last = states[mask][2]
        order.append(last)
        mask &= ~(1 << last)
    return order[::-1], peak, exact


@dataclass
class Reordering:
    """What ``reorder_for_memory`` found: the new order and the peaks that judge it."""

    nodes: list[Node]
    peak_before: int
    peak_after: int
    segments: int
    exact_segments: int
    changed_segments: int


def reorder_for_memory(graph: Graph, max_states: int = DEFAULT_MAX_STATES, inplace: bool = True) -> Reordering:
    """A node order with a peak no higher than the current one; the graph is not changed."""
    parts = segments(graph)
    later = {id(n) for n in graph.nodes}
    new_order: list[Node] = []
    exact_count = changed = 0
    for part in parts:
        later -= {id(n) for n in part}
        if len(part) == 1:
            new_order.extend(part)
            exact_count += 1
            continue
        segment = build_segment(graph, part, later)
        if not inplace:
            segment.inplace = [[] for _ in segment.nodes]
        position = {id(n): i for i, n in enumerate(segment.nodes)}
        current = [position[id(n)] for n in part]
        order, peak, exact = schedule(segment, max_states)
        exact_count += exact
        if peak < simulate(segment, current):
            new_order.extend(segment.nodes[i] for i in order)
            changed += 1
        else:
            new_order.extend(part)
    before, saved = peak_live_bytes(graph, inplace), graph.nodes
    try:  # measure the new order with plan-memory's own rules, then put the old one back
        graph.nodes = new_order
        after = peak_live_bytes(graph, inplace)
    finally:
        graph.nodes = saved
    return Reordering(new_order, before, after, len(parts), exact_count, changed)


@register_pass
class ReorderForMemory(Pass):
    name = "reorder-for-memory"

    @dataclass
    class Options:
        max_states: int = DEFAULT_MAX_STATES
        inplace: bool = True

    def requires(self, model: Model) -> None:
        if self.options.max_states < 1:
            raise CompileError(f"max-states must be positive, got {self.options.max_states}")

    def call(self, model: Model) -> PassResult:
        graph = model.graph
        found = reorder_for_memory(graph, self.options.max_states, self.options.inplace)
        modified = found.changed_segments > 0
        if modified:
            graph.nodes = found.nodes
        stats = {"peak-before-bytes": found.peak_before, "peak-after-bytes": found.peak_after,
                 "segments": found.segments, "segments-exact": found.exact_segments,
                 "segments-reordered": found.changed_segments}
        note = f"peak live bytes {human_size(found.peak_before)} -> {human_size(found.peak_after)}"
        if found.exact_segments < found.segments:
            note += f" ({found.segments - found.exact_segments} segments by beam search, not proven optimal)"
        logger.debug("%s: %s", self.name, note)
        return PassResult(model, modified, stats, [Diagnostic("note", note)])
