"""Latency of zoo models: TVM's untuned default vs edgec's CPU schedules vs onnxruntime.

    TVM_NUM_THREADS=2 python benchmarks/schedule_probe.py resnet50 squeezenet [--repeat 30] [--no-default]

Each model goes through edgec's import and default passes, then TVM's ONNX
frontend, as ``edgec compile`` does. Latencies are medians of ``--repeat`` runs
after warm-up; onnxruntime runs with ``intra_op_num_threads`` = TVM_NUM_THREADS.
Also checks the scheduled build against onnxruntime (max relative error).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def relax_module(proto):
    from tvm.relax.frontend.onnx import from_onnx

    from edgec.driver import DEFAULT_PIPELINE
    from edgec.importer import import_proto
    from edgec.pass_manager import PassManager, Pipeline
    from edgec.targets.lowering import onnx_for_tvm

    model = PassManager(Pipeline.parse(DEFAULT_PIPELINE)).run(import_proto(proto))
    return from_onnx(onnx_for_tvm(model), keep_params_in_input=True)


def build(proto, spec, scheduled: bool):
    import tvm
    from tvm import relax
    from tvm.relax.frontend import detach_params

    from edgec.targets.cpu_schedules import schedule_for_cpu

    start = time.perf_counter()
    mod = relax_module(proto)
    notes: list[str] = []
    if scheduled:
        mod, notes = schedule_for_cpu(mod, spec)
    mod, params = detach_params(mod)
    executable = tvm.compile(mod, target=tvm.target.Target(spec.tvm_target))
    seconds = time.perf_counter() - start
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"], list(params.get("main", [])), seconds, notes


def median_ms(fn, repeat: int, warmup: int = 2) -> float:
    return interleaved_medians_ms([fn], repeat, warmup)[0]


def interleaved_medians_ms(fns, repeat: int, warmup: int = 2) -> list[float]:
    """Median latency of each function, run in turn so that load from other
    processes on the machine hits them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, samples in zip(fns, times):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) * 1e3 for samples in times]


def probe(name: str, repeat: int, with_default: bool) -> dict:
    import onnxruntime as ort
    import tvm

    from edgec.targets import get_target
    from tests.models import random_feeds, zoo_model

    spec = get_target("x86-64")
    proto = zoo_model(name)
    feeds = random_feeds(proto)
    threads = int(os.environ["TVM_NUM_THREADS"])

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)[0]
    result = {"model": name, "threads": threads}

    inputs = [tvm.runtime.tensor(v) for v in feeds.values()]
    main, weights, seconds, notes = build(proto, spec, scheduled=True)
    out = main(*inputs, *weights)
    got = (out if hasattr(out, "numpy") else out[0]).numpy()
    result["scheduled_max_rel_err"] = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))
    result["scheduled_compile_s"] = seconds
    result["ort_ms"], result["scheduled_ms"] = interleaved_medians_ms(
        [lambda: session.run(None, feeds), lambda: main(*inputs, *weights)], repeat)
    result["notes"] = notes
    if with_default:
        main, weights, seconds, _ = build(proto, spec, scheduled=False)
        result["default_compile_s"] = seconds
        result["default_ms"] = median_ms(lambda: main(*inputs, *weights), max(3, repeat // 10), warmup=1)
    result["scheduled_vs_ort"] = result["scheduled_ms"] / result["ort_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-default", action="store_true", help="skip TVM's (slow) untuned default build")
    args = parser.parse_args()
    for name in args.models:
        print(json.dumps(probe(name, args.repeat, not args.no_default)), flush=True)


if __name__ == "__main__":
    main()
