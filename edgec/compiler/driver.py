"""The compile driver: import, then passes, then lowering, then the artifact.

Data flows one way through these four steps; each step's failure is reported
with what it was working on, and nothing is written unless every step succeeded.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import onnx

from .. import __version__
from ..deploy.artifact import open_artifact, sha256_file, write_artifact
from ..deploy.manifest import Partition, parse_value
from ..errors import ProfileViolation, UsageError
from ..frontend.exporter import export_model
from ..frontend.importer import convert_model, ensure_static, load_model
from ..frontend.validate import check_arena_size, check_declared_sizes
from ..ir import Model
from ..passes.plan_memory import plan_memory, target_alignment
from ..profiles.compliance import check_static, lowered_arena_check
from ..profiles.profile import Profile, from_metadata_props, load_profile
from ..quant.accuracy_budget import Budget, fit_budget, resolve_budget
from ..reports.report import build_report, with_firmware_memory, with_runtime_memory
from .cache import CompileCache, cache_key, write_depfile
from .pass_manager import Instrument, PassManager, PassSpec, Pipeline
from .pipelines import DEFAULT_PIPELINE

logger = logging.getLogger(__name__)



@dataclass
class CompileRequest:
    model: Path
    target: str
    output: Path
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    """Named symbolic dims bound everywhere (``--dim``); a leading input dim left free takes the
    profile's ``latency.batch_size``, else 1."""
    pipeline: str = DEFAULT_PIPELINE
    verify_each: bool = True
    depfile: Path | None = None
    cache_dir: Path | None = None
    profile: str | None = None
    """A built-in profile name or a profile file; None: the model's own, if it carries one."""
    profile_overrides: tuple[str, ...] = ()
    allow_violations: bool = False
    tuning_db: Path | None = None
    """A directory of tuning records (``edgec tune``); kernels without a record keep the rules."""
    fallback: str | None = None
    """cpu or error: what happens to nodes the accelerator refuses; None: cpu on targets with
    an accelerator, no partitioning on the others."""
    accuracy_data: Path | None = None
    """Data for the accuracy budget of quantization (``--data``), with ``metric`` and ``max_drop``
    or the profile's accuracy section."""
    metric: str | None = None
    max_drop: float | None = None


@dataclass
class CompileResult:
    output: Path
    manifest: dict
    inputs: list[Path]
    """Every file the compile read: what a build system must watch."""
    cached: bool = False
    bindings: list = field(default_factory=list)
    """The symbolic input dims the compile fixed, and what fixed each (``importer.DimBinding``)."""

    def __str__(self) -> str:
        origin = ", from the cache" if self.cached else ""
        from ..units import human_size

        return f"{self.output} ({self.manifest['target']['name']}, {human_size(self.output.stat().st_size)}{origin})"


Progress = Callable[[str], None]


