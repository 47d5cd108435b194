"""Compile time and inference latency of edgec against onnxruntime, per model.

    python benchmarks/bench_latency.py --models resnet50,squeezenet --threads 2

Each engine runs in its own process, so an idle runtime's threads never share a
core with the engine being timed, and the parent interleaves the two in rounds
(alternating which goes first) so that drift in the machine's speed hits both
alike. Both get the same thread count and the same seeded inputs; the outputs
are compared, so a fast benchmark of wrong code shows. See README.md here.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np
import onnx

from models import BUILT, ZOO, model_by_name

MODELS = [*ZOO, *BUILT]

logger = logging.getLogger("bench_latency")

ENGINES = ("edgec", "edgec-tuned", "onnxruntime")
"""edgec-tuned runs only for models with tuning records (--tuning-db)."""
ANSWER_TIMEOUT_S = 900  # far beyond any untuned run; only a hung worker reaches it
WARMUP_MIN_S = 1.0  # fast engines warm up for at least this long, so caches and clocks settle


class EngineError(Exception):
    pass


def load_engine(engine: str, path: str, threads: int):
    """A ``run(feeds) -> [outputs]`` for one engine, limited to ``threads`` threads."""
    if engine.startswith("edgec"):
        os.environ["TVM_NUM_THREADS"] = str(threads)  # before TVM starts its thread pool
        import edgec.runtime

        model = edgec.runtime.load(path)
        return lambda feeds: list(model.run(feeds).values())
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle ORT threads otherwise spin for a while after each run, stealing the other engine's cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def timed_runs(run, feeds, count: int = 0, min_seconds: float = 0.0) -> tuple[list[float], list]:
    """Per-iteration wall times (s) of at least ``count`` runs lasting at least ``min_seconds``."""
    times, outputs, start = [], None, time.perf_counter()
    while len(times) < count or time.perf_counter() - start < min_seconds:
        begin = time.perf_counter()
        outputs = run(feeds)
        times.append(time.perf_counter() - begin)
    return times, outputs


def worker(conn, engine: str, path: str, threads: int, feeds: dict) -> None:
    """Child process: load one engine, then answer the parent's requests until told to stop.

    Requests: ("warmup", iterations) -> (times, outputs); ("time", n) -> times; None -> exit.
    Every answer is ("ok", value) or ("error", traceback).
    """
    try:
        run = load_engine(engine, path, threads)
        conn.send(("ok", None))
        while (request := conn.recv()) is not None:
            kind, count = request
            if kind == "warmup":
                conn.send(("ok", timed_runs(run, feeds, count, WARMUP_MIN_S)))
            else:
                conn.send(("ok", timed_runs(run, feeds, count)[0]))
    except Exception:
        conn.send(("error", traceback.format_exc()))


class Engine:
    """The parent's handle on one worker process."""

    def __init__(self, context, name: str, path: Path, threads: int, feeds: dict):
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker, args=(child, name, str(path), threads, feeds), daemon=True)
        self.process.start()
        child.close()  # so a crashed worker reads as EOF here

    def answer(self):
        try:
            if not self.conn.poll(ANSWER_TIMEOUT_S):
                raise EngineError(f"{self.name}: no answer in {ANSWER_TIMEOUT_S} s")
            status, value = self.conn.recv()
        except EOFError:
            self.process.join()
            raise EngineError(f"{self.name}: worker died (exit code {self.process.exitcode})") from None
        if status == "error":
            raise EngineError(f"{self.name}: {value.strip().splitlines()[-1]}\n{value}")
        return value

    def ask(self, kind: str, count: int):
        self.conn.send((kind, count))
        return self.answer()

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def random_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    initializers = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        if value.name not in initializers:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def summary(times: list[float]) -> dict:
    ms = [t * 1e3 for t in times]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "samples": len(ms), "times_ms": ms}


def compare(edgec_out: list, ort_out: list) -> dict:
    """Largest absolute difference over all outputs, and that relative to ORT's largest magnitude."""
    if [a.shape for a in edgec_out] != [b.shape for b in ort_out]:
        raise EngineError(f"output shapes differ: edgec {[a.shape for a in edgec_out]}, ort {[b.shape for b in ort_out]}")
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(edgec_out, ort_out))
    scale = max(float(np.max(np.abs(b))) for b in ort_out)
    return {"max_abs_diff": diff, "rel_diff": diff / scale if scale else diff}


