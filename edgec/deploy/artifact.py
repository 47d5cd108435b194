"""The ``.edgec`` artifact: one uncompressed POSIX tar file.

Members, in this order:
- ``manifest.json``: format version, tool versions, the source model's sha256, the
  target, the exact pipeline, the input/output signature, the weight index and the
  sha256 and size of every other member;
- ``manifest.sha256``: the sha256 of ``manifest.json``, in hex (the manifest digest);
- ``model.so``: the compiled library (it takes the weights as arguments);
- ``weights.bin``: every weight, raw and little-endian, each at a 64-byte-aligned offset;
- ``manifest.sig`` (only in signed artifacts, ``edgec compile --sign``): the Ed25519
  signature of the 32-byte manifest digest (see :mod:`edgec.deploy.trust`).

A model split into several partitions (format version 2) has one library per
partition instead of ``model.so``: ``partition0.so``, ``partition1.so``... in the
order they run, each for its own device. The manifest's ``partitions`` list names
each one's library, device, input and output tensors and weights, and
``partition_plan`` records the plan with the tensors crossing between partitions.
A single-partition artifact stays at version 1, which readers of one ``model.so`` load.

A bare-metal microcontroller artifact (format version 3, the ``cortex-m*`` targets) has
no library: ``project.tar`` holds the C project (sources, weights as const arrays,
linker script, Makefile) and ``firmware.elf`` the project linked for the emulated
board; ``weights.bin`` keeps the weights for reports and checks.

Why tar: any language reads it (512-byte headers, data at 512-byte boundaries), and
members are stored uncompressed at known offsets, so the runtime maps
``weights.bin`` straight from the artifact file instead of copying it.

The bytes are reproducible: fixed member order, mtime 0, uid/gid 0, no user names,
sorted JSON keys, no timestamps in the manifest.

Reading trusts nothing (:func:`open_artifact`): before any member is used, every tar
header must be a regular file whose name matches :data:`MEMBER_NAME` (no separators,
no ``..``, nothing absolute), the members must be exactly those the manifest lists,
with the sizes it records, the manifest must match its digest and stay within
:data:`MAX_MANIFEST_BYTES` and :data:`MAX_DEPTH`, and the weight index must lie inside
``weights.bin``. A member's sha256 is checked when it is read or mapped. The digest
catches corruption; only a signature (:mod:`edgec.deploy.trust`) says who wrote the artifact.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import ArtifactError
from .manifest import Manifest, ManifestFieldError, TensorSpec

FORMAT = "edgec-artifact"
FORMAT_VERSION = 1
MULTI_PARTITION_VERSION = 2
FIRMWARE_VERSION = 3
VERSIONS = (FORMAT_VERSION, MULTI_PARTITION_VERSION, FIRMWARE_VERSION)
ALIGNMENT = 64
MANIFEST = "manifest.json"
LIBRARY = "model.so"
WEIGHTS = "weights.bin"
FIRMWARE = "firmware.elf"
PROJECT = "project.tar"
DIGEST = "manifest.sha256"
SIGNATURE = "manifest.sig"
MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\Z")
"""A member name: one plain file name (no ``/``, no ``\\``, not absolute), and never ``..``."""
MAX_MANIFEST_BYTES = 4 << 20
MAX_DEPTH = 32
"""How deep the manifest's JSON may nest; edgec's own manifests nest about 6 levels."""
MAX_MEMBERS = 1024
MAX_TENSOR_BYTES = 1 << 40
"""No input or output of an edge model is a terabyte: a larger one is a lying manifest."""


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


def valid_member_name(name: str) -> bool:
    return bool(MEMBER_NAME.match(name)) and ".." not in name


def manifest_bytes_of(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def write_artifact(path: Path, manifest: dict, library: bytes | dict[str, bytes],
                   weights: list[tuple[str, np.ndarray]]) -> dict:
    """Write the artifact atomically (a temp file in the same directory, then a rename)
    and return the complete manifest it holds. ``library`` is ``model.so``'s bytes, or
    member name -> bytes for one library per partition."""
    libraries = {LIBRARY: library} if isinstance(library, bytes) else dict(library)
    bad = [name for name in libraries if not valid_member_name(name) or name in (MANIFEST, DIGEST, SIGNATURE, WEIGHTS)]
    if bad:
        raise ValueError(f"invalid library member name(s): {', '.join(bad)}")
    blob, index = pack_weights(weights)
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["format_version"] = (FORMAT_VERSION if list(libraries) == [LIBRARY] else
                                  FIRMWARE_VERSION if FIRMWARE in libraries else MULTI_PARTITION_VERSION)
    manifest["weights"] = index
    members = {**libraries, WEIGHTS: blob}
    manifest["members"] = {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in members.items()}
    write_members(Path(path), manifest_bytes_of(manifest), members)
    return manifest


def write_members(path: Path, manifest_bytes: bytes, members: dict[str, bytes], signature: bytes | None = None) -> None:
    """Write the tar, atomically (:func:`atomic_write`): the manifest, its digest, the members,
    then the signature if any."""
    digest = (sha256_bytes(manifest_bytes) + "\n").encode()
    entries = [(MANIFEST, manifest_bytes), (DIGEST, digest), *members.items(),
               *([(SIGNATURE, signature)] if signature is not None else [])]
    with atomic_write(path) as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in entries:
            tar.addfile(tar_member(name, len(data)), io.BytesIO(data))


@contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """A file to write ``path`` through, so readers see the old file or the new one, never half
    of one: a temp file beside it (:func:`temporary_beside`), renamed over it (mode 0644) when
    the block ends, removed when the block raises."""
    handle = temporary_beside(Path(path))
    try:
        with handle:
            yield handle
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@contextmanager
def reading_section(path: Path, field: str):
    """Read a section its owner interprets (the report, the memory plan, the profile...): the
    typed manifest checks only that it is an object, and an artifact from elsewhere may hold
    anything in it, so a section without the keys and types its reader needs is refused,
    naming it, instead of surfacing as an internal error."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ArtifactError(f"{path}: member '{MANIFEST}': field '{field}' is missing or invalid "
                            f"({type(exc).__name__}: {exc})") from None


