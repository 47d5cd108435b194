"""edgec's Python API: what the command line runs, with the same names, defaults and errors.

    import edgec
    result = edgec.compile("model.onnx", target="x86-64", output="model.edgec")
    outputs = edgec.load(result.output).run({"input": array})

Each function is one command (``compile``, ``quantize``, ``tune``, ``analyze``, ``check``,
``bench``), its flags as keywords; it returns what the command prints, as a dataclass.
``edgec.load`` is the runtime's and imports no compiler; everything here is exported from
the ``edgec`` package lazily, and imports what it needs inside the function, so ``check``
and ``bench`` on a device, like an app that only loads artifacts, never pay for onnx, the
passes or TVM's compiler.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import EdgecError, ProfileViolation, UsageError
from .compiler.pipelines import DEFAULT_PIPELINE

if TYPE_CHECKING:
    from .quant.accuracy_budget import BudgetResult
    from .reports.analyze import Analysis
    from .reports.check import CheckReport, Latency
    from .profiles.compliance import Certificate
    from .compiler.driver import CompileResult
    from .compiler.pass_manager import Instrument
    from .quant.report import LayerRow
    from .targets.tuning import TuneSummary

PathLike = str | os.PathLike
Inputs = Mapping[str, np.ndarray] | PathLike | None
"""A run's inputs: arrays by input name, an .npz holding them, or None for seeded random ones."""


def compile(  # noqa: A001 - edgec.compile is the name users expect, as tvm.compile
    model: PathLike,
    target: str | PathLike,
    *,
    output: PathLike | None = None,
    profile: str | PathLike | None = None,
    overrides: Sequence[str] = (),
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dims: Mapping[str, int] | None = None,
    passes: str = DEFAULT_PIPELINE,
    calib: PathLike | None = None,
    calibrator: str = "minmax",
    no_quantize: Iterable[str] = (),
    per_tensor_weights: bool = False,
    unsigned: bool = False,
    reduce_range: bool | None = None,
    data: PathLike | None = None,
    metric: str | None = None,
    max_drop: float | None = None,
    tuning_db: PathLike | None = None,
    fallback: str | None = None,
    allow_violations: bool = False,
    depfile: PathLike | None = None,
    cache_dir: PathLike | None = None,
    sign: PathLike | None = None,
    verify_each: bool = True,
    instruments: Sequence[Instrument] = (),
    progress=None,
) -> CompileResult:
    """Compile ``model`` (an ONNX file) for ``target`` into one ``.edgec`` artifact.

    The keywords are ``edgec compile``'s flags. With ``calib`` the model is quantized first,
    with the target's weight bits unless ``reduce_range`` says (7 on AVX2 targets, whose int8
    dot product needs them; 8 elsewhere). With ``sign`` (an Ed25519 private key file) the
    artifact carries a signature; a failure to sign leaves no artifact.
    """
    from .compiler.driver import CompileRequest, compile_model
    from .targets import get_target

    model, target, profile = Path(model), os.fspath(target), os.fspath(profile) if profile is not None else None
    key = None
    if sign is not None:
        from .deploy.trust import load_private_key

        key = load_private_key(Path(sign))  # before the compile: a bad key costs nothing
    pipeline = quantized_pipeline(passes, calib=calib, calibrator=calibrator, no_quantize=list(no_quantize),
                                  per_tensor_weights=per_tensor_weights, unsigned=unsigned, reduce_range=reduce_range,
                                  weight_bits=get_target(target).int8_weight_bits)
    request = CompileRequest(
        model=model,
        target=target,
        output=Path(output) if output is not None else Path(model.stem + ".edgec"),
        input_shapes={name: tuple(shape) for name, shape in (input_shapes or {}).items()},
        dims=dict(dims or {}),
        pipeline=pipeline,
        verify_each=verify_each,
        depfile=Path(depfile) if depfile is not None else None,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        profile=profile,
        profile_overrides=tuple(overrides),
        allow_violations=allow_violations,
        fallback=fallback,
        tuning_db=Path(tuning_db) if tuning_db is not None else None,
        accuracy_data=Path(data) if data is not None else None,
        metric=metric,
        max_drop=max_drop,
    )
    result = compile_model(request, list(instruments), progress or (lambda *_: None))
    if key is not None:
        from .deploy.trust import sign_artifact

        try:
            sign_artifact(result.output, key)
        except BaseException:
            result.output.unlink(missing_ok=True)  # asked for a signed artifact: an unsigned one is no result
            raise
    return result