def measure(context, paths: dict[str, Path], feeds: dict, options: dict) -> dict:
    """Interleaved timing of the engines in ``paths``, each in its own process."""
    names = [name for name in ENGINES if name in paths]
    engines = [Engine(context, name, paths[name], options["threads"], feeds) for name in names]
    try:
        for engine in engines:  # both load in parallel; nothing is timed yet
            engine.answer()
        counts, outputs, times = {}, {}, {name: [] for name in names}
        for engine in engines:  # one at a time, like everything timed
            warm, outputs[engine.name] = engine.ask("warmup", options["warmup"])
            per_run = statistics.median(warm[1:] or warm)  # the first run pays for lazy initialization
            counts[engine.name] = max(1, round(options["budget"] / options["rounds"] / per_run))
            logger.info("  %s: %.1f ms per run after warmup, %d per round", engine.name, per_run * 1e3, counts[engine.name])
        result = compare(outputs["edgec"], outputs["onnxruntime"])
        if "edgec-tuned" in outputs:
            result["tuned_max_abs_diff"] = compare(outputs["edgec-tuned"], outputs["onnxruntime"])["max_abs_diff"]
        for round_index in range(options["rounds"]):
            for engine in engines if round_index % 2 == 0 else engines[::-1]:
                times[engine.name] += engine.ask("time", counts[engine.name])
    finally:
        for engine in engines:
            engine.stop()
    result.update({name: summary(times[name]) for name in names})
    # Speed-up over onnxruntime (> 1: edgec faster), as the targets in issue 3 are stated.
    for name in names[:-1]:
        result[f"{name}_speedup"] = result["onnxruntime"]["median_ms"] / result[name]["median_ms"]
    return result


def busy_cpu_s() -> float:
    """CPU seconds every process on the machine has used since boot (from /proc/stat)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in stat.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds used by this process and its finished workers."""
    usages = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usages)


def bench_model(name: str, options: dict, context) -> dict:
    """Compile ``name`` with edgec, then time it against onnxruntime; failures are recorded, not raised."""
    from edgec.compiler.driver import CompileRequest, compile_model

    record = {"model": name}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        model = model_by_name(name, seed=options["seed"])
        onnx_path, artifact = Path(workdir) / f"{name}.onnx", Path(workdir) / f"{name}.edgec"
        onnx.save(model, onnx_path)
        paths = {"edgec": artifact, "onnxruntime": onnx_path}
        records_dir = options["tuning_db"] / name if options["tuning_db"] else None
        stage = "compile"
        try:
            start = time.perf_counter()
            compile_model(CompileRequest(model=onnx_path, target="x86-64", output=artifact))
            record["compile_s"] = time.perf_counter() - start
            logger.info("  compiled in %.1f s", record["compile_s"])
            if records_dir and records_dir.is_dir():
                stage = "tuned compile"
                paths["edgec-tuned"] = Path(workdir) / f"{name}.tuned.edgec"
                compile_model(CompileRequest(model=onnx_path, target="x86-64", output=paths["edgec-tuned"],
                                             tuning_db=records_dir))
            stage = "run"
            start, busy, own = time.perf_counter(), busy_cpu_s(), own_cpu_s()
            record.update(measure(context, paths, random_feeds(model, options["seed"]), options))
            # Cores kept busy by other processes while timing: on a shared machine, the row's noise level.
            other = (busy_cpu_s() - busy) - (own_cpu_s() - own)  # can dip below 0 by a clock tick
            record["other_load"] = max(0.0, other) / (time.perf_counter() - start)
        except Exception as exc:
            logger.error("%s: %s failed: %s", name, stage, exc)
            record["error"] = f"{stage}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return record


