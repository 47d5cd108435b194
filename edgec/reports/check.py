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
from ..units import human_size


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
FRESH_WORKING_SET = ("in the fresh process of the first run: peak resident memory (VmHWM, reset before loading) "
                     "less resident memory before loading (VmRSS): loading and running the model, the TVM runtime "
                     "included")
WHOLE_PROCESS = ("peak resident memory of this whole process (VmHWM): an upper bound, as it includes the interpreter "
                 "and everything loaded before the model")

FIRST_RUN_SCRIPT = """
import json
import sys
import numpy as np
import edgec.runtime

def status(key):
    try:
        with open("/proc/self/status") as lines:
            return next((int(line.split()[1]) * 1024 for line in lines if line.startswith(key + ":")), None)
    except OSError:
        return None

with np.load(sys.argv[2], allow_pickle=False) as arrays:
    feeds = dict(arrays)
before = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM (Linux 4.0+)
    reset = True
except OSError:
    reset = False
edgec.runtime.load(sys.argv[1]).run(feeds)
print(json.dumps({"before": before, "peak": status("VmHWM"), "reset": reset}))
"""


@dataclass
class Latency:
    first_s: float
    """What a user waits for once: see ``first_how``."""
    runs_s: list[float] = field(default_factory=list)
    emulated: bool = False
    first_how: str = IN_PROCESS
    working_set_bytes: int | None = None
    """Memory that loading and running the model takes (see ``working_set_how``); None: not measured."""
    working_set_how: str = "not measured"

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
            "working_set_bytes": self.working_set_bytes,
            "working_set_measured_as": self.working_set_how,
        }

    def summary(self) -> str:
        d = self.as_dict()
        label = " (EMULATED: says nothing about device speed)" if self.emulated else ""
        memory = "not measured" if self.working_set_bytes is None else human_size(self.working_set_bytes)
        return (f"first-time latency {d['first_ms']:.2f} ms ({self.first_how}){label}\n"
                f"steady state: median {d['median_ms']:.3f} ms, p10 {d['p10_ms']:.3f} ms, "
                f"p90 {d['p90_ms']:.3f} ms over {d['runs']} runs{label}\n"
                f"working set {memory} ({self.working_set_how})")


def measure_latency(compiled, feeds: dict, repeat: int, warmup: int, started: float) -> Latency:
    """Time the first run (counted from ``started``, before loading), then steady-state runs.

    A local artifact's first run and working set are measured in a fresh process, what an
    app pays at start; ``check`` and ``bench`` both take them from here. A model on a lab
    device times its steady-state runs on the device itself (``compiled.time``), so network
    round trips do not count; it reports no memory."""
    if hasattr(compiled, "time"):
        loaded = time.perf_counter() - started
        timing = compiled.time(feeds, repeat=repeat)
        return Latency(loaded + timing.first, list(timing.runs), emulated=timing.emulated,
                       working_set_how="the device reports no memory figures")
    compiled.run(feeds)
    latency = Latency(time.perf_counter() - started, emulated=getattr(compiled, "emulated", False))
    if getattr(compiled, "path", None) is not None:  # a local artifact: what an app's process pays
        latency.first_s, latency.working_set_bytes, latency.working_set_how = fresh_process_first_run(compiled.path, feeds)
        latency.first_how = FRESH_PROCESS
    for _ in range(warmup):
        compiled.run(feeds)
    for _ in range(repeat):
        start = time.perf_counter()
        compiled.run(feeds)
        latency.runs_s.append(time.perf_counter() - start)
    if latency.working_set_bytes is None and getattr(compiled, "path", None) is None:
        latency.working_set_bytes, latency.working_set_how = proc_status("VmHWM"), WHOLE_PROCESS
    return latency


def fresh_process_first_run(artifact: Path, feeds: dict) -> tuple[float, int | None, str]:
    """Wall time, measured from outside, of a new Python process that imports edgec's runtime,
    loads ``artifact`` and runs it once on ``feeds`` (the first-time latency an app pays,
    which a process that has imported the runtime already would understate), and the
    memory loading and running took in that process, which holds nothing else."""
    import json
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
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    if memory["peak"] is None:
        return elapsed, None, "no /proc/self/status (not Linux)"
    if memory["reset"] and memory["before"] is not None:
        return elapsed, memory["peak"] - memory["before"], FRESH_WORKING_SET
    return elapsed, memory["peak"], ("in the fresh process of the first run: its peak resident memory (VmHWM), "
                                     "the interpreter included (no /proc/self/clear_refs to reset it)")


def proc_status(key: str) -> int | None:
    """A byte figure (VmRSS, VmHWM...) of this process, from Linux's /proc/self/status."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