def quantized_pipeline(pipeline: str, *, calib: PathLike | None, calibrator: str = "minmax",
                       no_quantize: list[str] | None = None, per_tensor_weights: bool = False, unsigned: bool = False,
                       reduce_range: bool | None = None, weight_bits: int = 8) -> str:
    """``pipeline`` with a quantize step at its quantize point when ``calib`` is given;
    ``weight_bits``: the target's preference, used when ``reduce_range`` is None."""
    from .passes.quantize import QuantizeOptions, with_quantize

    if not calib:
        if no_quantize or per_tensor_weights or unsigned or reduce_range is not None or calibrator != "minmax":
            raise UsageError("--calibrator, --no-quantize, --per-tensor-weights, --unsigned and --reduce-range/--full-range "
                             "need --calib")
        return pipeline
    settings = QuantizeOptions(calib=str(calib), calibrator=calibrator, exclude=";".join(no_quantize or []),
                               per_tensor_weights=per_tensor_weights, unsigned=unsigned,
                               reduce_range=reduce_range if reduce_range is not None else weight_bits == 7)
    return with_quantize(pipeline, settings)


@dataclass
class QuantizeResult:
    """What ``quantize`` wrote, and how the int8 model compares with the float one."""

    output: Path
    activation_pairs: int
    """QuantizeLinear/DequantizeLinear pairs on activations."""
    weight_bytes_before: int
    weight_bytes_after: int
    budget: BudgetResult | None = None
    """The accuracy budget's outcome (with ``data``), else None."""
    layers: list[LayerRow] = field(default_factory=list)
    """Per layer, with ``report=True``: placement, scales, SQNR against float."""
    diagnostics: list[str] = field(default_factory=list)
    """The quantize pass's notes (nodes it left in float, and why)."""

    def __str__(self) -> str:
        return (f"{self.output}: {self.activation_pairs} activation Q/DQ pairs, weights "
                f"{self.weight_bytes_before / 1e3:.1f} kB -> {self.weight_bytes_after / 1e3:.1f} kB")

    def to_dict(self) -> dict:
        from .quant.report import rows_to_dicts

        return {"output": str(self.output), "activation_pairs": self.activation_pairs,
                "weight_bytes": {"before": self.weight_bytes_before, "after": self.weight_bytes_after},
                "budget": self.budget.to_dict() if self.budget else None, "layers": rows_to_dicts(self.layers),
                "diagnostics": self.diagnostics}


