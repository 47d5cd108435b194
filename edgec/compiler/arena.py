"""Packing buffers with known lifetimes into one arena: the offset algorithms.

Shared by ``plan-memory`` (edgec's graph, before lowering) and the lowering's
arena for the tensors TVM actually allocates (``targets/arena.py``): both hand over
``Buffer`` regions, each live over an inclusive range of steps, and get back one
offset per region. Two regions live at a common step never overlap; offsets are
multiples of the alignment.

- ``greedy-by-size``: largest first, each at the lowest offset that fits
  (TFLite Micro's GreedyMemoryPlanner);
- ``best-fit``: largest first, each in the smallest gap that fits (Pisarchyk and
  Lee, "Efficient Memory Management for Deep Neural Net Inference", 2020);
- ``greedy-by-breadth``: regions in the busiest steps first, best fit;
- ``exact``: branch and bound over placement orders, from the best heuristic
  packing, within ``EXACT_BUDGET`` placements (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

EXACT_MAX_TENSORS = 24
EXACT_BUDGET = 20_000
"""Placements the exact search may try before it settles for the best found."""


@dataclass
class Buffer:
    """One region of the arena: an in-place chain of values, live from its first to its last step."""

    members: list
    """What shares this region: a planner's own records (edgec values, TVM tensors)."""
    size: int
    first: int
    last: int
    index: int

    def conflicts(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def live_bytes(bufs: list[Buffer], steps: int) -> list[int]:
    """Bytes live at each step."""
    profile = [0] * max(steps, 1)
    for buffer in bufs:
        for step in range(buffer.first, buffer.last + 1):
            profile[step] += buffer.size
    return profile


# -- offset algorithms ----------------------------------------------------------------------------


def align_up(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def gaps(buffer: Buffer, placed: list[tuple[Buffer, int]], alignment: int) -> list[tuple[int, int | None]]:
    """Free (aligned start, length or None for unbounded) ranges among the placed buffers live with this one."""
    busy = sorted((offset, offset + other.size) for other, offset in placed if other.conflicts(buffer))
    found, cursor = [], 0
    for start, stop in busy:
        begin = align_up(cursor, alignment)
        if start - begin >= buffer.size:
            found.append((begin, start - begin))
        cursor = max(cursor, stop)
    found.append((align_up(cursor, alignment), None))
    return found


def first_fit(buffer: Buffer, placed: list[tuple[Buffer, int]], alignment: int) -> int:
    return gaps(buffer, placed, alignment)[0][0]


def best_fit(buffer: Buffer, placed: list[tuple[Buffer, int]], alignment: int) -> int:
    found = gaps(buffer, placed, alignment)
    bounded = [(length, start) for start, length in found if length is not None]
    return min(bounded)[1] if bounded else found[-1][0]


def place(order: list[Buffer], fit: Callable, alignment: int) -> dict[int, int]:
    placed: list[tuple[Buffer, int]] = []
    for buffer in order:
        placed.append((buffer, fit(buffer, placed, alignment)))
    return {b.index: offset for b, offset in placed}


def by_size(bufs: list[Buffer]) -> list[Buffer]:
    return sorted(bufs, key=lambda b: (-b.size, b.first, b.index))


def greedy_by_size(bufs: list[Buffer], alignment: int, profile: list[int]) -> dict[int, int]:
    return place(by_size(bufs), first_fit, alignment)


def greedy_best_fit(bufs: list[Buffer], alignment: int, profile: list[int]) -> dict[int, int]:
    return place(by_size(bufs), best_fit, alignment)


def greedy_by_breadth(bufs: list[Buffer], alignment: int, profile: list[int]) -> dict[int, int]:
    """The tensors of the step with most live bytes first: the peak is where packing is tight."""
    pressure = {b.index: max(profile[b.first:b.last + 1]) for b in bufs}
    return place(sorted(bufs, key=lambda b: (-pressure[b.index], -b.size, b.first, b.index)), best_fit, alignment)


def arena_size(bufs: list[Buffer], offsets: dict[int, int]) -> int:
    return max((offsets[b.index] + b.size for b in bufs), default=0)


def exact(bufs: list[Buffer], alignment: int, start: dict[int, int], upper: int) -> tuple[dict[int, int], int, bool]:
    """Branch and bound from a known packing of ``upper`` bytes: (offsets, arena, proven optimal).

    Some optimal packing is what first-fit gives when the tensors come in ascending
    (offset, index) order, so only such orders are searched.
    """
    best: list = [start, upper]
    tries = 0

    def search(placed: list[tuple[Buffer, int]], left: list[Buffer], last: tuple[int, int], top: int) -> None:
        nonlocal tries
        if not left:
            best[:] = [{b.index: o for b, o in placed}, top]
            return
        for buffer in left:
            if tries >= EXACT_BUDGET:
                return
            tries += 1
            offset = first_fit(buffer, placed, alignment)
            if (offset, buffer.index) < last or max(top, offset + buffer.size) >= best[1]:
                continue
            rest = [b for b in left if b is not buffer]
            search([*placed, (buffer, offset)], rest, (offset, buffer.index), max(top, offset + buffer.size))

    search([], by_size(bufs), (-1, -1), 0)
    return best[0], best[1], tries < EXACT_BUDGET


ALGORITHMS: dict[str, Callable] = {
    "greedy-by-size": greedy_by_size,
    "best-fit": greedy_best_fit,
    "greedy-by-breadth": greedy_by_breadth,
}
CHOICES = ("auto", *ALGORITHMS, "exact")


@dataclass(frozen=True)
class Packing:
    offsets: dict[int, int]
    """Offset of each buffer, by ``Buffer.index``."""
    arena_bytes: int
    lower_bound: int
    algorithm: str
    sizes: dict[str, int]
    """Arena bytes of every algorithm tried, the chosen one included."""
    optimal: bool
    live: list[int]


def pack(bufs: list[Buffer], steps: int, alignment: int, algorithm: str = "auto") -> Packing:
    """Offsets for ``bufs``: every heuristic under ``auto``, keeping the smallest arena (ties to the earlier
    one in ``ALGORITHMS``), then the exact search for small sets that miss the lower bound."""
    if algorithm not in CHOICES:
        raise ValueError(f"unknown memory-planning algorithm {algorithm!r} (known: {', '.join(CHOICES)})")
    if alignment < 1:
        raise ValueError(f"alignment must be positive, got {alignment}")
    profile = live_bytes(bufs, steps)
    lower = max(profile)
    names = [algorithm] if algorithm in ALGORITHMS else list(ALGORITHMS)
    results = {name: ALGORITHMS[name](bufs, alignment, profile) for name in names}
    sizes = {name: arena_size(bufs, offsets) for name, offsets in results.items()}
    chosen = min(sizes, key=lambda name: (sizes[name], names.index(name)))
    optimal = sizes[chosen] == lower
    if algorithm == "exact" or (algorithm == "auto" and not optimal and len(bufs) <= EXACT_MAX_TENSORS):
        results["exact"], sizes["exact"], optimal = exact(bufs, alignment, results[chosen], sizes[chosen])
        if algorithm == "exact" or sizes["exact"] < sizes[chosen]:
            chosen = "exact"
    return Packing(results[chosen], sizes[chosen], lower, chosen, sizes, optimal, profile)
