"""Tuning records: MetaSchedule measures schedules for a model's compute kernels.

``tune`` extracts the kernels exactly as a compile schedules them (the graph
rewrites of ``cpu_schedules.prepare_for_schedules``), so a record matches the
kernel the next ``edgec compile --tuning-db`` sees; kernels without a record keep
the rules. Measurements run on this CPU (``LocalRunner``) or on a lab device
through a TVM RPC tracker (``RPCRunner``), with the target's thread count.

A database directory is MetaSchedule's JSON database (two JSON-lines files that
every measurement is appended to as it arrives, so a killed run loses nothing)
plus ``edgec-tuning.json``, which names the target the records were measured
for. A resumed run counts the trials already recorded and runs only the rest of
the budget.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgec.errors import CompileError, UsageError

logger = logging.getLogger(__name__)

TUNING_META = "edgec-tuning.json"
RECORD_FILES = ("database_workload.json", "database_tuning_record.json")
TRIALS_PER_ROUND = 8
BUILD_TIMEOUT_S = 120.0
"""Per candidate, including a build worker's first ``import tvm`` on a loaded 2-core machine."""


@dataclass
class KernelTuning:
    """One tuned kernel: how often the model calls it, its trials and best time."""

    name: str
    weight: int
    flops: float
    trials: int = 0
    best_seconds: float | None = None
    rule_seconds: float | None = None
    """The rule-based schedule's time, measured the same way: a record is used only if faster."""

    def to_dict(self) -> dict:
        def micros(seconds):
            return None if seconds is None else round(seconds * 1e6, 3)

        return {"name": self.name, "weight": self.weight, "flops": self.flops, "trials": self.trials,
                "best_us": micros(self.best_seconds), "rules_us": micros(self.rule_seconds)}


@dataclass
class TuneSummary:
    database: Path
    target: str
    threads: int
    kernels: list[KernelTuning] = field(default_factory=list)
    trials_before: int = 0
    trials_run: int = 0

    def to_dict(self) -> dict:
        return {"database": str(self.database), "target": self.target, "threads": self.threads,
                "trials_before": self.trials_before, "trials_run": self.trials_run,
                "kernels": [k.to_dict() for k in self.kernels]}


Progress = Callable[[int, int, KernelTuning | None], None]
"""(trials done, trial budget, the kernel that just improved or None)."""


def record_files(db_dir: Path) -> list[Path]:
    """The files a compile reads from a database: what a build system watches."""
    return [db_dir / TUNING_META, *(db_dir / name for name in RECORD_FILES)]


class TuningRecords:
    """A database directory: MetaSchedule's records, plus the time of each kernel's rule-based
    schedule measured the same way, so a compile takes a record only where it beats the rules."""

    def __init__(self, db_dir: Path, database, meta: dict):
        self.db_dir, self.database, self.meta = db_dir, database, meta

    @property
    def rule_seconds(self) -> dict[str, float]:
        return self.meta.setdefault("rule_seconds", {})

    def save_meta(self) -> None:
        path = self.db_dir / TUNING_META
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")
        temporary.replace(path)

    def schedule_for(self, func, tvm_target):
        """The tuned version of a PrimFunc, or None: no record, or one no faster than the rules."""
        query = kernel_module(func)
        record = self.database.query_tuning_record(query, tvm_target, workload_name="main")
        if record is None or not record.run_secs:
            return None
        rules = self.rule_seconds.get(kernel_key(query))
        if rules is not None and median_seconds(record.run_secs) >= rules:
            return None
        schedule = self.database.query_schedule(query, tvm_target, workload_name="main")
        return None if schedule is None else schedule.mod["main"].without_attr("global_symbol")


def kernel_module(func):
    """A PrimFunc as MetaSchedule's tasks hold it (the workload records are keyed on)."""
    import tvm

    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def kernel_key(mod) -> str:
    import tvm_ffi

    return f"{tvm_ffi.structural_hash(mod) & (2**64 - 1):016x}"


def median_seconds(run_secs) -> float:
    return float(np.median([float(s) for s in run_secs]))