def quantize(
    model: PathLike,
    *,
    calib: PathLike,
    output: PathLike | None = None,
    calibrator: str = "minmax",
    no_quantize: Iterable[str] = (),
    per_tensor_weights: bool = False,
    unsigned: bool = False,
    reduce_range: bool | None = None,
    data: PathLike | None = None,
    metric: str | None = None,
    max_drop: float | None = None,
    report: bool = False,
    profile: str | PathLike | None = None,
    overrides: Sequence[str] = (),
) -> QuantizeResult:
    """Quantize ``model`` (static int8) into a QDQ ONNX file, ``output`` by default MODEL's
    stem + ``.qdq.onnx``: ``edgec quantize``. With ``data`` and ``max_drop`` (or a profile's
    accuracy section) ops go back to float until the budget is met; with ``report`` the
    per-layer table is measured and recorded in the file's metadata."""
    import onnx

    from .quant.accuracy_budget import fit_budget, resolve_budget
    from .profiles.compliance import weight_bytes
    from .compiler.driver import check_writable
    from .frontend.exporter import export_model
    from .frontend.importer import convert_model, load_model
    from .compiler.pass_manager import PassManager, Pipeline
    from .compiler.pipelines import PIPELINES

    model, data = Path(model), Path(data) if data is not None else None
    resolved = None
    if profile or overrides:  # a profile's accuracy section is the budget; its scheme picks the weight scales
        from .profiles.profile import load_profile

        if not profile:
            raise UsageError("--set needs --profile (the profile it overrides)")
        resolved = load_profile(os.fspath(profile), tuple(overrides))
        per_tensor_weights = per_tensor_weights or resolved.quantization.scheme == "per-tensor"
    budget = resolve_budget(data, metric, max_drop, resolved)
    output = Path(output) if output is not None else Path(model.stem + ".qdq.onnx")
    check_writable(output)
    pipeline = Pipeline.parse(quantized_pipeline(
        ",".join(PIPELINES["quantize-prepare"]), calib=calib, calibrator=calibrator, no_quantize=list(no_quantize),
        per_tensor_weights=per_tensor_weights, unsigned=unsigned, reduce_range=reduce_range))
    quantize_pass = pipeline.passes[-1]
    ir_model = load_model(model, {})
    pipeline.check_inputs(ir_model)
    before = weight_bytes(ir_model.graph)
    prepared = PassManager(Pipeline(pipeline.passes[:-1])).run(ir_model)
    float_model = convert_model(export_model(prepared)) if report else None
    result = QuantizeResult(output, 0, before, 0)
    record: dict = {}
    if budget is None:
        manager = PassManager(Pipeline([quantize_pass]))
        ir_model = manager.run(prepared)
        result.diagnostics = [str(diagnostic) for _, diagnostic in manager.diagnostics]
    else:
        result.budget = fit_budget(prepared, quantize_pass.options, budget)
        ir_model = result.budget.model
        record["budget"] = result.budget.to_dict()
    if report:
        from .quant.report import layer_record

        result.layers, layers = layer_record(float_model, ir_model, data or calib, "--data" if data else "--calib",
                                             quantize_pass.options.excluded, result.budget)
        record.update(layers)
    if record:
        ir_model.metadata["edgec.quantization"] = json.dumps(record)
    onnx.save(export_model(ir_model), output)
    result.activation_pairs = sum(n.op_type == "QuantizeLinear" for n in ir_model.graph.nodes)
    result.weight_bytes_after = weight_bytes(ir_model.graph)
    return result


def tune(
    model: PathLike,
    target: str | PathLike,
    *,
    db: PathLike,
    trials: int = 64,
    device: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    progress=None,
) -> TuneSummary:
    """Measure schedules for ``model``'s kernels with MetaSchedule into the record directory
    ``db`` (``edgec tune``); ``compile(..., tuning_db=db)`` uses them. ``progress(done, budget,
    kernel)`` is called after each measurement."""
    from .compiler.driver import batch_binding
    from .frontend.importer import ensure_static, load_model
    from .compiler.pass_manager import PassManager, Pipeline
    from .deploy.remote import parse_device
    from .targets import get_target
    from .targets.tuning import tune as tune_kernels

    spec = get_target(os.fspath(target))
    rpc_device = parse_device(device) if device else None
    loaded = load_model(Path(model), {name: tuple(shape) for name, shape in (input_shapes or {}).items()},
                        dict(dims or {}), lambda metadata: batch_binding(None, metadata))
    ensure_static(loaded, str(model))
    graph = PassManager(Pipeline.parse(DEFAULT_PIPELINE)).run(loaded)  # the graph compile lowers
    return tune_kernels(graph, spec, Path(db), trials, rpc_device, progress or (lambda *_: None), seed=seed,
                        verbose=logging.getLogger("edgec").getEffectiveLevel() <= logging.DEBUG)


def analyze(
    model: PathLike,
    target: str | PathLike,
    *,
    profile: str | PathLike | None = None,
    overrides: Sequence[str] = (),
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dims: Mapping[str, int] | None = None,
    passes: str = DEFAULT_PIPELINE,
) -> Analysis:
    """What compiling ``model`` for ``target`` would give, before any TVM work (``edgec
    analyze``); ``.ok`` is False when the profile's static checks fail (the command exits 3)."""
    from .reports.analyze import analyze as analyze_model

    return analyze_model(model, os.fspath(target), profile=os.fspath(profile) if profile is not None else None,
                         overrides=overrides, input_shapes=input_shapes, dims=dims, passes=passes)