def temporary_beside(path: Path):
    """An open temp file beside ``path``, ``.NAME.PID-XXXX.tmp``, to be renamed over it; temp
    files that a killed edgec left for the same path are removed first."""
    remove_stale_temporaries(path)
    return tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                                       delete=False)


def remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.PID-*.tmp`` files beside ``path`` whose process is gone (a compile
    killed while writing); a live process's temp file is left alone."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[^/]*\.tmp\Z")
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return
    for candidate in candidates:
        found = pattern.match(candidate.name)
        if found and not process_alive(int(found.group(1))):
            candidate.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0  # someone else's process, or a name we did not write
    return True


@dataclass
class ArtifactFile:
    """An opened, structurally checked artifact: its manifest plus where each member's bytes lie."""

    path: Path
    manifest: dict
    """The manifest's JSON as stored (what ``edgec inspect --json`` prints)."""
    typed: Manifest
    """The same manifest parsed into typed fields: what readers use."""
    offsets: dict[str, tuple[int, int]]  # member -> (offset in file, size)
    manifest_digest: bytes = b""
    """The sha256 of ``manifest.json``: what a signature signs."""

    def read_member(self, name: str) -> bytes:
        """A member's bytes, checked against the size and sha256 in the manifest."""
        offset, size = self.offsets[name]
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        self._check(name, data)
        return data

    def map_member(self, name: str) -> np.memmap:
        """A read-only memory map of a member, hashed once (every page read) before it is returned."""
        offset, size = self.offsets[name]
        blob = np.memmap(self.path, dtype=np.uint8, mode="r", offset=offset, shape=(size,))
        self._check(name, blob)
        return blob

    def _check(self, name: str, data) -> None:
        expected = self.typed.members[name]
        if len(data) != expected.size:
            raise ArtifactError(f"{self.path}: member '{name}' is truncated ({len(data)} of {expected.size} bytes)")
        if hashlib.sha256(data).hexdigest() != expected.sha256:
            raise ArtifactError(f"{self.path}: member '{name}' is corrupt (sha256 mismatch with the manifest)")

    def libraries(self) -> list[str]:
        """The library members in the order they run: ``model.so``, or one per partition; none
        for a bare-metal firmware."""
        if self.typed.format_version == FIRMWARE_VERSION:
            return []
        return [p.library for p in self.typed.partitions] if self.typed.partitions else [LIBRARY]

    def verify_members(self) -> None:
        """Check each member against the sha256 recorded in the manifest."""
        for name in self.typed.members:
            self._check(name, self.map_member(name) if name == WEIGHTS else self.read_member(name))


