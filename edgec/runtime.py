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
import sys
import tempfile
from pathlib import Path

import numpy as np

from .artifact import LIBRARY, WEIGHTS, ArtifactFile, open_artifact
from .errors import ArtifactError
from .host import cpu_features, physical_cores


def import_tvm_runtime():
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
    import tvm.runtime
    from tvm.runtime import vm

    return tvm, vm


class Signature:
    """The input/output signature of an artifact and the checks on feeds.

    Shared by local (:class:`CompiledModel`) and remote (``edgec.remote.RemoteModel``)
    runs so both refuse the same bad inputs with the same messages.
    """

    def __init__(self, manifest: dict):
        self.manifest = manifest
        self.inputs: list[dict] = manifest["signature"]["inputs"]
        self.outputs: list[dict] = manifest["signature"]["outputs"]

    def input_names(self) -> str:
        return ", ".join(spec["name"] for spec in self.inputs)

    def checked_inputs(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The inputs in signature order, checked by name, dtype and shape."""
        arrays = [self.check_input(spec, inputs) for spec in self.inputs]
        unknown = sorted(set(inputs) - {spec["name"] for spec in self.inputs})
        if unknown:
            raise ArtifactError(f"unknown input(s) {', '.join(unknown)}; the model takes {self.input_names()}")
        return arrays

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


class CompiledModel(Signature):
    """A loaded artifact: ``inputs``/``outputs`` describe the signature."""

    def __init__(self, artifact: ArtifactFile):
        super().__init__(artifact.manifest)
        self.path = artifact.path
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
        args = [self._tvm.runtime.tensor(array, self._device) for array in self.checked_inputs(inputs)]
        result = self._main(*args, *self._weights)
        results = [result] if hasattr(result, "numpy") else list(result)
        return {spec["name"]: value.numpy() for spec, value in zip(self.outputs, results)}


def check_machine(artifact: ArtifactFile) -> None:
    """Refuse, with the reason, an artifact this machine's CPU cannot run.

    On Linux the target's CPU features are checked too: code using a missing
    extension (AVX-512 on an AVX2 CPU, dotprod on a Cortex-A72) dies of SIGILL.
    """
    target = artifact.manifest["target"]
    if target.get("device", "cpu") != "cpu":
        raise ArtifactError(
            f"{artifact.path}: built for target {target['name']}, whose code runs on {target['device']}; "
            "this runtime runs CPU artifacts (GPU execution is not implemented yet)"
        )
    here = platform.machine()
    check_arch(artifact.path, artifact.manifest, here, "this machine", "; run it on the device")
    if sys.platform == "linux":
        check_features(artifact.path, artifact.manifest, cpu_features(), "this machine")


def normalize_machine(machine: str) -> str:
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine.lower(), machine)


def check_arch(path, manifest: dict, machine: str, where: str, hint: str = "") -> None:
    """Raise when ``machine`` (a ``platform.machine()`` name) is not the artifact's architecture."""
    triple = manifest["target"]["triple"]
    if triple.split("-")[0] != normalize_machine(machine):
        raise ArtifactError(
            f"{path}: built for {triple} (target {manifest['target']['name']}), but {where} is {machine}{hint}"
        )


FEATURE_ALIASES = {
    "asimd": "neon", "asimddp": "dotprod", "asimdhp": "fullfp16", "fphp": "fullfp16", "asimdfhm": "fp16fml",
}
"""Linux HWCAP names -> the LLVM/Arm names users know them by, for error messages."""


def check_features(path, manifest: dict, available: set[str], where: str) -> None:
    """Raise when a CPU feature the target's code may use is not in ``available``."""
    target = manifest["target"]
    missing = [f for f in target.get("features", []) if f not in available]
    if missing:
        names = ", ".join(f"{f} ({FEATURE_ALIASES[f]})" if f in FEATURE_ALIASES else f for f in missing)
        plural = "s" if len(missing) > 1 else ""
        raise ArtifactError(f"{path}: {where} lacks CPU feature{plural} {names} required by target {target['name']}")


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