@dataclass
class CheckResult:
    """``check``'s findings: the comparison with onnxruntime and the profile's certificate."""

    artifact: Path
    comparison: CheckReport | None = None
    """Against onnxruntime (with ``model``), else None."""
    certificate: Certificate | None = None
    """Against the profile, else None (no profile, or outputs that already differ)."""
    hint: str = ""
    """Why outputs may differ, when edgec can tell (an int8 artifact against a float model)."""

    @property
    def ok(self) -> bool:
        return (self.comparison is None or self.comparison.ok) and (self.certificate is None or self.certificate.ok)

    @property
    def error(self) -> EdgecError | None:
        """What ``edgec check`` fails with: outputs that differ (exit 1), a certificate that fails (3)."""
        if self.comparison is not None and not self.comparison.ok:
            return EdgecError(f"{self.artifact}: outputs differ from onnxruntime{self.hint}")
        if self.certificate is not None and not self.certificate.ok:
            return ProfileViolation(f"{self.artifact} does not comply with profile {self.certificate.profile['name']}")
        return None


def check(
    artifact: PathLike,
    *,
    model: PathLike | None = None,
    profile: str | PathLike | None = None,
    overrides: Sequence[str] = (),
    data: PathLike | None = None,
    output: PathLike | None = None,
    device: str | None = None,
    timeout: float = 120.0,
    inputs: Inputs = None,
    seed: int = 0,
    verify_key: PathLike | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> CheckResult:
    """Check ``artifact`` (``edgec check``): with ``model``, against onnxruntime on ``inputs``
    (seeded random by default); with a profile (``profile``, else the one compiled in), measure
    every attribute and issue a certificate, written to ``output`` as JSON when given.
    Outputs that differ end the check before the certificate, as in the command."""
    from .reports.check import compare_with_onnxruntime
    from .profiles.profile import load_profile, profile_from_dict

    artifact = Path(artifact)
    if not artifact.exists():
        raise UsageError(f"{artifact}: no such file")
    if output is not None:
        from .compiler.driver import check_writable

        check_writable(Path(output))
    verify_key = Path(verify_key) if verify_key is not None else None
    manifest = open_verified(artifact, verify_key).manifest
    if overrides and not profile:
        raise UsageError("--set needs --profile (the profile it overrides)")
    chosen = (load_profile(os.fspath(profile), tuple(overrides)) if profile
              else profile_from_dict(manifest["profile"], f"{artifact} manifest") if manifest.get("profile") else None)
    if model is None and chosen is None:
        raise UsageError(f"nothing to check: {artifact} has no profile; give --model MODEL.onnx or --profile")
    result = CheckResult(artifact)
    if model is not None:
        model = Path(model)
        compiled = load_artifact(artifact, device, timeout, verify_key)
        result.comparison = compare_with_onnxruntime(compiled, model, read_inputs(compiled, inputs, seed), rtol, atol)
        del compiled  # the certificate measures a fresh load
        if not result.comparison.ok:
            if manifest.get("quantization") and not model_quantizes(model):
                result.hint = (f" on {model}; the artifact is quantized (int8) and the model is float: compare it with "
                               "the QDQ model ('edgec quantize' writes one) or loosen --rtol/--atol")
            else:
                result.hint = f" on {model}"
            return result
    if chosen is not None:
        result.certificate = certify_artifact(artifact, manifest, chosen, data, model, device, timeout, verify_key)
        if output is not None:
            from .compiler.cache import write_text_atomically

            write_text_atomically(Path(output), json.dumps(result.certificate.to_dict(), indent=2) + "\n")
    return result


def certify_artifact(artifact: Path, manifest: dict, profile, data, model, device, timeout, verify_key):
    from types import SimpleNamespace

    from .profiles.compliance import certify

    target = SimpleNamespace(**{key: manifest["target"].get(key)
                                for key in ("name", "power_watts", "power_source", "memory_bytes")})
    if data is not None and not Path(data).is_file():
        raise UsageError(f"--data {data}: no such file")
    return certify(artifact, lambda: load_artifact(artifact, device, timeout, verify_key), profile,
                   Path(data) if data is not None else None, model, target)


def model_quantizes(model: Path) -> bool:
    """The ONNX file holds quantized ops (QDQ pairs or QLinear/Integer ops)."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
               or node.op_type.startswith("QLinear") or node.op_type.endswith("Integer") for node in proto.graph.node)


def bench(
    artifact: PathLike,
    *,
    device: str | None = None,
    timeout: float = 120.0,
    inputs: Inputs = None,
    seed: int = 0,
    verify_key: PathLike | None = None,
    repeat: int = 20,
    warmup: int = 3,
) -> Latency:
    """Time ``artifact`` (``edgec bench``): first-time latency and working set as ``check``
    measures them, then ``repeat`` steady-state runs after ``warmup`` untimed ones."""
    import time

    from .reports.check import measure_latency

    if repeat < 1 or warmup < 0:
        raise UsageError("--repeat must be at least 1 and --warmup at least 0")
    started = time.perf_counter()
    compiled = load_artifact(Path(artifact), device, timeout, Path(verify_key) if verify_key is not None else None)
    return measure_latency(compiled, read_inputs(compiled, inputs, seed), repeat, warmup, started)


def read_inputs(compiled, inputs: Inputs, seed: int = 0) -> dict[str, np.ndarray]:
    """``inputs`` as arrays by name: given, read from an .npz, or seeded random ones."""
    if inputs is None:
        return compiled.random_inputs(seed)
    if isinstance(inputs, Mapping):
        return dict(inputs)
    path = Path(inputs)
    if not path.is_file():
        raise UsageError(f"--inputs {path}: no such file")
    arrays = load_arrays(path, "--inputs")
    if not isinstance(arrays, dict):
        raise UsageError(f"--inputs {path}: an .npy holds one array; give an .npz with one array per input name")
    return arrays


def load_arrays(path: Path, flag: str):
    """An .npz's arrays by name, or an .npy's array, refusing pickles (loading one runs code)."""
    import zipfile

    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded as arrays:
            return {name: arrays[name] for name in arrays.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UsageError(f"{flag} {path}: holds pickled objects, which edgec does not load; "
                             "save plain numeric arrays (np.savez)") from None
        raise UsageError(f"{flag} {path}: not a NumPy file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{flag} {path}: not a NumPy file ({exc})") from None


def load_artifact(artifact: Path, device: str | None = None, timeout: float = 120.0, verify_key: Path | None = None):
    """The artifact loaded here, or on the lab device named by ``device``; with
    ``verify_key``, only when signed by that key (checked on the same open, so the
    members read are those the signed manifest lists)."""
    from .deploy.artifact import FIRMWARE_VERSION

    opened = open_verified(artifact, verify_key)
    if device and device != "host":
        if opened.manifest.get("format_version") == FIRMWARE_VERSION:
            raise UsageError(f"{artifact} is microcontroller firmware: it runs on its emulated board "
                             f"({opened.manifest['target'].get('board')}) without --device, or on a board you flash")
        from .deploy.remote import load_remote, parse_device

        return load_remote(opened, parse_device(device), timeout=timeout)
    from .runtime import open_model

    return open_model(opened)


def open_verified(artifact: Path, verify_key: Path | None):
    """The opened artifact, its signature checked when ``verify_key`` is given."""
    from .deploy.artifact import open_artifact

    key = None
    if verify_key:
        from .deploy.trust import load_public_key

        key = load_public_key(verify_key)
    if not artifact.exists():
        raise UsageError(f"{artifact}: no such file")
    opened = open_artifact(artifact)
    if key is not None:
        from .deploy.trust import verify_signature

        verify_signature(opened, key, verify_key)
    return opened
