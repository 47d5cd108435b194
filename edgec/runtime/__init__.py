"""Load and run an ``.edgec`` artifact. Needs only TVM's runtime and numpy.

    model = edgec.runtime.load("model.edgec")
    outputs = model.run({"input": array})

Weights are memory-mapped from the artifact file and handed to TVM without a
copy, so loading costs no more than the weights' size, and only for pages used.
TVM's runtime library is driven through ``tvm_ffi`` (edgec/runtime/tvm_runtime.py): the
``tvm`` Python package, most of it compiler, is never imported.

A partitioned artifact (one library per partition) runs its partitions in order,
each in its own VM on its device; a tensor crossing to a partition on another
device is copied there, once per run. The CPU test double's partitions run on the
host CPU, like CPU ones, so their crossings are not copied.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..deploy.artifact import FIRMWARE_VERSION, LIBRARY, WEIGHTS, ArtifactFile, open_artifact
from ..deploy.manifest import Manifest, Partition, ShapeInput, Target
from ..errors import ArtifactError
from ..host import cpu_features
from .tvm_runtime import Runtime, runtime


class Signature:
    """The input/output signature of an artifact and the checks on feeds.

    Shared by local (:class:`CompiledModel`) and remote (``edgec.deploy.remote.RemoteModel``)
    runs so both refuse the same bad inputs with the same messages.
    """

    def __init__(self, artifact: ArtifactFile):
        self.manifest = artifact.manifest
        self.typed = artifact.typed
        self.inputs: list[dict] = artifact.manifest["signature"]["inputs"]
        self.outputs: list[dict] = [spec for spec in artifact.manifest["signature"]["outputs"] if not spec.get("count_of_rows")]
        """The model's outputs; the counts of rows of outputs cut to them (``valid_rows``) are the library's only."""
        self.shape_inputs = artifact.typed.target.shape_inputs
        """Inputs whose value is a shape the compile fixed (``onnx_rewrites.pin_run_time_shapes``)."""

    def input_names(self) -> str:
        return ", ".join(spec["name"] for spec in self.inputs)

    def checked_inputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The inputs in signature order, checked by name, dtype and shape."""
        arrays = [self.check_input(spec, inputs) for spec in self.inputs]
        unknown = sorted(set(inputs) - {spec["name"] for spec in self.inputs})
        if unknown:
            raise ArtifactError(f"unknown input(s) {', '.join(unknown)}; the model takes {self.input_names()}")
        for pinned in self.shape_inputs:
            self.check_shape_input(pinned, inputs[pinned.input])
        return arrays

    @staticmethod
    def check_shape_input(pinned: ShapeInput, value) -> None:
        """Refuse a shape value that would give the node another output shape than it was compiled for."""
        sizes = [int(v) for v in np.asarray(value).reshape(-1)]
        try:
            shape = list(np.broadcast_shapes(tuple(pinned.data_shape), tuple(sizes)))
        except ValueError:
            shape = None
        if shape != pinned.shape:
            gives = f"gives {pinned.op} node '{pinned.node}' shape {shape}" if shape is not None else \
                f"does not broadcast with {pinned.op} node '{pinned.node}''s input {pinned.data_shape}"
            raise ArtifactError(f"input '{pinned.input}' = {sizes} {gives}; this artifact was compiled for "
                                f"shape {pinned.shape} (its value is a shape, fixed at compile time)")

    def check_input(self, spec: dict, inputs: dict[str, np.ndarray]) -> np.ndarray:
        name = spec["name"]
        if inputs.get(name) is None:  # None: an absent optional input, which the artifact requires
            raise ArtifactError(f"missing input '{name}'; the model takes {self.input_names()}")
        array = np.asarray(inputs[name])
        if str(array.dtype) != spec["dtype"]:
            raise ArtifactError(f"input '{name}' must be {spec['dtype']}, got {array.dtype}")
        if list(array.shape) != spec["shape"]:
            raise ArtifactError(self.bound_dim_message(name, list(array.shape))
                                or f"input '{name}' must have shape {spec['shape']}, got {list(array.shape)}")
        return np.require(array, requirements="C")  # ascontiguousarray would make a 0-d input 1-d

    def bound_dim_message(self, name: str, shape: list[int]) -> str | None:
        """Why a feed of ``shape`` is refused when it differs in a dim the compile bound; None otherwise."""
        for binding in self.typed.dim_bindings:
            axis = binding.axis
            if binding.input == name and axis < len(shape) and shape[axis] != binding.value:
                dim = f" ('{binding.dim}')" if binding.dim else ""
                flag = f"--dim {binding.dim}={shape[axis]}" if binding.dim else f"--input-shape {name}=..."
                return (f"input '{name}' dim {axis}{dim} was bound to {binding.value} at compile time "
                        f"(from {binding.source}), got {shape[axis]}; recompile with {flag}")
        return None

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded inputs matching the signature: normal floats, small non-negative ints."""
        rng = np.random.default_rng(seed)
        feeds = {}
        pinned = {p.input: p.shape for p in self.shape_inputs}
        for spec in self.inputs:
            dtype = np.dtype(spec["dtype"])
            if spec["shape"] == [len(pinned.get(spec["name"], []))]:
                feeds[spec["name"]] = np.array(pinned[spec["name"]], dtype)
            elif dtype.kind == "f":
                feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(dtype)
            elif dtype.kind == "b":
                feeds[spec["name"]] = rng.integers(0, 2, spec["shape"]).astype(dtype)
            else:
                feeds[spec["name"]] = rng.integers(0, 10, spec["shape"]).astype(dtype)
        return feeds


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a manifest dtype name; float8 and bfloat16 come from ml_dtypes."""
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def partitions_of(manifest: Manifest) -> list[Partition]:
    """Each partition's library, device, tensors and weights; a single-library artifact
    without a partition list is one partition on its target's device."""
    if manifest.partitions:
        return manifest.partitions
    return [Partition(id=0, library=LIBRARY, runs_on=manifest.target.device,
                      inputs=[spec.name for spec in manifest.signature.inputs],
                      outputs=[spec.name for spec in manifest.signature.outputs],
                      weights=[w.name for w in manifest.weights])]


