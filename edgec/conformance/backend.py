"""edgec as an ONNX backend (``onnx.backend.base.Backend``), for onnx's conformance tests.

    rep = edgec.conformance.backend.prepare(model_proto)        # compiles for this machine's CPU
    outputs = rep.run([x, y])                       # positional, in graph-input order

``prepare`` is the whole compile driver (import, passes, lowering, artifact) followed
by ``edgec.runtime.load``, so a backend test exercises exactly what ``edgec compile``
then ``edgec run`` do. Failures keep edgec's own error types: an ``EdgecError`` is a
refusal with its one-line reason, anything else is an internal error.

A graph input that only gives an op its output shape (Reshape's shape, a reduction's axes,
Resize's scales or sizes, Split's sizes, Pad's pads, TopK's ``k``, NonMaxSuppression's
limits...), as onnx's node tests feed them, decides a shape that edgec fixes at compile time
(exporters write these as constants), and one that only gives Dropout its ratio or training
mode decides the computation: the backend compiles such a model at its first run, with those
inputs' values as constants, and again when a later run gives other values.
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


REDUCTIONS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
SHAPE_INPUTS = {
    "TopK": (1,), "NonMaxSuppression": (2, 3, 4), "Dropout": (1, 2),
    "Reshape": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Split": (1,), "Pad": (1, 2, 3),
    "CumSum": (1,), "CumProd": (1,), "CenterCropPad": (1,), "AffineGrid": (1,),
    "HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,), "OneHot": (1, 2),
    **dict.fromkeys(REDUCTIONS, (1,)),
}
"""Inputs, by position, that set an op's output shape, axes, count or mode (or OneHot's values, which TVM
takes as constants only): bound as constants when graph inputs."""


def inputs_to_bind(model: onnx.ModelProto) -> list[str]:
    """Graph inputs used only in the positions of SHAPE_INPUTS."""
    uses: dict[str, list[bool]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            uses.setdefault(name, []).append(position in SHAPE_INPUTS.get(node.op_type, ()))
    return [v.name for v in model.graph.input if uses.get(v.name) and all(uses[v.name])]


def with_constants(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` with the graph inputs in ``values`` turned into initializers."""
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    kept = [v for v in bound.graph.input if v.name not in values]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    bound.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(a), name) for name, a in values.items())
    return bound


class EdgecRep(BackendRep):
    """A compiled model, loaded: ``run`` takes the inputs positionally or by name. With ``bound_inputs``,
    the model is compiled at run time, those inputs bound to the values given."""

    def __init__(self, compiled, model: onnx.ModelProto | None = None, bound_inputs: list[str] = (), target: str = TARGET):
        self.compiled, self.model, self.bound_inputs, self.target, self.bound = compiled, model, bound_inputs, target, None

    def input_names(self) -> list[str]:
        if self.model is not None:
            return [v.name for v in self.model.graph.input]
        return [spec["name"] for spec in self.compiled.inputs]

    def run(self, inputs, **kwargs) -> tuple:
        names = self.input_names()
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(arrays) != len(names):
                raise ArtifactError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(arrays)}")
            feeds = dict(zip(names, arrays))
        if self.bound_inputs:
            values = {name: np.asarray(feeds.pop(name)) for name in self.bound_inputs if name in feeds}
            key = {name: (a.dtype.str, a.shape, a.tobytes()) for name, a in values.items()}
            if key != self.bound:
                self.compiled, self.bound = compile_and_load(with_constants(self.model, values), self.target), key
        outputs = self.compiled.run(feeds)
        return namedtuple("Outputs", [f"o{i}" for i in range(len(outputs))])(*outputs.values())


def compile_and_load(model: onnx.ModelProto, target: str):
    """The artifact lives in a temporary directory only while it loads: the runtime maps
    its weights and keeps the mapping after the file is unlinked."""
    from ..compiler.driver import CompileRequest, compile_model
    from ..runtime import load

    with tempfile.TemporaryDirectory(prefix="edgec-backend-") as workdir:
        source = Path(workdir) / "model.onnx"
        source.write_bytes(model.SerializeToString())
        output = Path(workdir) / "model.edgec"
        compile_model(CompileRequest(model=source, target=target, output=output))
        return load(output)


class EdgecBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> EdgecRep:
        """Compile ``model`` for the host CPU and load the artifact (at the first run when
        inputs set shapes, see SHAPE_INPUTS)."""
        if not cls.supports_device(device):
            raise ArtifactError(f"edgec's backend runs on the CPU, not {device}")
        target = kwargs.get("target", TARGET)
        bound = inputs_to_bind(model)
        if bound:
            return EdgecRep(None, model, bound, target)
        return EdgecRep(compile_and_load(model, target))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = EdgecBackend.prepare
run_model = EdgecBackend.run_model
supports_device = EdgecBackend.supports_device