def git_commit() -> str | None:
    """HEAD of the checkout edgec was imported from, '+dirty' if its tracked compiler files differ from it."""
    import edgec

    root = Path(edgec.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "edgec", "passes", "targets"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info(threads: int) -> dict:
    import onnxruntime
    import tvm

    import edgec
    from edgec.host import physical_cores
    from edgec.targets.x86 import host_cpu

    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "llvm_cpu": host_cpu(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "threads": threads,
        "load_average_before": os.getloadavg(),
        "versions": {
            "edgec": edgec.__version__,
            "edgec_commit": git_commit(),
            "tvm": tvm.__version__,
            "onnxruntime": onnxruntime.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else math.nan


def markdown_table(records: list[dict]) -> str:
    lines = ["| model | compile s | edgec ms | tuned ms | ort ms | speed-up | tuned speed-up | max abs diff | rel diff | other load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        if "error" in r:
            lines.append(f"| {r['model']} | {compile_s} | failed | - | - | - | - | - | - | - |")
            continue
        tuned_ms = f"{r['edgec-tuned']['median_ms']:.2f}" if "edgec-tuned" in r else "-"
        tuned_speedup = f"{r['edgec-tuned_speedup']:.2f}" if "edgec-tuned" in r else "-"
        lines.append(f"| {r['model']} | {compile_s} | {r['edgec']['median_ms']:.2f} | {tuned_ms} | "
                     f"{r['onnxruntime']['median_ms']:.2f} | {r['edgec_speedup']:.2f} | {tuned_speedup} | "
                     f"{r['max_abs_diff']:.2e} | {r['rel_diff']:.1e} | {r['other_load']:.2f} |")
    done = [r for r in records if "error" not in r]
    default = [r["edgec_speedup"] for r in done]
    tuned = [r.get("edgec-tuned_speedup", r["edgec_speedup"]) for r in done]
    lines.append(f"| **geomean** | | | | | **{geomean(default):.2f}** | **{geomean(tuned):.2f}** | | | |")
    lines.append(f"| **worst** | | | | | **{min(default, default=math.nan):.2f}** | **{min(tuned, default=math.nan):.2f}** | | | |")
    lines += [f"\n{r['model']}: {r['error']}" for r in records if "error" in r]
    return "\n".join(lines)


def draw_chart(records: list[dict], path: Path, title: str) -> None:
    """Speed-up over onnxruntime per model, default and tuned, with the issue's target lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    done = [r for r in records if "error" not in r]
    positions = np.arange(len(done))
    figure, axes = plt.subplots(figsize=(max(6, 0.9 * len(done) + 2), 4.2))
    axes.bar(positions - 0.2, [r["edgec_speedup"] for r in done], 0.4, label="edgec (rules)", color="#3b75af")
    axes.bar(positions + 0.2, [r.get("edgec-tuned_speedup", np.nan) for r in done], 0.4,
             label="edgec + tuning records", color="#ef8636")
    axes.axhline(1.0, color="black", linewidth=1, label="onnxruntime (1.0)")
    axes.axhline(0.67, color="grey", linestyle="--", linewidth=1, label="per-model floor (0.67)")
    axes.set_yscale("log")
    values = [v for r in done for v in (r["edgec_speedup"], r.get("edgec-tuned_speedup", np.nan)) if v == v]
    axes.set_ylim(min(0.25, 0.8 * min(values, default=1)), max(2.0, 1.25 * max(values, default=1)))
    axes.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
    axes.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_yticks([0.25, 0.5, 0.67, 1, 1.5, 2])
    axes.set_xticks(positions, [r["model"] for r in done], rotation=30, ha="right")
    axes.set_ylabel("speed-up over onnxruntime (ort ms / edgec ms)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@click.command()
@click.option("--models", default=",".join(MODELS), show_default=True, help="Comma-separated model names.")
@click.option("--threads", type=int, help="Threads for both engines [default: physical cores].")
@click.option("--rounds", default=5, show_default=True, help="Interleaved rounds; each engine runs at least once per round.")
@click.option("--warmup", default=1, show_default=True, help="Untimed runs per engine before timing (at least 1 s worth).")
@click.option("--budget", default=10.0, show_default=True, help="Seconds of timed runs per engine per model (a target, not a cap).")
@click.option("--seed", default=0, show_default=True, help="Seed for weights and inputs.")
@click.option("--tuning-db", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Directory of tuning records, one subdirectory per model (edgec tune --db DIR/MODEL); "
                   "models with records also run as edgec-tuned.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write results as JSON here, a Markdown table (.md) and a chart (.png) beside it.")
def main(models: str, threads: int | None, rounds: int, warmup: int, budget: float, seed: int, tuning_db: Path | None,
         output: Path | None) -> None:
    """Compile each model with edgec and time it against onnxruntime."""
    from edgec.host import physical_cores

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise click.BadParameter(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}", param_hint="--models")
    if rounds < 3 or warmup < 1:
        raise click.BadParameter("need --rounds >= 3 (so every median has 3 samples) and --warmup >= 1")
    options = {"threads": threads or physical_cores(), "rounds": rounds, "warmup": warmup, "budget": budget, "seed": seed,
               "tuning_db": tuning_db}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no TVM or ORT state inherited
    info = machine_info(options["threads"])
    start = time.perf_counter()
    records = []
    for name in names:
        logger.info("%s", name)
        records.append(bench_model(name, options, context))
    info["wall_s"] = round(time.perf_counter() - start, 1)
    info["load_average_after"] = os.getloadavg()  # other work on the machine shows here
    table = markdown_table(records)
    click.echo(table)
    if output:
        settings = {**options, "tuning_db": str(tuning_db) if tuning_db else None}
        output.write_text(json.dumps({"machine": info, "settings": settings, "models": records}, indent=2) + "\n")
        header = (f"# edgec vs onnxruntime, {info['date'][:10]}\n\n{info['cpu']} ({info['llvm_cpu']}), "
                  f"{info['physical_cores']} cores, {options['threads']} threads for both engines; edgec "
                  f"{info['versions']['edgec']} ({info['versions']['edgec_commit']}), TVM {info['versions']['tvm']}, "
                  f"onnxruntime {info['versions']['onnxruntime']}.\nMedians over {rounds} interleaved rounds; "
                  f"speed-up = ort ms / edgec ms (> 1: edgec faster); rel diff = max abs diff / ort's largest |output|.\n"
                  f"Whole run: {info['wall_s']:.0f} s; load average before {info['load_average_before'][0]:.2f}, "
                  f"after {info['load_average_after'][0]:.2f}.\n\n")
        chart = output.with_suffix(".png")
        draw_chart(records, chart, f"edgec vs onnxruntime, {info['llvm_cpu']}, {options['threads']} threads, {info['date'][:10]}")
        output.with_suffix(".md").write_text(header + table + f"\n\n![speed-up over onnxruntime]({chart.name})\n")


if __name__ == "__main__":
    main()
