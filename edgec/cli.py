"""The ``edgec`` command line.

Exit codes: 0 success; 1 the model could not be compiled or run; 2 usage error
(bad flag, missing file, unknown target, unwritable output); 3 the model cannot
meet its profile. Every error is one line on stderr: ``edgec: error: ...``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

from . import __version__
from .errors import EdgecError, ProfileViolation, UsageError
from .units import human_size

logger = logging.getLogger("edgec")

EXIT_CODES = """\b
Exit codes:
  0  success
  1  the model could not be imported, compiled or run
  2  usage error: bad flag, missing file, unknown target, unwritable output
  3  the model cannot meet its profile"""


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def progress_display(enabled: bool):
    """A transient spinner on stderr naming the current step on a terminal; elsewhere (a CI
    log, a pipe) one line per step as it starts, with the seconds since the command began."""
    if not enabled:
        yield lambda step: logger.info("%s", step)
    elif not sys.stderr.isatty():
        started = time.perf_counter()
        yield lambda step: click.echo(f"edgec: [{time.perf_counter() - started:6.1f}s] {step}", err=True)
    else:
        with stderr_console().status("starting") as status:
            yield lambda step: status.update(f"[bold]{step}[/bold]")


def pipeline_options(command):
    """The MLIR-style pass-pipeline flags shared by ``compile`` and ``opt``."""
    from .compiler.pipelines import DEFAULT_PIPELINE

    decorators = [
        click.option("--passes", "pipeline", default=DEFAULT_PIPELINE, show_default=True, metavar="PIPELINE",
                     help="Textual pass pipeline, e.g. 'fold-constants{size-limit=64MiB},eliminate-dead'."),
        click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DxD...",
                     help="Bind an input's symbolic dims, e.g. input=1x3x224x224. Repeatable."),
        click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
                     help="Bind a named symbolic dim everywhere it appears, e.g. seq=128. Repeatable. 'compile' binds "
                          "a leading input dim left free to the profile's latency.batch_size, else 1."),
        click.option("--timing", is_flag=True, help="Report wall time per pass."),
        click.option("--pass-statistics", is_flag=True, help="Report each pass's counters."),
        click.option("--print-ir-after-all", is_flag=True, help="Print the IR after every pass."),
        click.option("--print-ir-after", multiple=True, metavar="PASS", help="Print the IR after this pass. Repeatable."),
        click.option("--print-ir-before", multiple=True, metavar="PASS", help="Print the IR before this pass. Repeatable."),
        click.option("--print-ir-after-change", is_flag=True, help="Print the IR after passes that changed it."),
        click.option("--print-ir-after-failure", is_flag=True, help="Print the IR when a pass fails."),
        click.option("--dump-ir-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Write the IR before the pipeline and after each pass to numbered files here."),
        click.option("--verify-each/--no-verify-each", default=True, show_default=True,
                     help="Run the IR verifier after every pass."),
        click.option("--crash-reproducer", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
                     help="On a pass failure, write the input model and pipeline here for 'edgec opt'."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def quantize_options(calib_required: bool):
    """The static-quantization flags of ``quantize`` and ``compile`` (where --calib turns quantization on)."""
    from .quant.calibration import CALIBRATORS

    extra = "" if calib_required else " Quantizes the model to int8 QDQ before lowering."
    decorators = [
        click.option("--calib", type=click.Path(path_type=Path), required=calib_required, metavar="DATA.npz",
                     help="Calibration data: an .npz with one array per model input, samples on the first axis." + extra),
        click.option("--calibrator", type=click.Choice(CALIBRATORS), default="minmax", show_default=True,
                     help="How activation ranges are chosen from the calibration run."),
        click.option("--no-quantize", "no_quantize", multiple=True, metavar="NODE", help="Keep this node in float. Repeatable."),
        click.option("--per-tensor-weights", is_flag=True, help="One weight scale per tensor, not per output channel."),
        click.option("--unsigned", is_flag=True, help="uint8 activations instead of int8."),
        click.option("--reduce-range/--full-range", "reduce_range", default=None,
                     help="7-bit weights (or 8-bit): what the uint8 x int8 dot product of x86 without VNNI needs, "
                          "in edgec's kernels and onnxruntime's. 'compile' picks the target's preference "
                          "(7-bit on AVX2 targets); 'quantize' knows no target: 8-bit unless asked."),
    ]

    def apply(command):
        for decorate in reversed(decorators):
            command = decorate(command)
        return command

    return apply


def quantize_flags(options: dict) -> dict:
    """The quantize flags as the API's keywords."""
    return {name: options[name] for name in ("calib", "calibrator", "no_quantize", "per_tensor_weights", "unsigned",
                                             "reduce_range")}


