"""Load and run an ``.edgec`` artifact. Needs only TVM's runtime and numpy.

    model = edgec.runtime.load("model.edgec")
    outputs = model.run({"input": array})

Weights are memory-mapped from the artifact file and handed to TVM without a
copy, so loading costs no more than the weights' size, and only for pages used. TVM's thread pool uses one thread on a 2-core machine unless
told otherwise, so ``TVM_NUM_THREADS`` is set to the physical core count before
TVM starts, unless the user already set it.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from .artifact import LIBRARY, WEIGHTS, ArtifactFile, open_artifact
from .errors import ArtifactError
from .host import physical_cores


def import_tvm_runtime():
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
    import tvm.runtime
    from tvm.runtime import vm

    return tvm, vm


class CompiledModel:
    """A loaded artifact: ``inputs``/``outputs`` describe the signature."""

    def __init__(self, artifact: ArtifactFile):
        self.path = artifact.path
        self.manifest = artifact.manifest
        self.inputs: list[dict] = artifact.manifest["signature"]["inputs"]
        self.outputs: list[dict] = artifact.manifest["signature"]["outputs"]
        check_machine(artifact)
        tvm, vm = import_tvm_runtime()
        self._tvm = tvm
        self._device = tvm.cpu()
        library = load_library(tvm, artifact)
        self._vm = vm.VirtualMachine(library, self._device)
        self._main = self._vm["main"]
        self._weight_map, self._weights = map_weights(tvm, artifact, self._device)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. Inputs are checked by name, dtype and shape against the signature."""
        args = [self._tvm.runtime.tensor(self.check_input(spec, inputs), self._device) for spec in self.inputs]
        unknown = sorted(set(inputs) - {spec["name"] for spec in self.inputs})
        if unknown:
            raise ArtifactError(f"unknown input(s) {', '.join(unknown)}; the model takes {self.input_names()}")
        result = self._main(*args, *self._weights)
        results = [result] if hasattr(result, "numpy") else list(result)
        return {spec["name"]: value.numpy() for spec, value in zip(self.outputs, results)}

    def input_names(self) -> str:
        return ", ".join(spec["name"] for spec in self.inputs)

    def check_input(self, spec: dict, inputs: dict[str, np.ndarray]) -> np.ndarray:
        name = spec["name"]
        if name not in inputs:
            raise ArtifactError(f"missing input '{name}'; the model takes {self.input_names()}")
        array = np.asarray(inputs[name])
        if str(array.dtype) != spec["dtype"]:
            raise ArtifactError(f"input '{name}' must be {spec['dtype']}, got {array.dtype}")
        if list(array.shape) != spec["shape"]:
            raise ArtifactError(f"input '{name}' must have shape {spec['shape']}, got {list(array.shape)}")
        return np.ascontiguousarray(array)

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded inputs matching the signature: normal floats, small non-negative ints."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            dtype = np.dtype(spec["dtype"])
            if dtype.kind == "f":
                feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(dtype)
            elif dtype.kind == "b":
                feeds[spec["name"]] = rng.integers(0, 2, spec["shape"]).astype(dtype)
            else:
                feeds[spec["name"]] = rng.integers(0, 10, spec["shape"]).astype(dtype)
        return feeds


def check_machine(artifact: ArtifactFile) -> None:
    """Refuse, with the reason, an artifact built for another CPU architecture."""
    triple = artifact.manifest["target"]["triple"]
    wanted = triple.split("-")[0]
    here = platform.machine()
    if wanted != {"arm64": "aarch64", "amd64": "x86_64"}.get(here, here):
        raise ArtifactError(
            f"{artifact.path}: built for {triple} (target {artifact.manifest['target']['name']}), "
            f"but this machine is {here}; run it on the device"
        )


def load_library(tvm, artifact: ArtifactFile):
    """dlopen the library member: written to a private temp file, loaded, then unlinked."""
    with tempfile.TemporaryDirectory(prefix="edgec-rt-") as workdir:
        path = Path(workdir) / LIBRARY
        path.write_bytes(artifact.read_member(LIBRARY))
        try:
            return tvm.runtime.load_module(str(path))
        except Exception as exc:
            raise ArtifactError(f"{artifact.path}: cannot load the compiled library: {exc}") from None


def map_weights(tvm, artifact: ArtifactFile, device) -> tuple[np.memmap | None, list]:
    """Each weight as a TVM tensor viewing a read-only memory map of the artifact: no copy.

    TVM's generated code assumes 64-byte-aligned tensors, which the artifact's layout
    guarantees (page-aligned map, 64-byte-aligned offsets). numpy refuses to export a
    read-only array through the legacy DLPack capsule, so the versioned one is used.
    """
    import tvm_ffi

    offset, size = artifact.offsets[WEIGHTS]
    if size == 0:
        return None, []
    blob = np.memmap(artifact.path, dtype=np.uint8, mode="r", offset=offset, shape=(size,))
    tensors = []
    for entry in artifact.manifest["weights"]:
        raw = blob[entry["offset"] : entry["offset"] + entry["nbytes"]]
        array = raw.view(np.dtype(entry["dtype"])).reshape(entry["shape"])
        if array.size == 0:
            tensors.append(tvm.runtime.tensor(array, device))
            continue
        capsule = array.__dlpack__(max_version=(1, 0))
        tensors.append(tvm_ffi.from_dlpack(capsule, require_alignment=64, require_contiguous=True))
    return blob, tensors


def load(path: str | os.PathLike) -> CompiledModel:
    return CompiledModel(open_artifact(path))