def open_artifact(path: str | os.PathLike) -> ArtifactFile:
    """Read and check the tar headers, the manifest and its digest; nothing is written.

    Errors name the file and the member; every one is an ArtifactError (exit 1)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact")
    try:
        with tarfile.open(path, mode="r:") as tar:
            headers = read_headers(path, tar, path.stat().st_size)
            if MANIFEST not in headers:
                raise ArtifactError(f"{path}: not an edgec artifact (no edgec manifest)")
            if headers[MANIFEST].size > MAX_MANIFEST_BYTES:
                raise ArtifactError(f"{path}: member '{MANIFEST}' is {headers[MANIFEST].size} bytes, "
                                    f"over the limit of {MAX_MANIFEST_BYTES}")
            manifest_bytes = tar.extractfile(headers[MANIFEST]).read()
            digest = tar.extractfile(headers[DIGEST]).read(100) if DIGEST in headers else None
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{path}: not an edgec artifact ({exc})") from None
    manifest = parse_manifest(path, manifest_bytes)
    if manifest.get("format_version") not in VERSIONS:
        raise ArtifactError(
            f"{path}: artifact format version {manifest.get('format_version')} is not supported "
            f"(this edgec reads versions {', '.join(map(str, VERSIONS))}); recompile the model"
        )
    actual = hashlib.sha256(manifest_bytes)
    if digest is None:
        raise ArtifactError(f"{path}: member '{DIGEST}' is missing (written by an older edgec, "
                            "or tampered with); recompile the model")
    if digest.strip() != actual.hexdigest().encode():
        raise ArtifactError(f"{path}: member '{MANIFEST}' is corrupt (its sha256 does not match '{DIGEST}')")
    check_members(path, manifest, headers)
    typed = check_schema(path, manifest)
    offsets = {name: (info.offset_data, info.size) for name, info in headers.items()}
    return ArtifactFile(path, manifest, typed, offsets, actual.digest())


def read_headers(path: Path, tar: tarfile.TarFile, file_size: int) -> dict[str, tarfile.TarInfo]:
    """Every member header, refusing links, devices, sparse files, odd names, duplicates and
    members running past the end of the file, before any data is read."""
    headers: dict[str, tarfile.TarInfo] = {}
    while (info := tar.next()) is not None:
        name = info.name
        if not valid_member_name(name):
            raise ArtifactError(f"{path}: member {name!r} has an invalid name (a plain file name is required: "
                                "no path separators, no '..', not absolute)")
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise ArtifactError(f"{path}: member '{name}' is not a regular file (links and special files are refused)")
        if name in headers:
            raise ArtifactError(f"{path}: member '{name}' appears twice")
        if info.offset_data + info.size > file_size:
            raise ArtifactError(f"{path}: member '{name}' is truncated (the file ends before its {info.size} bytes)")
        headers[name] = info
        if len(headers) > MAX_MEMBERS:
            raise ArtifactError(f"{path}: more than {MAX_MEMBERS} members")
    return headers


def parse_manifest(path: Path, data: bytes) -> dict:
    """The manifest's JSON, its nesting measured before parsing (a deep one would exhaust the stack)."""
    depth = json_depth(data)
    if depth > MAX_DEPTH:
        raise ArtifactError(f"{path}: member '{MANIFEST}' nests {depth} levels deep, over the limit of {MAX_DEPTH}")
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ArtifactError(f"{path}: not an edgec artifact (member '{MANIFEST}' is not JSON: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an edgec artifact (no edgec manifest)")
    return manifest


STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text, outside strings: linear, no recursion."""
    stripped = np.frombuffer(STRING.sub(b'""', data), dtype=np.uint8)
    steps = (np.isin(stripped, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(stripped, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(steps).max(initial=0))


def check_members(path: Path, manifest: dict, headers: dict[str, tarfile.TarInfo]) -> None:
    """The tar holds exactly the members the manifest lists, at the sizes it records, with
    each library and the weights present, and every weight inside ``weights.bin``."""
    members = manifest.get("members")
    if not isinstance(members, dict):
        raise ArtifactError(f"{path}: member '{MANIFEST}' has no member list")
    for name, entry in members.items():
        if not (valid_member_name(name) and isinstance(entry, dict) and isinstance(entry.get("size"), int)
                and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise ArtifactError(f"{path}: manifest entry for member {name!r} is invalid")
        if name not in headers:
            raise ArtifactError(f"{path}: artifact is missing member(s) {name}")
        if headers[name].size != entry["size"]:
            raise ArtifactError(f"{path}: member '{name}' is {headers[name].size} bytes in the tar, "
                                f"the manifest says {entry['size']}")
    unlisted = sorted(set(headers) - set(members) - {MANIFEST, DIGEST, SIGNATURE})
    if unlisted:
        raise ArtifactError(f"{path}: member '{unlisted[0]}' is not listed in the manifest")
    partitions = manifest.get("partitions") or [{"library": LIBRARY}]
    if not isinstance(partitions, list) or not all(isinstance(p, dict) for p in partitions):
        raise ArtifactError(f"{path}: manifest 'partitions' is invalid")
    libraries = ([FIRMWARE, PROJECT] if manifest.get("format_version") == FIRMWARE_VERSION
                 else [p.get("library") for p in partitions])
    missing = [str(m) for m in (*libraries, WEIGHTS) if m not in members]
    if missing:
        raise ArtifactError(f"{path}: artifact is missing member(s) {', '.join(missing)}")
    check_weight_index(path, manifest.get("weights"), members[WEIGHTS]["size"])


def check_weight_index(path: Path, index, blob_size: int) -> None:
    """Each weight's dtype, shape, offset and size agree and lie inside ``weights.bin``."""
    if not isinstance(index, list):
        raise ArtifactError(f"{path}: manifest 'weights' is not a list")
    for entry in index:
        name = entry.get("name") if isinstance(entry, dict) else None
        try:
            shape, offset, nbytes = entry["shape"], entry["offset"], entry["nbytes"]
            dtype = plain_dtype(entry["dtype"])
            itemsize = dtype.itemsize if dtype is not None and isinstance(name, str) else -1
            ok = (isinstance(shape, list) and all(type(v) is int and v >= 0 for v in (offset, nbytes, *shape))
                  and nbytes == itemsize * int(np.prod(shape, dtype=object)) and offset + nbytes <= blob_size
                  and offset % ALIGNMENT == 0)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ArtifactError(f"{path}: manifest weight {name!r} does not fit member '{WEIGHTS}' "
                                "(bad dtype, shape, offset or size)")


def check_schema(path: Path, manifest: dict) -> Manifest:
    """The manifest parsed into its typed fields (:mod:`edgec.deploy.manifest` checks each
    field's type), then what types cannot say: the signature's dtypes are numeric and its
    sizes plausible, and the partitions' tensors connect: each input is a model input or an
    earlier partition's output, each weight is in the index, each model output is produced."""
    def need(ok: bool, field: str) -> None:
        if not ok:
            raise ArtifactError(f"{path}: member '{MANIFEST}': field '{field}' is missing or invalid")

    try:
        typed = Manifest.parse(manifest)
    except ManifestFieldError as exc:
        raise ArtifactError(f"{path}: member '{MANIFEST}': {exc}") from None
    for side in ("inputs", "outputs"):
        specs = getattr(typed.signature, side)
        need(all(is_tensor_spec(spec, side == "outputs") for spec in specs), f"signature.{side}")
    input_names = {spec.name for spec in typed.signature.inputs}
    need(all(pinned.input in input_names and min(pinned.data_shape + pinned.shape, default=0) >= 0
             for pinned in typed.target.shape_inputs), "target.shape_inputs")
    counts = {spec.name for spec in typed.signature.outputs if spec.count_of_rows}
    need(all(spec.valid_rows is None or spec.valid_rows in counts for spec in typed.signature.outputs),
         "signature.outputs")
    if not typed.partitions:
        return typed
    available = {spec.name for spec in typed.signature.inputs}
    weights = {entry.name for entry in typed.weights}
    for index, partition in enumerate(typed.partitions):
        need(set(partition.inputs) <= available and set(partition.weights) <= weights, f"partitions[{index}]")
        available |= set(partition.outputs)
    need({spec.name for spec in typed.signature.outputs} <= available, "signature.outputs")
    return typed


def is_tensor_spec(spec: TensorSpec, run_time_dims: bool = False) -> bool:
    """A numeric dtype and a shape of sizes; with ``run_time_dims`` (outputs), a dim may also be
    a name or null: its size is decided at run time (Unique, NonZero)."""
    dtype = plain_dtype(spec.dtype)
    if dtype is None:
        return False
    sizes = [d for d in spec.shape if not (run_time_dims and (d is None or isinstance(d, str)))]
    return all(type(d) is int and d >= 0 for d in sizes) and math.prod(sizes) * dtype.itemsize <= MAX_TENSOR_BYTES


def plain_dtype(name) -> np.dtype | None:
    """The numeric dtype ``name`` stands for (numpy's, or ml_dtypes' such as bfloat16);
    None for anything else, objects and records included."""
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError):
        import ml_dtypes

        dtype = np.dtype(getattr(ml_dtypes, name)) if isinstance(name, str) and hasattr(ml_dtypes, name) else None
    if dtype is None or not (dtype.kind in "biuf" or (dtype.kind == "V" and dtype.fields is None)):
        return None
    return dtype