def open_database(db_dir: Path, target, create: bool = False) -> TuningRecords:
    """The records in ``db_dir``, refused when they were measured for another target."""
    from tvm.s_tir import meta_schedule as ms

    meta_path = db_dir / TUNING_META
    if db_dir.exists() and not db_dir.is_dir():
        raise UsageError(f"tuning database {db_dir}: not a directory")
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise UsageError(f"tuning database {meta_path}: unreadable ({exc})") from None
        if meta.get("tvm_target") != target.tvm_target:
            raise UsageError(f"tuning database {db_dir} holds records for target {meta.get('target')} "
                             f"({meta.get('tvm_target')}), not {target.name} ({target.tvm_target})")
    elif create:
        db_dir.mkdir(parents=True, exist_ok=True)
        meta = {"target": target.name, "tvm_target": target.tvm_target, "rule_seconds": {}}
    else:
        raise UsageError(f"tuning database {db_dir}: no {TUNING_META}; create one with 'edgec tune'")
    records = TuningRecords(db_dir, ms.database.JSONDatabase(work_dir=str(db_dir)), meta)
    if not meta_path.exists():
        records.save_meta()
    return records


def tuning_tasks(model, target):
    """The model's compute kernels (those with a reduction) as MetaSchedule tasks."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir import meta_schedule as ms

    from .cpu_schedules import Tiles, has_reduction, prepare_for_schedules
    from .lowering import onnx_for_tvm

    mod = prepare_for_schedules(from_onnx(onnx_for_tvm(model)[0], keep_params_in_input=True), [],
                                Tiles.for_target(target).lanes)
    extracted = ms.relax_integration.extract_tasks(mod, tvm.target.Target(target.tvm_target))
    return [task for task in extracted if has_reduction(task.dispatched[0]["main"])]


def tune(model, target, db_dir: Path, trials: int, device=None, progress: Progress = lambda *_: None,
         seed: int = 0, verbose: bool = False) -> TuneSummary:
    """Spend up to ``trials`` measurements (in total, counting earlier runs) on the model's kernels."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    if trials < 1:
        raise UsageError(f"--trials {trials}: must be at least 1")
    check_device(target, device)
    tasks = tuning_tasks(model, target)
    if not tasks:
        raise CompileError("the model has no compute kernels (conv, dense, matmul, reductions) to tune")
    records = open_database(db_dir, target, create=True)
    database = records.database
    threads = max(1, int(target.cores))  # what the deployed runtime uses (edgec.runtime)
    kernels = [KernelTuning(task.task_name, int(task.weight), float(flop_count(task.dispatched[0])))
               for task in tasks]
    measured = recorded_trials(database, [task.dispatched[0] for task in tasks])
    for kernel, task, (count, best) in zip(kernels, tasks, measured):
        kernel.trials, kernel.best_seconds = count, best
        kernel.rule_seconds = records.rule_seconds.get(kernel_key(task.dispatched[0]))
    summary = TuneSummary(db_dir, target.name, threads, kernels, trials_before=sum(k.trials for k in kernels))
    remaining = trials - summary.trials_before
    if remaining <= 0 and all(kernel.rule_seconds is not None for kernel in kernels):
        return summary

    os.environ["TVM_NUM_THREADS"] = str(threads)  # LocalRunner's workers inherit it
    builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=BUILD_TIMEOUT_S, f_build=build_kernel,
                                      f_export=functools.partial(export_kernel, target.cross_compiler))
    runner = make_runner(target, device)
    measure_rules(records, tasks, target, builder, runner)
    for kernel, task in zip(kernels, tasks):
        kernel.rule_seconds = records.rule_seconds.get(kernel_key(task.dispatched[0]))
    if remaining <= 0:
        return summary
    progress(summary.trials_before, trials, None)
    with contextlib.redirect_stdout(sys.stderr):  # MetaSchedule's log handler binds sys.stdout here
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, str(db_dir), num_threads=threads, seed=seed)
    if not verbose:
        quiet_metaschedule_console()
    callback = progress_callback(kernels, summary, trials, progress)
    try:
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=str(db_dir),
            max_trials_global=remaining,
            num_trials_per_iter=trials_per_round(remaining, len(tasks)),
            builder=builder,
            runner=runner,
            database=database,
            cost_model=cost_model(threads),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), callback],
        )
    except tvm.error.TVMError as exc:
        raise CompileError(f"tuning failed: {str(exc).strip().splitlines()[-1]}") from exc
    return summary