class Stage:
    """One partition loaded: its VM on its device, its weights there, its tensors' names."""

    def __init__(self, rt: Runtime, artifact: ArtifactFile, partition: Partition, weights: dict):
        self.rt = rt
        self.device = rt.device("cuda" if partition.runs_on == "cuda" else "cpu")
        self.inputs, self.outputs = partition.inputs, partition.outputs
        self.main = load_library(rt, artifact, partition.library, self.device)
        self.weights = [rt.copy_to(weights[name], self.device) for name in partition.weights]

    def run(self, tensors: dict) -> None:
        """Read this partition's inputs from ``tensors`` (copied to its device when elsewhere)
        and add its outputs."""
        result = self.main(*(self.rt.copy_to(tensors[name], self.device) for name in self.inputs), *self.weights)
        results = [result] if isinstance(result, self.rt.ffi.Tensor) else list(result)
        tensors.update(zip(self.outputs, results))


class CompiledModel(Signature):
    """A loaded artifact: ``inputs``/``outputs`` describe the signature."""

    def __init__(self, artifact: ArtifactFile):
        super().__init__(artifact)
        self.path = artifact.path
        check_machine(artifact)
        self._rt = rt = runtime()
        self._device = rt.device("cpu")
        self._weight_map, weights = map_weights(rt, artifact, self._device)
        named = dict(zip((w.name for w in artifact.typed.weights), weights))
        self._stages = [Stage(rt, artifact, p, named) for p in partitions_of(artifact.typed)]
        self._output_dtypes = [(spec["name"], numpy_dtype(spec["dtype"])) for spec in self.outputs]
        self._slots = [input_slot(rt, spec, self._device) for spec in self.inputs]
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. Inputs are checked by name, dtype and shape against the signature.
        Calls on one model run one at a time (TVM's VM and the input tensors are shared)."""
        rt = self._rt
        if len(inputs) != len(self._slots):
            self.checked_inputs(inputs)  # raises, naming the missing or unknown input
        with self._lock:
            tensors = {}
            for spec, (name, dtype, shape, tensor, view) in zip(self.inputs, self._slots):
                array = inputs.get(name)
                if type(array) is not np.ndarray or array.dtype != dtype or array.shape != shape:
                    array = self.check_input(spec, inputs)  # raises on a bad input, converts a good one
                if view is None:
                    tensors[name] = rt.tensor(np.require(array, requirements="C"), self._device)
                else:
                    np.copyto(view, array)
                    tensors[name] = tensor
            for pinned in self.shape_inputs:
                self.check_shape_input(pinned, inputs[pinned.input])
            for stage in self._stages:
                try:
                    stage.run(tensors)
                except RuntimeError as exc:  # TVM's argument checks: the manifest does not describe this library
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise ArtifactError(f"{self.path}: the compiled library refused the tensors its manifest "
                                        f"describes: {first}") from None
            outputs = {name: rt.numpy(tensors[name], dtype) for name, dtype in self._output_dtypes}
            return cut_to_valid_rows(self.outputs, outputs, lambda name: rt.numpy(tensors[name], np.dtype(np.int64)))


def cut_to_valid_rows(specs: list[dict], outputs: dict, count_of) -> dict:
    """Each output with ``valid_rows`` (rows only the data decides, compiled at their upper bound)
    cut to the rows its count output says are real, as onnxruntime returns them. A count of -1
    says the compiled NMS could not settle within its static bound: no result is better than a wrong one."""
    for spec in specs:
        if spec.get("valid_rows"):
            count = int(count_of(spec["valid_rows"])[0])
            if count < 0:
                raise ArtifactError(f"output '{spec['name']}': the compiled NonMaxSuppression could not decide its "
                                    "boxes within its static bound on this input; its rows would not be onnxruntime's")
            outputs[spec["name"]] = outputs[spec["name"]][:count]
    return outputs


def input_slot(rt: Runtime, spec: dict, device) -> tuple:
    """An input's tensor, allocated once, and a numpy view of it, so a run copies the caller's
    array in with numpy instead of allocating a tensor per call (most of the per-call cost of a
    small model). Dtypes numpy cannot view through DLPack (bfloat16, float8) get a tensor per run."""
    dtype, shape = numpy_dtype(spec["dtype"]), tuple(spec["shape"])
    if not (dtype.isbuiltin and dtype.kind in "biuf"):
        return spec["name"], dtype, shape, None, None
    tensor = rt.empty(shape, dtype, device)
    return spec["name"], dtype, shape, tensor, np.from_dlpack(tensor)


def check_machine(artifact: ArtifactFile) -> None:
    """Refuse, with the reason, an artifact this machine cannot run.

    On Linux the target's CPU features are checked too: code using a missing
    extension (AVX-512 on an AVX2 CPU, dotprod on a Cortex-A72) dies of SIGILL.
    A partition for a GPU needs one here.
    """
    here = platform.machine()
    check_arch(artifact.path, artifact.typed.target, here, "this machine", "; run it on the device")
    if sys.platform == "linux":
        check_features(artifact.path, artifact.typed.target, cpu_features(), "this machine")
    for partition in partitions_of(artifact.typed):
        if partition.runs_on == "cuda" and not Path("/dev/nvidiactl").exists():
            raise ArtifactError(f"{artifact.path}: partition #{partition.id} of target {artifact.typed.target.name} runs on "
                                "cuda, and this machine has no NVIDIA GPU (no /dev/nvidiactl)")


def normalize_machine(machine: str) -> str:
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine.lower(), machine)


