"""The tables edgec prints (reports, plans, listings), drawn by rich so every one has the
same look: a header, columns two spaces apart, numbers right-aligned, no box, no colors,
nothing wrapped or cut (logs and scripts read them whole)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[str] = ()) -> list[str]:
    """The table's lines; the columns named in ``right`` are right-aligned."""
    from rich.console import Console
    from rich.table import Table

    right = set(right)
    drawn = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="", show_edge=False)
    for name in header:
        drawn.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for row in rows:
        drawn.add_row(*row)
    console = Console(file=io.StringIO(), width=100_000, color_system=None, highlight=False, emoji=False,
                      markup=False, soft_wrap=False)
    console.print(drawn)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]
