"""edgec as an ONNX backend (``onnx.backend.base.Backend``), for onnx's conformance tests.

    rep = edgec.conformance.backend.prepare(model_proto)        # compiles for this machine's CPU
    outputs = rep.run([x, y])                       # positional, in graph-input order

``prepare`` is the whole compile driver (import, passes, lowering, artifact) followed
by ``edgec.runtime.load``, so a backend test exercises exactly what ``edgec compile``
then ``edgec run`` do. Failures keep edgec's own error types: an ``EdgecError`` is a
refusal with its one-line reason, anything else is an internal error.
"""

from __future__ import annotations

import tempfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from ..errors import ArtifactError

TARGET = "x86-64"
"""The host CPU: the one target whose code runs where the tests run."""


class EdgecRep(BackendRep):
    """A compiled model, loaded: ``run`` takes the inputs positionally or by name."""

    def __init__(self, compiled):
        self.compiled = compiled

    def run(self, inputs, **kwargs) -> tuple:
        names = [spec["name"] for spec in self.compiled.inputs]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(arrays) != len(names):
                raise ArtifactError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(arrays)}")
            feeds = dict(zip(names, arrays))
        outputs = self.compiled.run(feeds)
        return namedtuple("Outputs", [f"o{i}" for i in range(len(outputs))])(*outputs.values())


class EdgecBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> EdgecRep:
        """Compile ``model`` for the host CPU and load the artifact.

        The artifact lives in a temporary directory only while it loads: the runtime maps
        its weights and keeps the mapping after the file is unlinked."""
        from ..compiler.driver import CompileRequest, compile_model
        from ..runtime import load

        if not cls.supports_device(device):
            raise ArtifactError(f"edgec's backend runs on the CPU, not {device}")
        with tempfile.TemporaryDirectory(prefix="edgec-backend-") as workdir:
            source = Path(workdir) / "model.onnx"
            source.write_bytes(model.SerializeToString())
            output = Path(workdir) / "model.edgec"
            compile_model(CompileRequest(model=source, target=kwargs.get("target", TARGET), output=output))
            return EdgecRep(load(output))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = EdgecBackend.prepare
run_model = EdgecBackend.run_model
supports_device = EdgecBackend.supports_device
