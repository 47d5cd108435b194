"""Per-kernel timings of a model's CPU code: where the time goes, and how close each
kernel comes to the machine's peak (benchmarks/roofline.py draws them).

Each scheduled kernel of the model (as ``lower`` schedules it, tuning records
included) is built on its own and timed with TVM's ``time_evaluator`` on random
arguments of its real shapes. Counts come from MetaSchedule's FLOP estimate; the
bytes are the kernel's arguments (inputs, weights, outputs), the compulsory
memory traffic a roofline puts on its x axis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class KernelTime:
    name: str
    calls: int
    """How often ``main`` calls the kernel per inference."""
    flops: float
    bytes: int
    seconds: float
    tuned: bool

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else math.nan

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else math.nan

    def to_dict(self) -> dict:
        return {**asdict(self), "gflops": self.gflops, "intensity": self.intensity}


def profile_kernels(model, target, tuning_db: Path | None = None, min_repeat_ms: int = 100,
                    threads: int | None = None) -> list[KernelTime]:
    """Time every scheduled kernel of ``model`` (an edgec Model after the default passes)."""
    import os

    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)  # before TVM's thread pool starts
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from .cpu_schedules import schedule_for_cpu
    from .lowering import onnx_for_tvm
    from .tuning import flop_count, open_database

    database = open_database(tuning_db, target) if tuning_db else None
    tuned: list[str] = []
    mod, _ = schedule_for_cpu(from_onnx(onnx_for_tvm(model)[0], keep_params_in_input=True), target, database, tuned)
    calls = call_counts(mod, relax)
    tvm_target = tvm.target.Target(target.tvm_target)
    device = tvm.cpu()
    rng = np.random.default_rng(0)
    timings = []
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or gvar.name_hint not in calls:
            continue
        kernel = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
        args, nbytes = [], 0
        for info in ArgInfo.from_prim_func(func):
            shape, dtype = [int(d) for d in info.shape], str(info.dtype)
            array = rng.uniform(-1, 1, shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
            args.append(tvm.runtime.tensor(array, device))
            nbytes += array.nbytes
        library = tvm.compile(kernel, target=tvm_target)
        evaluator = library.mod.time_evaluator("main", device, number=1, repeat=5, min_repeat_ms=min_repeat_ms)
        seconds = float(np.median(evaluator(*args).results))
        timings.append(KernelTime(gvar.name_hint, calls[gvar.name_hint], flop_count(kernel), nbytes, seconds,
                                  gvar.name_hint in tuned))
    return timings


def call_counts(mod, relax) -> dict[str, int]:
    """Kernel name -> call_tir sites in ``main``."""
    counts: dict[str, int] = {}

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            name = expr.args[0].name_hint
            counts[name] = counts.get(name, 0) + 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return counts