def measure_rules(records: TuningRecords, tasks, target, builder, runner) -> None:
    """Time each kernel's rule-based schedule with the tuning's own builder and runner, once."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from .cpu_schedules import Tiles, schedule_primfunc

    tvm_target = tvm.target.Target(target.tvm_target)
    missing = [task.dispatched[0] for task in tasks if kernel_key(task.dispatched[0]) not in records.rule_seconds]
    if not missing:
        return
    scheduled = []
    for mod in missing:
        func, _ = schedule_primfunc(mod["main"], Tiles.for_target(target))
        scheduled.append(kernel_module(func) if func is not None else mod)
    built = builder.build([ms.builder.BuilderInput(kernel, tvm_target) for kernel in scheduled])
    runnable = [(mod, kernel, result) for mod, kernel, result in zip(missing, scheduled, built) if result.error_msg is None]
    # Packed weights are arguments, as in the compiled model (the packing runs at compile time).
    futures = runner.run([ms.runner.RunnerInput(result.artifact_path, "cpu",
                                                ms.arg_info.ArgInfo.from_entry_func(kernel, remove_preproc=True))
                          for _, kernel, result in runnable])
    for (mod, _, _), future in zip(runnable, futures):
        outcome = future.result()
        if outcome.error_msg is None and outcome.run_secs:
            records.rule_seconds[kernel_key(mod)] = median_seconds(outcome.run_secs)
    records.save_meta()


def cost_model(threads: int):
    """XGBoost's cost model when xgboost is installed (the ``tune`` extra), else random search."""
    from tvm.s_tir import meta_schedule as ms

    try:
        import xgboost  # noqa: F401
    except ImportError:
        logger.warning("xgboost is not installed (pip install 'edgec[tune]'): candidates are picked at random")
        return ms.cost_model.RandomModel()
    return ms.cost_model.XGBModel(num_tuning_cores=threads)


def quiet_metaschedule_console() -> None:
    """MetaSchedule prints its task table on every round; keep it in DB/logs only."""
    meta_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(meta_logger.handlers):
        if type(handler) is logging.StreamHandler:
            meta_logger.removeHandler(handler)


def trials_per_round(remaining: int, tasks: int) -> int:
    """At least two rounds per kernel, so even a tiny budget saves records before it ends."""
    return max(1, min(TRIALS_PER_ROUND, remaining // (2 * tasks)))


def check_device(target, device) -> None:
    """Fail before any work when the measurements could not run where asked."""
    if target.device != "cpu":
        raise UsageError(f"edgec tune tunes CPU kernels; target {target.name} runs on {target.device}")
    if target.family == "cortex-m":
        raise UsageError(f"edgec tune measures kernels with TVM's runtime; target {target.name} is bare-metal "
                         "firmware without one, and an emulator's timing is not the chip's")
    if device is None:
        if reason := target.runs_here():
            raise UsageError(f"{reason}; tune it on a lab device with --device rpc://HOST:PORT/KEY")
    elif not device.via_tracker:
        raise UsageError(f"--device {device}: tuning needs a tracker (rpc://HOST:PORT/KEY)")
    else:
        from edgec.deploy.remote import registered_keys, tracker_summary
        from edgec.errors import DeviceError

        keys = registered_keys(tracker_summary(device.host, device.port))  # unreachable: a DeviceError
        if device.key not in keys:
            known = ", ".join(sorted(keys)) or "none"
            raise DeviceError(f"no server is registered under key {device.key!r} at tracker "
                              f"{device.host}:{device.port} (registered: {known})")


def make_runner(target, device):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=5, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
    if device is None:
        return ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=60)
    from edgec.deploy.remote import registered_keys, tracker_summary

    config = ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port, tracker_key=device.key,
                                 session_timeout_sec=120)
    # One measurement in flight per device under the key: the tracker hands each to a free one.
    devices = max(1, registered_keys(tracker_summary(device.host, device.port)).get(device.key, 0))
    return ms.runner.RPCRunner(config, evaluator_config=evaluator, max_workers=devices,
                               f_alloc_argument=random_arguments, f_run_evaluator=run_with_threads)


