"""The ``.edgec`` artifact: one uncompressed POSIX tar file.

Members, in this order:
- ``manifest.json``: format version, tool versions, the source model's sha256, the
  target, the exact pipeline, the input/output signature, the weight index and the
  sha256 and size of every other member;
- ``model.so``: the compiled library (it takes the weights as arguments);
- ``weights.bin``: every weight, raw and little-endian, each at a 64-byte-aligned offset.

A model split into several partitions (format version 2) has one library per
partition instead of ``model.so``: ``partition0.so``, ``partition1.so``... in the
order they run, each for its own device. The manifest's ``partitions`` list names
each one's library, device, input and output tensors and weights, and
``partition_plan`` records the plan with the tensors crossing between partitions.
A single-partition artifact stays at version 1, which readers of one ``model.so`` load.

Why tar: any language reads it (512-byte headers, data at 512-byte boundaries), and
members are stored uncompressed at known offsets, so the runtime maps
``weights.bin`` straight from the artifact file instead of copying it.

The bytes are reproducible: fixed member order, mtime 0, uid/gid 0, no user names,
sorted JSON keys, no timestamps in the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ArtifactError

FORMAT = "edgec-artifact"
FORMAT_VERSION = 1
MULTI_PARTITION_VERSION = 2
VERSIONS = (FORMAT_VERSION, MULTI_PARTITION_VERSION)
ALIGNMENT = 64
MANIFEST = "manifest.json"
LIBRARY = "model.so"
WEIGHTS = "weights.bin"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack_weights(weights: list[tuple[str, np.ndarray]]) -> tuple[bytes, list[dict]]:
    """Concatenate weights at aligned offsets; return the blob and its index."""
    blob = bytearray()
    index = []
    for name, array in weights:
        array = np.require(array, requirements="C")  # ascontiguousarray would make a 0-d weight 1-d
        blob.extend(b"\0" * (-len(blob) % ALIGNMENT))
        index.append(
            {"name": name, "dtype": str(array.dtype), "shape": list(array.shape), "offset": len(blob), "nbytes": array.nbytes}
        )
        blob.extend(array.tobytes())  # edgec targets are little-endian, like the hosts
    return bytes(blob), index


def tar_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_artifact(path: Path, manifest: dict, library: bytes | dict[str, bytes],
                   weights: list[tuple[str, np.ndarray]]) -> dict:
    """Write the artifact atomically (a temp file in the same directory, then a rename)
    and return the complete manifest it holds. ``library`` is ``model.so``'s bytes, or
    member name -> bytes for one library per partition."""
    libraries = {LIBRARY: library} if isinstance(library, bytes) else dict(library)
    blob, index = pack_weights(weights)
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["format_version"] = FORMAT_VERSION if list(libraries) == [LIBRARY] else MULTI_PARTITION_VERSION
    manifest["weights"] = index
    members = {**libraries, WEIGHTS: blob}
    manifest["members"] = {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in members.items()}
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()

    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in ((MANIFEST, manifest_bytes), *members.items()):
                tar.addfile(tar_member(name, len(data)), io.BytesIO(data))
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return manifest


@dataclass
class ArtifactFile:
    """An opened artifact: its manifest plus where each member's bytes lie."""

    path: Path
    manifest: dict
    offsets: dict[str, tuple[int, int]]  # member -> (offset in file, size)

    def read_member(self, name: str) -> bytes:
        offset, size = self.offsets[name]
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def libraries(self) -> list[str]:
        """The library members in the order they run: ``model.so``, or one per partition."""
        return [p["library"] for p in self.manifest.get("partitions") or [{"library": LIBRARY}]]

    def verify_members(self) -> None:
        """Check each member against the sha256 recorded in the manifest."""
        for name, expected in self.manifest["members"].items():
            if sha256_bytes(self.read_member(name)) != expected["sha256"]:
                raise ArtifactError(f"{self.path}: member '{name}' is corrupt (sha256 mismatch)")


def open_artifact(path: str | os.PathLike) -> ArtifactFile:
    """Read the manifest and member offsets; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact")
    try:
        with tarfile.open(path, mode="r:") as tar:
            offsets = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
            member = tar.extractfile(MANIFEST) if MANIFEST in offsets else None
            manifest = json.loads(member.read()) if member else None
    except (tarfile.TarError, json.JSONDecodeError, OSError) as exc:
        raise ArtifactError(f"{path}: not an edgec artifact ({exc})") from None
    if not manifest or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an edgec artifact (no edgec manifest)")
    if manifest.get("format_version") not in VERSIONS:
        raise ArtifactError(
            f"{path}: artifact format version {manifest.get('format_version')} is not supported "
            f"(this edgec reads versions {', '.join(map(str, VERSIONS))}); recompile the model"
        )
    libraries = [p["library"] for p in manifest.get("partitions") or [{"library": LIBRARY}]]
    missing = [m for m in (*libraries, WEIGHTS) if m not in offsets]
    if missing:
        raise ArtifactError(f"{path}: artifact is missing member(s) {', '.join(missing)}")
    return ArtifactFile(path, manifest, offsets)
