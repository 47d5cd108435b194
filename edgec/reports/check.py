"""Checking and timing a loaded artifact: against onnxruntime, and for latency.

Works on anything with ``run(feeds) -> outputs`` (a local CompiledModel or a model
on a lab device), so the same code serves ``edgec check`` and ``edgec bench`` there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgecError, UsageError


@dataclass
class OutputComparison:
    name: str
    size: int
    max_abs: float
    max_rel: float
    mismatched: int

    @property
    def ok(self) -> bool:
        return self.mismatched == 0


@dataclass
class CheckReport:
    rows: list[OutputComparison]

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)


def compare_with_onnxruntime(compiled, model: Path, feeds: dict, rtol: float, atol: float) -> CheckReport:
    """Run both on ``feeds``; count elements outside ``|a - e| <= atol + rtol * |e|``."""
    from ..frontend.reference import ort_session

    if not Path(model).is_file():
        raise UsageError(f"{model}: no such file")
    try:
        session = ort_session(str(model))
        expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise EdgecError(f"{model}: onnxruntime cannot run it on the artifact's inputs: {exc}") from None
    actual = compiled.run(feeds)
    rows = []
    for name, reference in expected.items():
        if name not in actual:
            raise UsageError(f"{model}: output '{name}' is not among the artifact's outputs ({', '.join(actual)})")
        got, reference = actual[name].astype(np.float64), reference.astype(np.float64)
        diff = np.abs(got - reference)
        rel = diff / np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
        bad = int(np.count_nonzero(~(diff <= atol + rtol * np.abs(reference))))
        rows.append(OutputComparison(name, reference.size, float(diff.max(initial=0)), float(rel.max(initial=0)), bad))
    return CheckReport(rows)


FRESH_PROCESS = "a fresh Python process: interpreter start, imports, load, first run, exit; warm file cache"
IN_PROCESS = "from the start of loading to the first result, in this process"

FIRST_RUN_SCRIPT = """
import sys
import numpy as np
import edgec.runtime
model = edgec.runtime.load(sys.argv[1])
with np.load(sys.argv[2], allow_pickle=False) as feeds:
    model.run(dict(feeds))
"""


@dataclass
class Latency:
    first_s: float
    """What a user waits for once: see ``first_how``."""
    runs_s: list[float] = field(default_factory=list)
    emulated: bool = False
    first_how: str = IN_PROCESS

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.runs_s, q))

    def as_dict(self) -> dict:
        return {
            "first_ms": 1e3 * self.first_s,
            "median_ms": 1e3 * self.percentile(50),
            "p10_ms": 1e3 * self.percentile(10),
            "p90_ms": 1e3 * self.percentile(90),
            "runs": len(self.runs_s),
            "emulated": self.emulated,
            "first_measured_as": self.first_how,
        }

    def summary(self) -> str:
        d = self.as_dict()
        label = " (EMULATED: says nothing about device speed)" if self.emulated else ""
        return (f"first-time latency {d['first_ms']:.2f} ms ({self.first_how}){label}\n"
                f"steady state: median {d['median_ms']:.3f} ms, p10 {d['p10_ms']:.3f} ms, "
                f"p90 {d['p90_ms']:.3f} ms over {d['runs']} runs{label}")


def measure_latency(compiled, feeds: dict, repeat: int, warmup: int, started: float) -> Latency:
    """Time the first run (counted from ``started``, before loading), then steady-state runs.

    A model on a lab device times its steady-state runs on the device itself
    (``compiled.time``), so network round trips do not count."""
    if hasattr(compiled, "time"):
        loaded = time.perf_counter() - started
        timing = compiled.time(feeds, repeat=repeat)
        return Latency(loaded + timing.first, list(timing.runs), emulated=timing.emulated)
    compiled.run(feeds)
    latency = Latency(time.perf_counter() - started, emulated=getattr(compiled, "emulated", False))
    if getattr(compiled, "path", None) is not None:  # a local artifact: what an app's process pays
        latency.first_s, latency.first_how = fresh_process_first_run(compiled.path, feeds), FRESH_PROCESS
    for _ in range(warmup):
        compiled.run(feeds)
    for _ in range(repeat):
        start = time.perf_counter()
        compiled.run(feeds)
        latency.runs_s.append(time.perf_counter() - start)
    return latency


def fresh_process_first_run(artifact: Path, feeds: dict) -> float:
    """Wall time, measured from outside, of a new Python process that imports edgec's runtime,
    loads ``artifact`` and runs it once on ``feeds``: the first-time latency an app pays,
    which a process that has imported the runtime already would understate."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgec-first-") as workdir:
        inputs = Path(workdir) / "inputs.npz"
        np.savez(inputs, **feeds)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", FIRST_RUN_SCRIPT, str(artifact), str(inputs)],
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise EdgecError(f"{artifact}: the first run in a fresh process failed: {lines[-1]}")
    return elapsed
