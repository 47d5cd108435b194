"""The compile driver: import, then passes, then lowering, then the artifact.

Data flows one way through these four steps; each step's failure is reported
with what it was working on, and nothing is written unless every step succeeded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from . import __version__
from .artifact import sha256_file, write_artifact
from .errors import UsageError
from .importer import ensure_static, load_model
from .ir import Model
from .pass_manager import Instrument, Pipeline, PassManager

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE = "remove-identity,fold-constants,fold-batchnorm,eliminate-dead"


@dataclass
class CompileRequest:
    model: Path
    target: str
    output: Path
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    pipeline: str = DEFAULT_PIPELINE
    verify_each: bool = True


@dataclass
class CompileResult:
    output: Path
    manifest: dict
    model: Model


Progress = Callable[[str], None]


def check_writable(output: Path) -> None:
    """Fail before any work when the artifact cannot be written where asked."""
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise UsageError(f"-o {output}: is a directory")
    if not parent.exists():
        raise UsageError(f"-o {output}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"-o {output}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise UsageError(f"-o {output}: not writable")


def signature(values) -> list[dict]:
    return [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in values]


def compile_model(
    request: CompileRequest,
    instruments: list[Instrument] = (),
    progress: Progress = lambda step: None,
) -> CompileResult:
    # Cheap checks first, so a bad flag never costs an import or a TVM build.
    from edgec.targets import get_target, lower

    target = get_target(request.target)
    pipeline = Pipeline.parse(request.pipeline)
    check_writable(request.output)

    progress("importing")
    model = load_model(request.model, request.input_shapes)
    ensure_static(model, str(request.model))

    progress("running passes")
    manager = PassManager(pipeline, instruments, verify_each=request.verify_each)
    model = manager.run(model)
    for pass_name, diagnostic in manager.diagnostics:
        if diagnostic.severity == "warning":
            logger.warning("%s: %s", pass_name, diagnostic)

    progress(f"lowering for {target.name} with TVM")
    lowered = lower(model, target)

    progress("writing artifact")
    manifest = {
        "edgec_version": __version__,
        "tvm_version": lowered.tvm_version,
        "onnx_version": onnx.__version__,
        "source": {"file": Path(request.model).name, "sha256": sha256_file(Path(request.model))},
        "target": lowered.target_manifest,
        "pipeline": str(pipeline),
        "signature": {"inputs": signature(model.graph.inputs), "outputs": signature(model.graph.outputs)},
    }
    manifest = write_artifact(request.output, manifest, lowered.library, lowered.params)
    return CompileResult(request.output, manifest, model)
