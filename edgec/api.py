"""edgec's Python API: what the command line runs, with the same names, defaults and errors.

    import edgec
    result = edgec.compile("model.onnx", target="x86-64", output="model.edgec")
    outputs = edgec.load(result.output).run({"input": array})

``edgec.load`` is the runtime's and imports no compiler; everything else here is exported
from the ``edgec`` package lazily, so a deployed app that only loads artifacts never pays
for onnx, the passes or TVM's compiler.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .compiler.driver import CompileRequest, CompileResult, compile_model
from .compiler.pass_manager import Instrument
from .compiler.pipelines import DEFAULT_PIPELINE
from .errors import UsageError

PathLike = str | os.PathLike


def compile(  # noqa: A001 - edgec.compile is the name users expect, as tvm.compile
    model: PathLike,
    target: str,
    *,
    output: PathLike | None = None,
    profile: str | None = None,
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
    from .targets import get_target

    model = Path(model)
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
