"""Pass instruments: timing, statistics, IR printing, numbered IR dumps and crash
reproducers. Each writes to the stream or directory it is given, never to stdout
by itself, so the CLI decides where reports go (stderr by default)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TextIO

from ..frontend.exporter import export_model
from ..ir import Model, print_model
from .pass_manager import Instrument, Pass, PassResult, Pipeline

RULE = "===" + "-" * 73 + "==="


def banner(title: str) -> str:
    return f"{RULE}\n{('... ' + title + ' ...').center(len(RULE))}\n{RULE}\n"


class TimingInstrument(Instrument):
    """``--timing``: wall time per pass, MLIR's execution time report."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.rows: list[tuple[str, float]] = []

    def after_pass(self, pass_: Pass, result: PassResult, index: int, seconds: float) -> None:
        self.rows.append((pass_.name, seconds))

    def after_pipeline(self, model: Model) -> None:
        total = sum(seconds for _, seconds in self.rows) or 1e-12
        lines = [banner("Execution time report").rstrip("\n")]
        lines.append(f"  Total Execution Time: {total:.4f} seconds\n")
        lines.append("  ----Wall Time----  ----Name----")
        for name, seconds in self.rows:
            lines.append(f"  {seconds:8.4f} ({100 * seconds / total:5.1f}%)  {name}")
        lines.append(f"  {total:8.4f} (100.0%)  Total")
        self.stream.write("\n".join(lines) + "\n")


class StatisticsInstrument(Instrument):
    """``--pass-statistics``: the counters each pass returned."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.rows: list[tuple[str, bool, dict[str, int]]] = []

    def after_pass(self, pass_: Pass, result: PassResult, index: int, seconds: float) -> None:
        self.rows.append((pass_.name, result.modified, dict(result.stats)))

    def after_pipeline(self, model: Model) -> None:
        lines = [banner("Pass statistics report").rstrip("\n")]
        for name, modified, stats in self.rows:
            lines.append(f"'{name}'" + ("" if modified else " (no change)"))
            for key, count in stats.items():
                lines.append(f"  (S) {count:6d} {key}")
        self.stream.write("\n".join(lines) + "\n")


class RecordInstrument(Instrument):
    """``opt --json``: each pass's name, whether it changed the model, its counters and diagnostics."""

    def __init__(self):
        self.passes: list[dict] = []

    def after_pass(self, pass_: Pass, result: PassResult, index: int, seconds: float) -> None:
        self.passes.append({"pass": pass_.name, "modified": result.modified, "stats": dict(result.stats),
                            "diagnostics": [str(d) for d in result.diagnostics]})


class PrintIRInstrument(Instrument):
    """``--print-ir-after-all``, ``--print-ir-after=NAME``, ``--print-ir-after-change``,
    ``--print-ir-after-failure``, ``--print-ir-before=NAME``."""

    def __init__(
        self,
        stream: TextIO,
        after_all: bool = False,
        after: frozenset[str] = frozenset(),
        before: frozenset[str] = frozenset(),
        after_change: bool = False,
        after_failure: bool = False,
    ):
        self.stream = stream
        self.after_all, self.after, self.before = after_all, after, before
        self.after_change, self.on_failure = after_change, after_failure

    def dump(self, title: str, model: Model) -> None:
        self.stream.write(f"// -----// IR Dump {title} //----- //\n{print_model(model)}\n")

    def before_pass(self, pass_: Pass, model: Model, index: int) -> None:
        if pass_.name in self.before:
            self.dump(f"Before {pass_.name}", model)

    def after_pass(self, pass_: Pass, result: PassResult, index: int, seconds: float) -> None:
        wanted = self.after_all or pass_.name in self.after or (self.after_change and result.modified)
        if wanted:
            self.dump(f"After {pass_.name}" + ("" if result.modified else " (no change)"), result.model)

    def after_failure(self, pass_: Pass, model: Model, error: Exception, index: int) -> None:
        if self.on_failure:
            self.dump(f"After {pass_.name} Failed", model)


class DumpIRInstrument(Instrument):
    """``--dump-ir-dir DIR``: ``000_input.txt``, ``001_remove-identity.txt``, ..."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def before_pipeline(self, model: Model, pipeline: Pipeline) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "000_input.txt").write_text(print_model(model))

    def after_pass(self, pass_: Pass, result: PassResult, index: int, seconds: float) -> None:
        (self.directory / f"{index:03d}_{pass_.name}.txt").write_text(print_model(result.model))

    def after_failure(self, pass_: Pass, model: Model, error: Exception, index: int) -> None:
        (self.directory / f"{index:03d}_{pass_.name}.failed.txt").write_text(print_model(model))


class CrashReproducer(Instrument):
    """``--crash-reproducer DIR``: on a failing pass, write the pipeline's input model
    (exact ONNX and readable IR) and the pipeline string, so ``edgec opt`` replays it.

    The input is snapshotted before the first pass because passes rewrite in place.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.snapshot: bytes | None = None
        self.snapshot_text = ""
        self.pipeline = ""

    def before_pipeline(self, model: Model, pipeline: Pipeline) -> None:
        self.snapshot = export_model(model).SerializeToString()
        self.snapshot_text = print_model(model)
        self.pipeline = str(pipeline)

    def after_failure(self, pass_: Pass, model: Model, error: Exception, index: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "input.onnx").write_bytes(self.snapshot or b"")
        (self.directory / "input.txt").write_text(self.snapshot_text)
        (self.directory / "pipeline.txt").write_text(self.pipeline + "\n")
        (self.directory / "error.txt").write_text(f"pass '{pass_.name}' (#{index}) failed: {error}\n")
        replay = f"edgec opt {shlex.quote(str(self.directory / 'input.onnx'))} --passes {shlex.quote(self.pipeline)}"
        (self.directory / "replay.sh").write_text(f"#!/bin/sh\n{replay}\n")