def build_kernel(mod, target, _params):
    """MetaSchedule's default build without importing ``tvm.s_tir.tensor_intrin``: that import
    takes 20 s in every fresh build worker, and fp32 CPU kernels use no tensor intrinsics."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def export_kernel(cross_compiler: str | None, module) -> str:
    """A shared library the device loads as is: linked here, with the cross toolchain if any."""
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgec-tune-"), "kernel.so")
    module.export_library(path, fcompile=cc.cross_compiler(cross_compiler) if cross_compiler else None)
    return path


def random_arguments(session, device, args_info, alloc_repeat):
    """Random inputs made with numpy and copied over: works with a runtime-only device build,
    which lacks ``tvm.contrib.random``."""
    import tvm

    rng = np.random.default_rng(0)
    repeated = []
    for _ in range(alloc_repeat):
        args = []
        for info in args_info:
            _, dtype, shape = info
            array = rng.uniform(-1, 1, size=shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
            tensor = tvm.runtime.empty(shape, dtype, device)
            tensor.copyfrom(array)
            args.append(tensor)
        repeated.append(args)
    return repeated


def run_with_threads(session, rt_mod, device, evaluator_config, repeated_args):
    """Time a candidate after checking the device's thread pool has the target's thread count."""
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    wanted = int(os.environ.get("TVM_NUM_THREADS", "0"))
    if wanted:
        session.get_function("runtime.config_threadpool")(1, wanted)
    return run_evaluator_common(rt_mod, device, evaluator_config, repeated_args)


def flop_count(mod) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(mod))
    except Exception:  # estimate_tir_flops rejects some loop forms; flops are only for display
        return math.nan


def recorded_trials(database, modules) -> list[tuple[int, float | None]]:
    """(trials recorded, best seconds) per kernel, from an existing database."""
    import tvm_ffi

    by_hash: dict[int, list[float | None]] = {}
    for record in database.get_all_tuning_records():
        seconds = [float(s) for s in record.run_secs] if record.run_secs else []
        by_hash.setdefault(tvm_ffi.structural_hash(record.workload.mod), []).append(
            float(np.median(seconds)) if seconds and min(seconds) < 1e9 else None)
    result = []
    for mod in modules:
        times = by_hash.get(tvm_ffi.structural_hash(mod), [])
        valid = [t for t in times if t is not None]
        result.append((len(times), min(valid) if valid else None))
    return result


def progress_callback(kernels, summary, budget, progress):
    """A MetaSchedule measure callback (a TVM-derived object, so defined when TVM is loaded)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Callback(ms.measure_callback.PyMeasureCallback):
        """Counts trials and reports each kernel's best time as measurements arrive."""

        def __init__(self, kernels, summary, budget, progress):
            super().__init__()
            self.kernels, self.summary, self.budget, self.progress = kernels, summary, budget, progress

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            kernel = self.kernels[task_id]
            improved = False
            for result in runner_results:
                kernel.trials += 1
                self.summary.trials_run += 1
                if result.error_msg is None and result.run_secs:
                    seconds = float(np.median([float(s) for s in result.run_secs]))
                    if kernel.best_seconds is None or seconds < kernel.best_seconds:
                        kernel.best_seconds, improved = seconds, True
            done = self.summary.trials_before + self.summary.trials_run
            self.progress(done, self.budget, kernel if improved else None)

    return Callback(kernels, summary, budget, progress)