def budget_options(command):
    """The accuracy budget of ``quantize`` and ``compile``."""
    from .profiles.profile import METRICS

    decorators = [
        click.option("--data", type=click.Path(path_type=Path), metavar="DATA.npz",
                     help="Data for the accuracy budget: the model's inputs, plus 'labels' for top-1/top-5. With "
                          "--max-drop (or the profile's accuracy section), quantized ops go back to float, lowest "
                          "SQNR first, until the int8 model is within the budget."),
        click.option("--metric", type=click.Choice(list(METRICS)),
                     help="The accuracy metric of --data [default: the profile's accuracy.metric, else top1]."),
        click.option("--max-drop", type=float, metavar="DROP",
                     help="Largest allowed drop of --metric against the float model, in its units (0.005: half a "
                          "point of top-1) [default: the profile's accuracy.max_drop]."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def profile_options(command):
    """How a command names a profile: a built-in or a file, plus ``--set`` overrides."""
    decorators = [
        click.option("--profile", "-p", metavar="NAME|FILE.toml", help="An edge profile (see 'edgec profiles list')."),
        click.option("--set", "overrides", multiple=True, metavar="SECTION.FIELD=VALUE",
                     help="Override one profile value, e.g. memory.working_set=64MiB. Repeatable."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def build_instruments(options: dict) -> list:
    from .compiler.instruments import CrashReproducer, DumpIRInstrument, PrintIRInstrument, StatisticsInstrument, TimingInstrument

    stream = sys.stderr
    instruments = []
    if any(options[k] for k in ("print_ir_after_all", "print_ir_after", "print_ir_before", "print_ir_after_change", "print_ir_after_failure")):
        instruments.append(
            PrintIRInstrument(
                stream,
                after_all=options["print_ir_after_all"],
                after=frozenset(options["print_ir_after"]),
                before=frozenset(options["print_ir_before"]),
                after_change=options["print_ir_after_change"],
                after_failure=options["print_ir_after_failure"],
            )
        )
    if options["dump_ir_dir"]:
        instruments.append(DumpIRInstrument(options["dump_ir_dir"]))
    if options["crash_reproducer"]:
        instruments.append(CrashReproducer(options["crash_reproducer"]))
    if options["timing"]:
        instruments.append(TimingInstrument(stream))
    if options["pass_statistics"]:
        instruments.append(StatisticsInstrument(stream))
    return instruments


def check_pass_names(options: dict) -> None:
    from .compiler.pass_manager import registered_passes

    known = registered_passes()
    for name in (*options["print_ir_after"], *options["print_ir_before"]):
        if name not in known:
            raise UsageError(f"--print-ir-after/--print-ir-before {name}: unknown pass (known: {', '.join(sorted(known))})")


def parse_shapes(specs) -> dict[str, tuple[int, ...]]:
    from .frontend.importer import parse_input_shape

    return dict(parse_input_shape(spec) for spec in specs)


def parse_dims(specs) -> dict[str, int]:
    from .frontend.importer import parse_dim

    return dict(parse_dim(spec) for spec in specs)


def binding_notice(bindings) -> str:
    """The one line that says which symbolic dims a compile fixed, and how."""
    return "edgec: note: bound symbolic dims: " + "; ".join(binding.describe() for binding in bindings)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="edgec")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def main_group(verbose: int) -> None:
    """edgec compiles ONNX models for edge devices through Apache TVM.

    \b
    Typical use:
      edgec compile model.onnx --target x86-64 -o model.edgec
      edgec run model.edgec --random-inputs
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="edgec: %(levelname)s: %(message)s", stream=sys.stderr)


@main_group.command("compile", epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target name (see 'edgec targets').")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Artifact path [default: MODEL's stem + .edgec].")
@click.option("-q", "--quiet", is_flag=True, help="No progress display and no summary.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (output, sha256, cache hit, inputs).")
@click.option("--depfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Make/Ninja depfile listing every file the compile read.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="EDGEC_CACHE_DIR",
              help="Reuse a finished compile of identical inputs (env: EDGEC_CACHE_DIR). Safe under make -j.")
@profile_options
@click.option("--allow-violations", is_flag=True,
              help="Compile even when the model violates its profile; the violations are recorded in the artifact.")
@click.option("--tuning-db", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use the tuning records in this directory ('edgec tune'); kernels without one keep the rules.")
@click.option("--fallback", type=click.Choice(["cpu", "error"]),
              help="Nodes the accelerator refuses: stay on the CPU (the default on targets with one), or fail the "
                   "compile naming each node and why (exit code 1).")
@click.option("--explain-partitions", is_flag=True,
              help="Print each partition, its device, nodes and share of MACs, the tensors crossing between "
                   "partitions, and why each CPU node stays there (in the summary with --json).")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), metavar="KEY",
              help="Sign the artifact with this Ed25519 private key ('edgec keygen'): a manifest.sig member "
                   "that 'run/check/bench --verify-key' check.")
@quantize_options(calib_required=False)
@budget_options
@pipeline_options
def compile_command(model: Path, target: str, output: Path | None, quiet: bool, as_json: bool, depfile, cache_dir,
                    profile, overrides, allow_violations, tuning_db, sign_key, data, metric, max_drop,
                    **options) -> None:
    """Compile an ONNX MODEL into one deployable .edgec artifact.

    Under a profile (--profile, or the one the model carries in its metadata) the compile
    fails with exit code 3 when the model violates a hard constraint. With --calib and
    --data it fails the same way when the int8 model misses the accuracy budget with
    every quantized op reverted to float."""
    from . import api
    from .deploy.artifact import sha256_file

    check_pass_names(options)
    started = time.perf_counter()
    with progress_display(not quiet and not as_json) as progress:
        result = api.compile(
            model, target, output=output, profile=profile, overrides=overrides,
            input_shapes=parse_shapes(options["input_shapes"]), dims=parse_dims(options["dims"]),
            passes=options["pipeline"], **quantize_flags(options), data=data, metric=metric, max_drop=max_drop,
            tuning_db=tuning_db, fallback=options["fallback"], allow_violations=allow_violations, depfile=depfile,
            cache_dir=cache_dir, sign=sign_key, verify_each=options["verify_each"],
            instruments=build_instruments(options), progress=progress)
    if result.bindings and not quiet:
        click.echo(binding_notice(result.bindings), err=True)
    if as_json:
        click.echo(json.dumps({
            "output": str(result.output),
            "sha256": sha256_file(result.output),
            "target": result.manifest["target"]["name"],
            "cached": result.cached,
            "inputs": [str(p) for p in result.inputs],
            "seconds": round(time.perf_counter() - started, 3),
            **({"partitions": partition_summary(result.manifest)} if options["explain_partitions"] else {}),
        }, indent=2))
        return
    if options["explain_partitions"]:
        click.echo(explain_partitions(result.manifest))
    elif not quiet:
        size = result.output.stat().st_size
        origin = " (from the cache)" if result.cached else ""
        click.echo(f"wrote {result.output} ({human_size(size)}) for {result.manifest['target']['name']}{origin}", err=True)


def partition_summary(manifest: dict) -> dict | None:
    """The partition plan's summary with each partition's library, its arena and the bytes crossing
    into and out of it; None unpartitioned."""
    from .passes.partition import PartitionPlan

    if not manifest.get("partition_plan"):
        return None
    summary = PartitionPlan.from_dict(manifest["partition_plan"]).summary()
    libraries = [p["library"] for p in manifest["partitions"]]
    for entry, lowered in zip(summary["partitions"], manifest["partitions"]):
        entry.update({k: lowered[k] for k in ("library", "runs_on", "input_bytes", "output_bytes")})
        entry["arena_bytes"] = lowered["memory_plan"]["arena_bytes"]
    for crossing in summary["crossings"]:
        for side in ("from", "to"):
            crossing[f"{side}_library"] = None if crossing[side] is None else libraries[crossing[side]]
    return summary


def explain_partitions(manifest: dict) -> str:
    """The plan as tables, then each partition's library and memory; or one line saying the
    compile did not partition."""
    from .passes.partition import PartitionPlan
    from .tables import table

    if not manifest.get("partition_plan"):
        target = manifest["target"]
        return f"not partitioned: the whole graph runs on {target.get('device', 'cpu')} (target {target['name']})"
    rows = [(f"#{p['id']}", p["library"], p["runs_on"], human_size(p["memory_plan"]["arena_bytes"]),
             human_size(p["input_bytes"]), human_size(p["output_bytes"])) for p in manifest["partitions"]]
    return "\n".join([PartitionPlan.from_dict(manifest["partition_plan"]).explain(), "",
                      *table(("partition", "library", "runs on", "arena", "in", "out"), rows,
                             right=("arena", "in", "out"))])


@main_group.command("tune", epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target name (see 'edgec targets').")
@click.option("--db", "db_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Tuning-record directory: created, or resumed (its earlier trials count toward --trials).")
@click.option("--trials", default=64, show_default=True, type=click.IntRange(min=1),
              help="Measurements in total over the model's kernels, earlier runs included.")
@click.option("--device", metavar="rpc://HOST:PORT/KEY",
              help="Measure on a lab device behind a TVM RPC tracker instead of this CPU.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DxD...",
              help="Bind an input's symbolic dims, e.g. input=1x3x224x224. Repeatable.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
              help="Bind a named symbolic dim everywhere, e.g. seq=128 (a free leading dim is the batch: 1). Repeatable.")
@click.option("--seed", default=0, show_default=True, help="Search seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-kernel summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display and no summary.")
def tune_command(model: Path, target: str, db_dir: Path, trials: int, device: str | None, input_shapes, dims,
                 seed: int, as_json: bool, quiet: bool) -> None:
    """Measure schedules for MODEL's kernels with MetaSchedule and save them in --db.

    Records are appended as they are measured, so a killed run resumes where it stopped.
    'edgec compile --tuning-db DIR' then uses them."""
    from . import api

    with tuning_progress(not quiet and not as_json) as progress:
        summary = api.tune(model, target, db=db_dir, trials=trials, device=device, input_shapes=parse_shapes(input_shapes),
                           dims=parse_dims(dims), seed=seed, progress=progress)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    elif not quiet:
        click.echo(format_tuning(summary), err=True)


@contextmanager
def tuning_progress(enabled: bool):
    """A progress bar with the trial count and the best time of the kernel that last improved; off
    a terminal, a line whenever a kernel improves and at each tenth of the budget."""
    if not enabled:
        yield lambda done, budget, kernel: None
        return
    if not sys.stderr.isatty():
        started, tenths = time.perf_counter(), [-1]

        def line(done: int, budget: int, kernel) -> None:
            tenth = 10 * done // budget
            if kernel is None and tenth == tenths[0]:
                return
            tenths[0] = tenth
            best = f", best {kernel.name}: {kernel.best_seconds * 1e6:.1f} us" if kernel else ""
            click.echo(f"edgec: [{time.perf_counter() - started:6.1f}s] tuning {done}/{budget} trials{best}", err=True)

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("tuning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[best]}")]
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task("tuning", total=None, best="")

        def update(done: int, budget: int, kernel) -> None:
            fields = {"best": f"best {kernel.name}: {kernel.best_seconds * 1e6:.1f} us"} if kernel else {}
            bar.update(task, completed=done, total=budget, **fields)

        yield update


def format_tuning(summary) -> str:
    from .tables import table

    def micros(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds * 1e6:.1f}"

    rows = [(kernel.name, str(kernel.weight), str(kernel.trials), micros(kernel.best_seconds), micros(kernel.rule_seconds))
            for kernel in summary.kernels]
    return "\n".join([f"{summary.trials_run} new trial(s), {summary.trials_before} earlier, {summary.threads} "
                      f"thread(s); records in {summary.database} (times in us; '-': no valid measurement)",
                      *table(("kernel", "calls", "trials", "best", "rules"), rows,
                             right=("calls", "trials", "best", "rules"))])


@main_group.command("analyze", epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target name (see 'edgec targets').")
@profile_options
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DxD...",
              help="Bind an input's symbolic dims, e.g. input=1x3x224x224. Repeatable.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
              help="Bind a named symbolic dim everywhere, e.g. seq=128 (a free leading dim is the batch). Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
def analyze_command(model: Path, target: str, profile, overrides, input_shapes, dims, as_json: bool) -> None:
    """What compiling MODEL for the target would give, before any TVM work: per layer the op,
    shape, MACs, parameters and whether the target lowers it (and why not); the planned arena
    and its lower bound; the profile's static checks. Exits 3 when the profile is violated."""
    from . import api
    from .reports.analyze import format_analysis

    analysis = api.analyze(model, target, profile=profile, overrides=overrides, input_shapes=parse_shapes(input_shapes),
                           dims=parse_dims(dims))
    click.echo(json.dumps(analysis.to_dict(), indent=2) if as_json else format_analysis(analysis))
    if not analysis.ok:
        raise ProfileViolation(f"{model} does not meet profile {analysis.profile}'s static checks")


@main_group.command("opt", epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the result: .onnx for ONNX, anything else for IR text. Default: IR text on stdout.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON summary on stdout: the pipeline, each pass (changed it or not, counters, diagnostics), "
                   "node counts, and the IR text unless -o writes it.")
@pipeline_options
def opt_command(model: Path, output: Path | None, as_json: bool, **options) -> None:
    """Run a pass pipeline on MODEL without lowering (like mlir-opt)."""
    from .compiler.instruments import RecordInstrument
    from .compiler.pass_manager import PassManager, Pipeline
    from .frontend.exporter import export_model
    from .frontend.importer import load_model
    from .ir import print_model

    check_pass_names(options)
    if output is not None:
        from .compiler.driver import check_writable

        check_writable(output)
    pipeline = Pipeline.parse(options["pipeline"])
    ir_model = load_model(model, parse_shapes(options["input_shapes"]), parse_dims(options["dims"]))
    pipeline.check_inputs(ir_model)
    record, nodes_before = RecordInstrument(), len(ir_model.graph.nodes)
    ir_model = PassManager(pipeline, [*build_instruments(options), record], options["verify_each"]).run(ir_model)
    if output is not None and output.suffix == ".onnx":
        import onnx

        onnx.save(export_model(ir_model), output)
    elif output is not None:
        output.write_text(print_model(ir_model))
    if as_json:
        click.echo(json.dumps({"pipeline": str(pipeline), "passes": record.passes, "nodes_before": nodes_before,
                               "nodes_after": len(ir_model.graph.nodes),
                               "output": str(output) if output is not None else None,
                               **({"ir": print_model(ir_model)} if output is None else {})}, indent=2))
    elif output is None:
        click.echo(print_model(ir_model), nl=False)


@main_group.command("quantize", epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The QDQ ONNX file [default: MODEL's stem + .qdq.onnx].")
@quantize_options(calib_required=True)
@budget_options
@click.option("--report", is_flag=True,
              help="Print per layer: placement, scales and zero points, SQNR against float over --data (else the "
                   "calibration data). Also recorded in the file's edgec.quantization metadata, which "
                   "'edgec compile' copies into the artifact for 'edgec report --quantization'.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON on stdout (output, Q/DQ pairs, weight bytes, budget, and with --report "
                   "the layers) instead of the table.")
@profile_options
def quantize_command(model: Path, output: Path | None, data: Path | None, metric: str | None, max_drop: float | None,
                     report: bool, as_json: bool, profile: str | None, overrides, **options) -> None:
    """Quantize MODEL (static, int8) into standard QDQ ONNX that onnxruntime runs.

    Compiling the result gives the same graph as 'edgec compile MODEL --calib DATA.npz' with the same
    flags (on AVX2 targets compile defaults to --reduce-range; quantize knows no target)."""
    from . import api
    from .quant.accuracy_budget import NOT_MET

    result = api.quantize(model, output=output, **quantize_flags(options), data=data, metric=metric, max_drop=max_drop,
                          report=report, profile=profile, overrides=overrides)
    for diagnostic in result.diagnostics:
        click.echo(f"edgec: {diagnostic}", err=True)
    if result.budget is not None:
        for line in result.budget.summary():
            click.echo(f"edgec: {line}", err=True)
        if not result.budget.met:
            click.echo(f"edgec: warning: {NOT_MET}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif report:
        from .quant.report import format_rows

        click.echo(format_rows(result.layers))
    click.echo(f"wrote {result}", err=True)


def cli_inputs(inputs_file: Path | None, input_specs, random_inputs: bool, required: bool = True):
    """--inputs, --input NAME=FILE.npy or --random-inputs as the API's ``inputs`` (None: random)."""
    from .api import load_arrays

    chosen = sum(bool(x) for x in (inputs_file, input_specs, random_inputs))
    if chosen > 1 or (required and chosen == 0):
        raise UsageError("give exactly one of --inputs FILE.npz, --input NAME=FILE.npy (repeatable) or --random-inputs")
    if inputs_file:
        return inputs_file
    feeds = {}
    for spec in input_specs:
        name, sep, file = spec.partition("=")
        if not sep or not Path(file).is_file():
            raise UsageError(f"--input {spec}: expected NAME=FILE.npy with an existing file")
        feeds[name] = load_arrays(Path(file), "--input")
    return feeds or None


def input_options(command):
    """How ``run``, ``check`` and ``bench`` get their inputs, and where they run."""
    decorators = [
        click.option("--device", metavar="DEVICE",
                     help="Run on a lab device: rpc://HOST:PORT/KEY (a tracker) or rpc-direct://HOST:PORT. Default: here."),
        click.option("--timeout", default=120.0, show_default=True, metavar="SECONDS",
                     help="With --device: the longest wait for any one exchange with the device."),
        click.option("--inputs", "inputs_file", type=click.Path(path_type=Path), help="An .npz with one array per input name."),
        click.option("--input", "input_specs", multiple=True, metavar="NAME=FILE.npy", help="One input from an .npy. Repeatable."),
        click.option("--random-inputs", is_flag=True, help="Seeded random inputs matching the signature."),
        click.option("--seed", default=0, show_default=True, help="Seed for --random-inputs."),
        click.option("--verify-key", type=click.Path(dir_okay=False, path_type=Path), metavar="PUB",
                     help="Refuse ARTIFACT unless it is signed by this Ed25519 public key ('edgec keygen', "
                          "'edgec compile --sign')."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


@main_group.command("run", epilog=EXIT_CODES)
@click.argument("artifact", type=click.Path(path_type=Path))
@input_options
@click.option("--output", "output_file", type=click.Path(path_type=Path), help="Write the outputs to this .npz.")
@click.option("--json", "as_json", is_flag=True, help="Print every output in full as JSON (name: dtype, shape, values).")
def run_command(artifact: Path, device, timeout, inputs_file, input_specs, random_inputs: bool, seed: int,
                verify_key, output_file, as_json: bool) -> None:
    """Run a compiled ARTIFACT, here or on a lab device, and print or save its outputs."""
    from .api import load_artifact, read_inputs

    if output_file:
        from .compiler.driver import check_writable

        check_writable(output_file, "--output")
    inputs = cli_inputs(inputs_file, input_specs, random_inputs)
    compiled = load_artifact(artifact, device, timeout, verify_key)
    outputs = compiled.run(read_inputs(compiled, inputs, seed))
    if output_file:
        np.savez(output_file, **outputs)
        click.echo(f"wrote {len(outputs)} output(s) to {output_file}", err=True)
        return
    if as_json:
        click.echo(json.dumps({name: {"dtype": str(value.dtype), "shape": list(value.shape), "values": value.tolist()}
                               for name, value in outputs.items()}, indent=2))
        return
    for name, value in outputs.items():
        flat = value.reshape(-1)
        preview = np.array2string(flat[:6], precision=5, separator=", ")
        click.echo(f"{name}: {value.dtype}{list(value.shape)} {preview}{' ...' if flat.size > 6 else ''}")


@main_group.command("check", epilog=EXIT_CODES)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path),
              help="The source ONNX model: compared with onnxruntime, and the float reference for accuracy drops.")
@profile_options
@click.option("--data", type=click.Path(path_type=Path),
              help="Accuracy data: an .npz with one array per input (samples first) plus labels or expected_<output>.")
@click.option("-o", "--output", "certificate_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the compliance certificate here as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the certificate as JSON.")
@input_options
@click.option("--rtol", default=1e-3, show_default=True, help="Relative tolerance against onnxruntime.")
@click.option("--atol", default=1e-4, show_default=True, help="Absolute tolerance against onnxruntime.")
def check_command(artifact: Path, model: Path | None, profile: str | None, overrides, data, certificate_file, as_json,
                  device, timeout, inputs_file, input_specs, random_inputs, seed, verify_key, rtol, atol) -> None:
    """Check ARTIFACT: against onnxruntime (--model), and against its profile, issuing a certificate.

    \b
    With --model, the artifact and the model run on the same inputs; any output outside
    the tolerances exits 1. With a profile (the one compiled in, or --profile), every
    attribute is measured (latency, working set, accuracy on --data, performance per
    watt, data locality) and shown as required, measured, how, pass/fail; a failing
    certificate exits 3."""
    from . import api

    result = api.check(artifact, model=model, profile=profile, overrides=overrides, data=data, output=certificate_file,
                       device=device, timeout=timeout, inputs=cli_inputs(inputs_file, input_specs, random_inputs, False),
                       seed=seed, verify_key=verify_key, rtol=rtol, atol=atol)
    if result.comparison is not None:
        for row in result.comparison.rows:
            click.echo(f"{row.name}: max|diff| {row.max_abs:.3g}, max rel {row.max_rel:.3g}, "
                       f"{row.mismatched} of {row.size} outside rtol={rtol} atol={atol}: {'ok' if row.ok else 'MISMATCH'}",
                       err=as_json and result.certificate is not None)
    if result.certificate is not None:
        click.echo(json.dumps(result.certificate.to_dict(), indent=2) if as_json else result.certificate.format())
    if result.error is not None:
        raise result.error


@main_group.command("bench", epilog=EXIT_CODES)
@click.argument("artifact", type=click.Path(path_type=Path))
@input_options
@click.option("--repeat", default=20, show_default=True, help="Timed steady-state runs.")
@click.option("--warmup", default=3, show_default=True, help="Untimed runs after the first.")
@click.option("--json", "as_json", is_flag=True, help="Print the timings as JSON.")
def bench_command(artifact: Path, device, timeout, inputs_file, input_specs, random_inputs, seed, verify_key, repeat,
                  warmup, as_json) -> None:
    """Time ARTIFACT: first-time latency (a fresh process: start, imports, load, first result) and steady state.

    On an emulated lab device the times are labelled EMULATED: they check the flow, not the speed."""
    from . import api

    timing = api.bench(artifact, device=device, timeout=timeout,
                       inputs=cli_inputs(inputs_file, input_specs, random_inputs, False), seed=seed,
                       verify_key=verify_key, repeat=repeat, warmup=warmup)
    click.echo(json.dumps(timing.as_dict(), indent=2) if as_json else timing.summary())


@main_group.command("inspect", epilog=EXIT_CODES)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def inspect_command(artifact: Path, as_json: bool) -> None:
    """Show what an ARTIFACT holds: signature, target, pipeline, members."""
    from .deploy.artifact import open_artifact

    if not artifact.exists():
        raise UsageError(f"{artifact}: no such file")
    opened = open_artifact(artifact)
    manifest = opened.manifest
    if as_json:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    try:
        lines = inspect_lines(artifact, opened)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a manifest written by hand or tampered with
        raise EdgecError(f"{artifact}: member 'manifest.json' lacks or mistypes a field inspect shows ({exc!r})") from None
    click.echo("\n".join(lines))


def inspect_lines(artifact: Path, opened) -> list[str]:
    from .deploy.artifact import SIGNATURE

    manifest = opened.manifest
    target = manifest["target"]
    lines = [
        f"artifact   {artifact} (format {manifest['format_version']})",
        f"source     {manifest['source']['file']} sha256:{manifest['source']['sha256'][:16]}",
        f"target     {target['name']} ({target['triple']}, {json.dumps(target['tvm_target'])})",
        f"pipeline   {manifest['pipeline']}",
        f"versions   edgec {manifest['edgec_version']}, tvm {manifest['tvm_version']}, onnx {manifest['onnx_version']}",
    ]
    for kind in ("inputs", "outputs"):
        for spec in manifest["signature"][kind]:
            lines.append(f"{kind[:-1]:<10} {spec['name']}: {spec['dtype']}{spec['shape']}")
    if manifest.get("dim_bindings"):
        from .frontend.importer import DimBinding

        lines += [f"bound      {DimBinding(**binding).describe()}" for binding in manifest["dim_bindings"]]
    in_file = sum(w["nbytes"] for w in manifest["weights"])
    compiled_in = (manifest.get("report") or {}).get("totals", {}).get("weight_bytes", in_file) - in_file
    lines.append(f"weights    {len(manifest['weights'])} tensors in weights.bin, {human_size(in_file)}"
                 + (f"; {human_size(compiled_in)} more compiled into the library" if compiled_in > 0 else ""))
    for part in manifest.get("partitions", []):
        lines.append(f"partition  #{part['id']} {part['device']} ({part['nodes']} nodes) in {part['library']}: "
                     f"{', '.join(part['inputs'])} -> {', '.join(part['outputs'])}")
    for name, member in manifest["members"].items():
        lines.append(f"member     {name}: {member['size']} bytes sha256:{member['sha256'][:16]}")
    signed = "manifest.sig present (check it with --verify-key on run, check, bench)"
    lines.append(f"signature  {signed if SIGNATURE in opened.offsets else 'none'}")
    return lines


@main_group.command("report", epilog=EXIT_CODES)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the per-layer table as CSV.")
@click.option("--memory", is_flag=True, help="The memory plan instead: arena, lower bound, weights, every tensor's offset.")
@click.option("--partitions", is_flag=True,
              help="The partitions instead: device, nodes, share of MACs, crossing tensors, why each CPU node stays.")
@click.option("--quantization", is_flag=True,
              help="The quantization instead: per layer int8 or float (and why), scales and zero points, SQNR "
                   "against float; the accuracy budget; the integer kernels.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="With --memory: draw tensor lifetimes against arena offsets; with --partitions: the partition "
                   "graph colored by device. To this PNG (needs matplotlib).")
def report_command(artifact: Path, as_json: bool, as_csv: bool, memory: bool, partitions: bool, quantization: bool,
                   plot: Path | None) -> None:
    """Per layer: op, output shape, MACs, parameters, weight bytes, dtype, device; then totals.

    With --memory: the arena, its lower bound, the weights, what TVM's VM allocates, and
    a table of every planned tensor (offset, size, steps live); --plot draws it.
    With --partitions: the partition plan; --plot draws it.
    With --quantization: the per-layer quantization and the accuracy budget."""
    from .compiler.driver import check_writable
    from .deploy.artifact import open_artifact, reading_section
    from .reports.report import format_csv, format_memory, format_table, plot_memory, plot_partitions

    if as_json and as_csv:
        raise UsageError("give at most one of --json and --csv")
    views = [name for name, chosen in (("memory", memory), ("partitions", partitions), ("quantization", quantization)) if chosen]
    if len(views) > 1:
        raise UsageError(f"give at most one of --memory, --partitions and --quantization (got --{' and --'.join(views)})")
    if plot and not (memory or partitions):
        raise UsageError("--plot draws the memory plan or the partitions: give it with --memory or --partitions")
    if views and as_csv:
        raise UsageError(f"--{views[0]} prints a table or --json, not --csv")
    if not artifact.exists():
        raise UsageError(f"{artifact}: no such file")
    manifest = open_artifact(artifact).manifest
    if quantization:
        from .quant.report import format_record

        with reading_section(artifact, "quantization"):
            record, integer = manifest.get("quantization"), manifest["target"].get("integer_kernels")
            if as_json:
                click.echo(json.dumps({"quantization": record, "integer_kernels": integer}, indent=2))
            else:
                click.echo(format_record(record or {}, integer) if record or integer else
                           f"no quantization record: {artifact} was compiled without --calib, from a model without "
                           "'edgec quantize --report' metadata")
        return
    if partitions:
        with reading_section(artifact, "partition_plan"):
            if plot:
                if not manifest.get("partition_plan"):
                    raise UsageError(f"--plot: {artifact} was not partitioned ({explain_partitions(manifest)})")
                check_writable(plot, "--plot")
                plot_partitions(manifest, plot)
            click.echo(json.dumps({"partitions": partition_summary(manifest)}, indent=2) if as_json
                       else explain_partitions(manifest))
        return
    if memory:
        with reading_section(artifact, "memory_plan or report"):
            if plot:
                check_writable(plot, "--plot")
                plot_memory(manifest, plot)
            document = {"memory_plan": manifest["memory_plan"], "runtime_memory": manifest.get("runtime_memory"),
                        "weight_bytes": manifest["report"]["totals"]["weight_bytes"]}
            click.echo(json.dumps(document, indent=2) if as_json else format_memory(manifest))
        return
    with reading_section(artifact, "report"):
        report = manifest["report"]
        click.echo(json.dumps(report, indent=2) if as_json else format_csv(report) if as_csv else format_table(report),
                   nl=not as_csv)


@main_group.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print the target table as JSON.")
def targets_command(as_json: bool) -> None:
    """List the targets edgec can compile for, with their features."""
    from edgec.targets import all_targets

    targets = all_targets()
    if as_json:
        click.echo(json.dumps([t.describe() for t in targets.values()], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("target", "triple", "device", "cores", "vector", "features", "runs here", "description", box=None)
    for spec in targets.values():
        reason = spec.runs_here()
        table.add_row(spec.name, spec.triple, spec.device, str(spec.cores), f"{spec.vector_bits}b",
                      " ".join(spec.features) or "-", "yes" if reason is None else "no", spec.description)
    Console(width=160).print(table)


@main_group.group("lab")
def lab_group() -> None:
    """An emulated arm64 lab device (qemu-user) behind a TVM RPC tracker on 127.0.0.1.

    It checks instructions, numbers and the RPC flow; its timings say nothing about a
    real board's speed and are always labelled emulated."""


@lab_group.command("start")
@click.option("--target", "-t", default="arm64-a72", show_default=True, help="Emulated core: arm64-a72, arm64-a53 or arm64-a76 (dotprod).")
@click.option("--tracker", metavar="HOST:PORT", help="Register with this tracker instead of starting one.")
@click.option("--key", help="The device's key at the tracker [default: the target name].")
@click.option("--servers", default=1, show_default=True,
              help="Devices serving under the key, like a board farm: edgec tune measures on all at once.")
def lab_start_command(target: str, tracker: str | None, key: str | None, servers: int) -> None:
    """Set up (first time: Debian packages, an arm64 sysroot, TVM wheels; cached) and start a device.

    Prints the --device string to use with run, check, bench and tune."""
    from .deploy import lab

    with progress_display(True) as progress:
        progress(f"starting the emulated {target} (the first start builds its sysroot, about a minute)")
        state = lab.start(target, tracker=tracker, key=key, servers=servers)
    click.echo(state.device)


@lab_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def lab_status_command(as_json: bool) -> None:
    """Show the lab's tracker and devices, and whether each is alive and registered."""
    from .deploy import lab

    status = lab.status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    if not status["running"]:
        click.echo(f"no lab running (directory {status['dir']})")
        return
    tracker = status["tracker"]
    click.echo(f"tracker  {tracker['address']} pid {tracker['pid']} {'up' if tracker['alive'] else 'DOWN'}")
    for server in status["servers"]:
        state = "up" if server["alive"] and server["registered"] else "DOWN" if not server["alive"] else "unregistered"
        click.echo(f"device   {server['device']} ({server['target']}, emulated {server['cpu']}) pid {server['pid']} {state}")


@lab_group.command("stop")
def lab_stop_command() -> None:
    """Stop the tracker and devices the lab started (by their process ids), nothing else."""
    from .deploy import lab

    stopped = lab.stop()
    click.echo(f"stopped {len(stopped)} process(es)" + (f": {', '.join(map(str, stopped))}" if stopped else ""))


@main_group.group("profiles")
def profiles_group() -> None:
    """The built-in edge profiles (the ONNX Edge working group's execution modes)."""


@profiles_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print names and descriptions as JSON.")
def profiles_list_command(as_json: bool) -> None:
    """List the built-in profiles."""
    from .profiles.profile import builtin_profiles, load_profile

    profiles = {name: load_profile(name).description for name in builtin_profiles()}
    if as_json:
        click.echo(json.dumps(profiles, indent=2))
        return
    from .tables import table

    click.echo("\n".join(table(("profile", "description"), profiles.items())))


@profiles_group.command("show")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.FIELD=VALUE", help="Override one value. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved profile as JSON.")
def profiles_show_command(name: str, overrides, as_json: bool) -> None:
    """Show a profile (built-in NAME or a file), resolved: inheritance and overrides applied."""
    from .profiles.profile import load_profile

    profile = load_profile(name, overrides)
    if as_json:
        click.echo(json.dumps({**profile.to_dict(), "sources": list(profile.sources)}, indent=2))
        return
    click.echo(f"# {profile.name}: from {' <- '.join(profile.sources)}")
    click.echo(profile.to_toml(), nl=False)


@main_group.command("annotate", epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@profile_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The annotated ONNX file.")
def annotate_command(model: Path, profile: str | None, overrides, output: Path) -> None:
    """Write a profile into MODEL's metadata_props (keys edge.profile.*), where Netron shows it.

    Compiling the result without --profile uses that profile."""
    import onnx

    from .compiler.cache import write_bytes_atomically
    from .frontend.importer import read_proto
    from .profiles.profile import load_profile, to_metadata_props

    from .compiler.driver import check_writable

    if not profile:
        raise UsageError("annotate needs --profile")
    resolved = load_profile(profile, overrides)
    if not model.is_file():
        raise UsageError(f"{model}: no such file")
    check_writable(output)
    proto = read_proto(model)  # external weights stay where they are; only the graph file is rewritten
    kept = [p for p in proto.metadata_props if not p.key.startswith("edge.profile.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in to_metadata_props(resolved).items():
        proto.metadata_props.add(key=key, value=value)
    if output.resolve().parent != model.resolve().parent and any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer
    ):
        raise UsageError(f"-o {output}: {model} keeps its weights in external files; write the annotated model beside it")
    write_bytes_atomically(output, proto.SerializeToString())
    click.echo(f"wrote {output} with profile {resolved.name}", err=True)


@main_group.command("keygen", epilog=EXIT_CODES)
@click.argument("private_key", type=click.Path(dir_okay=False, path_type=Path))
def keygen_command(private_key: Path) -> None:
    """Write a new Ed25519 key pair: PRIVATE_KEY (PEM, mode 0600) and PRIVATE_KEY.pub.

    Sign with 'edgec compile --sign PRIVATE_KEY'; check with 'edgec run/check/bench
    --verify-key PRIVATE_KEY.pub'. Existing files are never overwritten."""
    from .deploy.trust import generate_keypair

    public = generate_keypair(private_key)
    click.echo(f"wrote {private_key} (private, keep it secret) and {public} (public)", err=True)


@main_group.command("export-c", epilog=EXIT_CODES)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export_c_command(artifact: Path, directory: Path) -> None:
    """Write a microcontroller ARTIFACT's C project into DIRECTORY for a firmware build.

    \b
    The project: the kernels, the call sequence and <model>.h (<model>_init, <model>_run),
    the weights as const arrays, a startup file, linker script and Makefile for the
    emulated board, and the semihosting harness. DIRECTORY must not exist or be empty."""
    from .deploy.emulator import export_project

    from .api import open_verified

    files = export_project(open_verified(artifact, None), directory)
    click.echo(f"wrote {len(files)} files to {directory}; build with: make -C {directory}", err=True)


@main_group.command("cmake-dir")
def cmake_dir_command() -> None:
    """Print the directory holding edgec.cmake (for CMake's include())."""
    click.echo(Path(__file__).parent / "cmake")


@main_group.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print the passes (summary, options with defaults) and the named "
                                                       "pipelines as JSON.")
def passes_command(as_json: bool) -> None:
    """List the registered passes and their options."""
    import dataclasses

    from .compiler.pass_manager import format_option, registered_passes
    from .compiler.pipelines import PIPELINES

    passes = {}
    for name, cls in sorted(registered_passes().items()):
        passes[name] = {
            "summary": (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0].removeprefix(f"{name}: "),
            "options": {f.name.replace("_", "-"): format_option(f, f.default) for f in dataclasses.fields(cls.Options)},
        }
    if as_json:
        click.echo(json.dumps({"passes": passes, "pipelines": {k: list(v) for k, v in PIPELINES.items()}}, indent=2))
        return
    for name, entry in passes.items():
        options = ", ".join(f"{option}={value}" for option, value in entry["options"].items())
        click.echo(f"{name:<18} {entry['summary']}" + (f"\n{'':<18} options: {options}" if options else ""))
    click.echo("\nnamed pipelines:")
    for name, steps in PIPELINES.items():
        click.echo(f"{name:<18} {','.join(steps)}")


def set_verbosity(ctx, param, value) -> None:
    """``-v``/``-q`` given after the subcommand mean what they mean before it."""
    if param.name == "verbose" and value:
        logging.getLogger().setLevel(logging.INFO if value == 1 else logging.DEBUG)
    elif param.name == "quiet_logging" and value:
        logging.getLogger().setLevel(logging.ERROR)


def add_verbosity_options(group: click.Group) -> None:
    """Every subcommand takes -v (more logging) and -q (errors only; compile and tune's own -q
    also drops their progress and summary)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            add_verbosity_options(command)
            continue
        taken = {opt for param in command.params for opt in param.opts}
        if "-v" not in taken:
            command.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                               callback=set_verbosity, help="More logging on stderr (-vv for debug)."))
        if "-q" not in taken:
            command.params.append(click.Option(["-q", "--quiet", "quiet_logging"], is_flag=True, expose_value=False,
                                               callback=set_verbosity, help="Only errors on stderr."))


add_verbosity_options(main_group)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command and turn every failure into one line and an exit code."""
    try:
        main_group.main(args=argv, prog_name="edgec", standalone_mode=False)
        return 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort:
        click.echo("edgec: aborted", err=True)
        return 130
    except click.UsageError as exc:
        command = f" {exc.ctx.command_path.split(' ', 1)[1]}" if exc.ctx and " " in exc.ctx.command_path else ""
        click.echo(f"edgec{command}: error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"edgec: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except EdgecError as exc:
        click.echo(f"edgec: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("edgec: aborted", err=True)
        return 130
    except MemoryError as exc:
        click.echo(f"edgec: error: out of memory ({exc or 'MemoryError'})", err=True)
        return 1
    except Exception as exc:  # a bug in edgec or a library: one line, the traceback with -v
        logger.info("traceback of the internal error:", exc_info=True)
        click.echo(f"edgec: internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)", err=True)
        return 1


RUNTIME_COMMANDS = frozenset({"run", "bench", "check"})


def console_main() -> int:
    """The ``edgec`` command. It is a process of its own, so a command that only runs an
    artifact loads only what running needs: TVM's runtime library, not its compiler (LLVM
    included), and not torch, which tvm_ffi imports whenever it is installed. Together they
    are about 300 MB of resident memory that a deployed runtime never has."""
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    if command in RUNTIME_COMMANDS and "tvm" not in sys.modules:
        os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
        sys.modules.setdefault("torch", None)  # an ImportError for tvm_ffi's optional import
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
