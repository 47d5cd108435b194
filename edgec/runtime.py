"""Load and run an ``.edgec`` artifact. Needs only TVM's runtime and numpy.

    model = edgec.runtime.load("model.edgec")
    outputs = model.run({"input": array})

Weights are memory-mapped from the artifact file and handed to TVM without a
copy, so loading costs no more than the weights' size, and only for pages used. TVM's thread pool uses one thread on a 2-core machine unless
told otherwise, so ``TVM_NUM_THREADS`` is set to the physical core count before
TVM starts, unless the user already set it.

A partitioned artifact (one library per partition) runs its partitions in order,
each in its own VM on its device; a tensor crossing to a partition on another
device is copied there, once per run. The CPU test double's partitions run on the
host CPU, like CPU ones, so their crossings are not copied.
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
            raise ArtifactError(self.bound_dim_message(name, list(array.shape))
                                or f"input '{name}' must have shape {spec['shape']}, got {list(array.shape)}")
        return np.require(array, requirements="C")  # ascontiguousarray would make a 0-d input 1-d

    def bound_dim_message(self, name: str, shape: list[int]) -> str | None:
        """Why a feed of ``shape`` is refused when it differs in a dim the compile bound; None otherwise."""
        for binding in self.manifest.get("dim_bindings", []):
            axis = binding["axis"]
            if binding["input"] == name and axis < len(shape) and shape[axis] != binding["value"]:
                dim = f" ('{binding['dim']}')" if binding["dim"] else ""
                flag = f"--dim {binding['dim']}={shape[axis]}" if binding["dim"] else f"--input-shape {name}=..."
                return (f"input '{name}' dim {axis}{dim} was bound to {binding['value']} at compile time "
                        f"(from {binding['source']}), got {shape[axis]}; recompile with {flag}")
        return None

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


def partitions_of(manifest: dict) -> list[dict]:
    """Each partition's library, device, tensors and weights; a single-library artifact
    without a partition list is one partition on its target's device."""
    if manifest.get("partitions"):
        return manifest["partitions"]
    return [{"id": 0, "library": LIBRARY, "runs_on": manifest["target"].get("device", "cpu"),
             "inputs": [spec["name"] for spec in manifest["signature"]["inputs"]],
             "outputs": [spec["name"] for spec in manifest["signature"]["outputs"]],
             "weights": [w["name"] for w in manifest["weights"]]}]


class Stage:
    """One partition loaded: its VM on its device, its weights there, its tensors' names."""

    def __init__(self, tvm, vm, artifact: ArtifactFile, partition: dict, weights: dict):
        self.device = tvm.cuda(0) if partition["runs_on"] == "cuda" else tvm.cpu()
        self.inputs, self.outputs = partition["inputs"], partition["outputs"]
        self.main = vm.VirtualMachine(load_library(tvm, artifact, partition["library"]), self.device)["main"]
        self.weights = [on_device(weights[name], self.device) for name in partition["weights"]]

    def run(self, tensors: dict) -> None:
        """Read this partition's inputs from ``tensors`` (copied to its device when elsewhere)
        and add its outputs."""
        result = self.main(*(on_device(tensors[name], self.device) for name in self.inputs), *self.weights)
        results = [result] if hasattr(result, "numpy") else list(result)
        tensors.update(zip(self.outputs, results))


def on_device(tensor, device):
    """``tensor`` on ``device``: itself when it is there already, else a copy."""
    return tensor if tensor.device == device else tensor.copyto(device)


class CompiledModel(Signature):
    """A loaded artifact: ``inputs``/``outputs`` describe the signature."""

    def __init__(self, artifact: ArtifactFile):
        super().__init__(artifact.manifest)
        self.path = artifact.path
        check_machine(artifact)
        tvm, vm = import_tvm_runtime()
        self._tvm = tvm
        self._device = tvm.cpu()
        self._weight_map, weights = map_weights(tvm, artifact, self._device)
        named = dict(zip((w["name"] for w in artifact.manifest["weights"]), weights))
        self._stages = [Stage(tvm, vm, artifact, p, named) for p in partitions_of(artifact.manifest)]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. Inputs are checked by name, dtype and shape against the signature."""
        tensors = {spec["name"]: self._tvm.runtime.tensor(array, self._device)
                   for spec, array in zip(self.inputs, self.checked_inputs(inputs))}
        for stage in self._stages:
            stage.run(tensors)
        return {spec["name"]: tensors[spec["name"]].numpy() for spec in self.outputs}


def check_machine(artifact: ArtifactFile) -> None:
    """Refuse, with the reason, an artifact this machine cannot run.

    On Linux the target's CPU features are checked too: code using a missing
    extension (AVX-512 on an AVX2 CPU, dotprod on a Cortex-A72) dies of SIGILL.
    A partition for a GPU needs one here.
    """
    here = platform.machine()
    check_arch(artifact.path, artifact.manifest, here, "this machine", "; run it on the device")
    if sys.platform == "linux":
        check_features(artifact.path, artifact.manifest, cpu_features(), "this machine")
    target = artifact.manifest["target"]
    for partition in partitions_of(artifact.manifest):
        if partition["runs_on"] == "cuda" and not Path("/dev/nvidiactl").exists():
            raise ArtifactError(f"{artifact.path}: partition #{partition['id']} of target {target['name']} runs on "
                                "cuda, and this machine has no NVIDIA GPU (no /dev/nvidiactl)")


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


def load_library(tvm, artifact: ArtifactFile, member: str = LIBRARY):
    """dlopen a library member: written to a private temp file, loaded, then unlinked."""
    with tempfile.TemporaryDirectory(prefix="edgec-rt-") as workdir:
        path = Path(workdir) / member
        path.write_bytes(artifact.read_member(member))
        try:
            return tvm.runtime.load_module(str(path))
        except Exception as exc:
            raise ArtifactError(f"{artifact.path}: cannot load the compiled library {member}: {exc}") from None


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