def check_writable(output: Path, flag: str = "-o") -> None:
    """Fail before any work when an output cannot be written where asked."""
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise UsageError(f"{flag} {output}: is a directory")
    if not parent.exists():
        raise UsageError(f"{flag} {output}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{flag} {output}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise UsageError(f"{flag} {output}: not writable")


def signature(values) -> list[dict]:
    return [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in values]


def with_valid_rows(outputs: list[dict], valid_rows: dict | None) -> list[dict]:
    """Outputs whose row count the data decides (NonMaxSuppression's) at their static upper bound,
    naming their count output (appended, int64 [1]); the runtimes return the first ``count`` rows."""
    if not valid_rows:
        return outputs
    outputs = [{**spec, "shape": valid_rows[spec["name"]]["shape"], "valid_rows": valid_rows[spec["name"]]["count"]}
               if spec["name"] in valid_rows else spec for spec in outputs]
    counts = dict.fromkeys(cut["count"] for cut in valid_rows.values())
    return outputs + [{"name": count, "dtype": "int64", "shape": [1], "count_of_rows": True} for count in counts]


def recorded_pipeline(pipeline: Pipeline) -> str:
    """The pipeline as the artifact and the cache key record it: files its passes read (calibration
    data) by name alone, like the source model, so the same inputs in another directory give the
    same bytes. The files' contents are in the cache key."""
    return str(Pipeline([
        PassSpec(spec.name, replace(spec.options, **{
            f.name: Path(value).name for f in fields(spec.options)
            if f.metadata.get("file") and (value := getattr(spec.options, f.name))}))
        for spec in pipeline]))


@dataclass
class Plan:
    """What a compile will do, settled before the expensive steps."""

    request: CompileRequest
    target: object
    pipeline: Pipeline
    profile: Profile | None
    inputs: list[Path]
    budget: Budget | None = None
    bindings: list = field(default_factory=list)

    def cache_settings(self) -> dict:
        request = self.request
        return {
            "target": self.target.manifest(),
            "pipeline": recorded_pipeline(self.pipeline),
            "input_shapes": {name: list(shape) for name, shape in sorted(request.input_shapes.items())},
            "dim_bindings": [binding.to_dict() for binding in self.bindings],
            "source_name": Path(request.model).name,
            "profile": self.profile.to_dict() if self.profile else None,
            "allow_violations": request.allow_violations,
            "accuracy_budget": self.budget.to_dict() if self.budget else None,
        }


def compile_model(
    request: CompileRequest,
    instruments: list[Instrument] = (),
    progress: Progress = lambda step: None,
) -> CompileResult:
    """Compile, or copy a cached result when ``cache_dir`` holds one for identical inputs.

    Instruments (IR printing, timing...) ask for the pipeline to run, so they bypass the cache."""
    # Cheap checks first, so a bad flag never costs an import or a TVM build.
    from edgec.targets import get_target
    from edgec.targets.partitioned import with_partitioning

    target = get_target(request.target)
    if request.fallback not in (None, "cpu", "error"):
        raise UsageError(f"--fallback must be cpu or error, not {request.fallback!r}")
    pipeline = with_partitioning(Pipeline.parse(request.pipeline), request.target, target, request.fallback)
    profile = load_profile(request.profile, request.profile_overrides) if request.profile else None
    if request.profile_overrides and not request.profile:
        raise UsageError("--set needs --profile (the profile it overrides)")
    check_writable(request.output)
    if request.depfile:
        check_writable(request.depfile, "--depfile")

    progress("importing")
    model = load_model(request.model, request.input_shapes, request.dims, lambda metadata: batch_binding(profile, metadata))
    ensure_static(model, str(request.model))
    if profile is None:
        profile = from_metadata_props(model.metadata)  # a model may carry its own profile
        if profile:
            logger.info("compiling against the profile %s that %s carries", profile.name, request.model)
    check_declared_sizes(model, target.memory_bytes, target.name, str(request.model), profile is not None)
    if profile and (mismatch := batch_mismatch(model, profile, model.dim_bindings)):
        logger.warning("%s: %s", request.model, mismatch)
    inputs = [*model.source_files, *([Path(request.target)] if request.target.endswith(".toml") else [])]
    if profile:
        inputs += [Path(source) for source in profile.sources if Path(source).is_file()]
    if profile and profile.quantization.scheme == "per-tensor":
        for spec in pipeline:  # a profile asking for one weight scale per tensor configures the quantize pass
            if spec.name == "quantize":
                spec.options.per_tensor_weights = True
    pipeline.check_inputs(model)  # files the passes read (calibration data) fail here, as usage errors
    inputs += [Path(name) for name in pipeline.files()]
    budget = resolve_budget(request.accuracy_data, request.metric, request.max_drop, profile)
    if budget is not None:
        if not any(spec.name == "quantize" for spec in pipeline):
            raise UsageError("--data measures the accuracy of quantization: give --calib DATA.npz too")
        inputs.append(budget.data)
    if request.tuning_db:
        from edgec.targets.tuning import record_files

        inputs += [path for path in record_files(request.tuning_db) if path.is_file()]
    plan = Plan(request, target, pipeline, profile, inputs, budget, model.dim_bindings)

    if request.cache_dir and not instruments:
        cache = CompileCache(request.cache_dir)
        key = cache_key(inputs, plan.cache_settings())
        with cache.locked(key):
            if cache.fetch(key, request.output):
                logger.info("cache hit %s", key[:16])
                result = CompileResult(request.output, open_artifact(request.output).manifest, inputs, cached=True,
                                       bindings=plan.bindings)
            else:
                result = build(plan, model, instruments, progress)
                cache.store(key, request.output)
    else:
        result = build(plan, model, instruments, progress)
    if request.depfile:
        write_depfile(request.depfile, request.output, inputs)
    return result


def batch_binding(profile: Profile | None, metadata: dict[str, str]) -> tuple[int, str]:
    """The size of a symbolic leading (batch) input dim, and where it comes from: the compile's
    profile, else the one the model carries, else 1."""
    profile = profile or from_metadata_props(metadata)
    if profile and profile.latency.batch_size:
        return profile.latency.batch_size, f"profile {profile.name}'s latency.batch_size"
    return 1, "the default batch size (no profile sets latency.batch_size)"


def batch_mismatch(model: Model, profile: Profile, bindings) -> str | None:
    """Why latency will not be measured at the profile's batch size: an input's leading dim was
    fixed by the exporter at another size (a bound symbolic dim already follows the profile)."""
    wanted = profile.latency.batch_size
    bound = {(binding.input, binding.axis) for binding in bindings}
    for value in model.graph.inputs:
        if not wanted or not value.shape or (value.name, 0) in bound or value.shape[0] == wanted:
            continue
        return (f"input '{value.name}' has a fixed batch of {value.shape[0]}, and profile {profile.name}'s "
                f"latency.batch_size is {wanted}: latency is measured per batch of {value.shape[0]}; export the "
                "model with a symbolic batch dim to compile it at the profile's batch size")
    return None


def quantize_spec(pipeline: Pipeline) -> PassSpec:
    return next(spec for spec in pipeline if spec.name == "quantize")


def before_quantize(plan: Plan, model: Model) -> Model:
    """A copy of the model after the passes before quantize: the float reference of the
    accuracy budget and of the per-layer report."""
    at = [spec.name for spec in plan.pipeline].index("quantize")
    copy = convert_model(export_model(model))
    return PassManager(Pipeline(plan.pipeline.passes[:at]), verify_each=plan.request.verify_each).run(copy)


def fit_accuracy_budget(plan: Plan, prepared: Model):
    """Settle which ops the budget keeps in float, and add them to the quantize step's
    ``exclude``, so the recorded pipeline rebuilds the same graph. A budget that cannot be
    met, even with every op in float, is a profile violation."""
    spec = quantize_spec(plan.pipeline)
    fitted = fit_budget(prepared, spec.options, plan.budget)
    for line in fitted.summary():
        logger.info("accuracy budget: %s", line)
    if not fitted.met:
        text = f"{plan.request.model} cannot meet its accuracy budget: {fitted.summary()[0]}"
        if not plan.request.allow_violations:
            raise ProfileViolation(f"{text} (--allow-violations to compile anyway)")
        logger.warning("%s, allowed by --allow-violations", text)
    if fitted.reverted:
        spec.options.exclude = ";".join([*spec.options.excluded, *fitted.reverted])
    return fitted


def quantization_record(plan: Plan, prepared: Model, model: Model, fitted) -> dict:
    """Per quantized layer: placement, scales and zero points, and SQNR against the float model
    over the budget's data (else the calibration data); and the budget's outcome."""
    from ..quant.report import layer_record

    spec = quantize_spec(plan.pipeline)
    source, flag = (plan.budget.data, "--data") if plan.budget else (Path(spec.options.calib), "--calib")
    _, record = layer_record(prepared, model, source, flag, spec.options.excluded, fitted)
    return {**record, "budget": fitted.to_dict() if fitted else None}


RECURRENT = ("RNN", "GRU", "LSTM")


def recurrent_steps(model) -> int | None:
    """Time steps one call runs: the longest sequence of the RNN, GRU and LSTM nodes (None without
    any), so ``edgec check`` can tell a streaming model (1, the caller keeps the state) from a whole sequence."""
    shapes = [(node.inputs[0].shape, 1 if node.attr("layout", 0) == 1 else 0) for node in model.graph.nodes
              if node.op_type in RECURRENT and node.domain in ("", "ai.onnx")]
    steps = [shape[axis] for shape, axis in shapes if shape and isinstance(shape[axis], int)]
    return max(steps) if steps else None


def build(plan: Plan, model: Model, instruments, progress) -> CompileResult:
    """Passes, the profile's static checks, lowering and the artifact, for an imported model."""
    from edgec.passes.partition import layer_devices, plan_of
    from edgec.targets import lower
    from edgec.targets.partitioned import lower_partitions

    request, target, profile = plan.request, plan.target, plan.profile
    # Quantization is judged on the graph as imported, or on the result when the pipeline quantizes.
    quantizes = any(spec.name == "quantize" for spec in plan.pipeline)
    imported = convert_model(export_model(model)) if profile and profile.quantization.required and not quantizes else None

    progress("running passes")
    prepared = before_quantize(plan, model) if quantizes else None
    fitted = None
    if plan.budget is not None:
        progress("fitting the accuracy budget")
        fitted = fit_accuracy_budget(plan, prepared)
    manager = PassManager(plan.pipeline, instruments, verify_each=request.verify_each)
    model = manager.run(model)
    for pass_name, diagnostic in manager.diagnostics:
        if diagnostic.severity == "warning":
            logger.warning("%s: %s", pass_name, diagnostic)
    if quantizes:
        quantization = quantization_record(plan, prepared, model, fitted)
    else:  # a QDQ model from 'edgec quantize' carries its own record
        quantization = json.loads(model.metadata["edgec.quantization"]) if "edgec.quantization" in model.metadata else None

    memory = plan_memory(model, target_alignment(target))  # in the final node order
    check_arena_size(memory.arena_bytes, target.memory_bytes, target.name, str(request.model), profile is not None)
    compliance = None
    if profile:
        progress(f"checking against profile {profile.name}")
        report = check_static(profile, model, target, imported, memory)
        compliance = {**report.to_dict(), "violations_allowed": request.allow_violations and not report.ok}
        if not report.ok:
            text = report.format()
            if any(f.attribute.startswith("memory.") for f in report.violations):
                text += "\n" + memory.explain(profile.memory.activation_arena)
            if not request.allow_violations:
                raise ProfileViolation(f"{request.model} cannot meet its profile (--allow-violations to compile anyway):\n{text}")
            logger.warning("profile violations allowed by --allow-violations:\n%s", text)

    progress(f"lowering for {target.name} with TVM")
    partition_plan = plan_of(model)
    if partition_plan is not None and target.family == "cortex-m":
        raise UsageError(f"target {target.name} builds one firmware image for one core: remove the partition "
                         "pass from --passes")
    if partition_plan is not None:  # one library per partition, each for its device
        lowered = lower_partitions(model, target, partition_plan, tuning_db=request.tuning_db)
    else:
        lowered = lower(model, target, tuning_db=request.tuning_db, name=Path(request.model).stem)
    # What the VMs really allocate after TVM's layout changes and fusion, not the graph's plan.
    finding = (lowered_arena_check(profile.memory.activation_arena, lowered.runtime_memory,
                                   parse_value(list[Partition], lowered.partitions, "partitions")
                                   if partition_plan is not None else [])
               if profile and profile.memory.activation_arena is not None else None)
    if finding is not None:
        compliance["checks"].append(finding.to_dict())
        if not finding.ok:
            compliance["ok"] = False
            compliance["violations_allowed"] = request.allow_violations
            if not request.allow_violations:
                raise ProfileViolation(f"{request.model} cannot meet its profile (--allow-violations to compile anyway):\n"
                                       f"  {finding.format()}\n       how: {finding.how}")
            logger.warning("profile violation allowed by --allow-violations: %s", finding.format())

    progress("writing artifact")
    manifest = {
        "edgec_version": __version__,
        "tvm_version": lowered.tvm_version,
        "onnx_version": onnx.__version__,
        "source": {"file": Path(request.model).name, "sha256": sha256_file(Path(request.model))},
        "target": lowered.target_manifest,
        "pipeline": recorded_pipeline(plan.pipeline),
        "signature": {"inputs": signature(model.graph.inputs),
                      "outputs": with_valid_rows(signature(model.graph.outputs), lowered.valid_rows)},
        "dim_bindings": [binding.to_dict() for binding in plan.bindings],
        "report": with_firmware_memory(with_runtime_memory(
            build_report(model, layer_devices(model, partition_plan) or target.device, memory), lowered.runtime_memory),
            lowered.target_manifest.get("mcu_memory")),
        "memory_plan": memory.to_dict(),
        "runtime_memory": lowered.runtime_memory,
        "recurrent_steps": recurrent_steps(model),
        "profile": profile.to_dict() if profile else None,
        "compliance": compliance,
        "quantization": quantization,
        **({"partition_plan": partition_plan.to_dict(), "partitions": lowered.partitions} if partition_plan else {}),
    }
    firmware = partition_plan is None and lowered.members  # a bare-metal target's project and ELF
    manifest = write_artifact(request.output, manifest, lowered.members if firmware else lowered.library, lowered.params)
    return CompileResult(request.output, manifest, plan.inputs, bindings=plan.bindings)