def check_arch(path, target: Target, machine: str, where: str, hint: str = "") -> None:
    """Raise when ``machine`` (a ``platform.machine()`` name) is not the artifact's architecture."""
    if target.triple.split("-")[0] != normalize_machine(machine):
        raise ArtifactError(
            f"{path}: built for {target.triple} (target {target.name}), but {where} is {machine}{hint}"
        )


FEATURE_ALIASES = {
    "asimd": "neon", "asimddp": "dotprod", "asimdhp": "fullfp16", "fphp": "fullfp16", "asimdfhm": "fp16fml",
}
"""Linux HWCAP names -> the LLVM/Arm names users know them by, for error messages."""


def check_features(path, target: Target, available: set[str], where: str) -> None:
    """Raise when a CPU feature the target's code may use is not in ``available``."""
    missing = [f for f in target.features if f not in available]
    if missing:
        names = ", ".join(f"{f} ({FEATURE_ALIASES[f]})" if f in FEATURE_ALIASES else f for f in missing)
        plural = "s" if len(missing) > 1 else ""
        raise ArtifactError(f"{path}: {where} lacks CPU feature{plural} {names} required by target {target.name}")


def load_library(rt: Runtime, artifact: ArtifactFile, member: str, device):
    """The VM's ``main`` from a library member, dlopened, checked against the manifest, from a fresh private
    directory (mode 0700, the file 0600, a fixed name), then delete both."""
    data = artifact.read_member(member)
    workdir = tempfile.mkdtemp(prefix="edgec-rt-")
    path = os.path.join(workdir, "library.so")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            return rt.load_vm(path, device)
        except Exception as exc:
            raise ArtifactError(f"{artifact.path}: cannot load the compiled library {member}: {exc}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def map_weights(rt: Runtime, artifact: ArtifactFile, device) -> tuple[np.memmap | None, list]:
    """Each weight as a TVM tensor viewing a read-only memory map of the artifact: no copy.

    TVM's generated code assumes 64-byte-aligned tensors, which the artifact's layout
    guarantees (page-aligned map, 64-byte-aligned offsets). numpy refuses to export a
    read-only array through the legacy DLPack capsule, so the versioned one is used.
    """
    if artifact.offsets[WEIGHTS][1] == 0:
        return None, []
    blob = artifact.map_member(WEIGHTS)  # hashed once against the manifest
    tensors = []
    for entry in artifact.typed.weights:
        raw = blob[entry.offset : entry.offset + entry.nbytes]
        array = raw.view(np.dtype(entry.dtype)).reshape(entry.shape)
        if array.size == 0:
            tensors.append(rt.tensor(array, device))
            continue
        capsule = array.__dlpack__(max_version=(1, 0))
        tensors.append(rt.ffi.from_dlpack(capsule, require_alignment=64, require_contiguous=True))
    return blob, tensors


def open_model(artifact: ArtifactFile):
    """The opened artifact ready to run: in TVM's runtime here, or, for a microcontroller
    firmware (format version 3), on its emulated board (``edgec.deploy.emulator``)."""
    if artifact.typed.format_version == FIRMWARE_VERSION:
        from ..deploy.emulator import EmulatedModel

        return EmulatedModel(artifact)
    return CompiledModel(artifact)


def load(path: str | os.PathLike):
    """``path`` opened, checked and loaded; ``.run(inputs)`` runs it."""
    return open_model(open_artifact(path))
