"""Build-system support: a compile cache that is safe under ``make -j``, and depfiles.

The cache key is a sha256 over every input's bytes (the model, its external data,
the custom target file...), the resolved target, the pipeline, the input shapes and
the edgec and TVM versions. Entries are published with an atomic rename, so a
reader never sees a half-written file; a per-key lock makes parallel compiles of
the same key wait for one another instead of compiling twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterator

from .. import __version__
from ..deploy.artifact import atomic_write, sha256_file


def cache_key(files: list[Path], settings: dict) -> str:
    """A stable hash of the input files' contents and every setting that shapes the output."""
    record = {
        "edgec": __version__,
        "tvm": metadata.version("apache-tvm"),
        "onnx": metadata.version("onnx"),  # the manifest records it, and its shape inference shapes the graph
        "files": [sha256_file(path) for path in files],
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def copy_atomically(source: Path, destination: Path) -> None:
    with atomic_write(destination) as handle, open(source, "rb") as data:
        shutil.copyfileobj(data, handle)


class CompileCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def entry(self, key: str) -> Path:
        return self.directory / f"{key}.edgec"

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the key's lock: one compile per key at a time, across processes."""
        with open(self.directory / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def fetch(self, key: str, output: Path) -> bool:
        """Copy a finished entry to ``output``; False when there is none."""
        entry = self.entry(key)
        if not entry.is_file():
            return False
        copy_atomically(entry, output)
        return True

    def store(self, key: str, artifact: Path) -> None:
        copy_atomically(artifact, self.entry(key))


def escape_make(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace(" ", "\\ ").replace("#", "\\#").replace("$", "$$")


def write_text_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it."""
    write_bytes_atomically(path, text.encode())


def write_bytes_atomically(path: Path, data: bytes) -> None:
    with atomic_write(Path(path)) as handle:
        handle.write(data)


def write_depfile(depfile: Path, output: Path, inputs: list[Path]) -> None:
    """A Make/Ninja depfile: the artifact depends on every file the compile read."""
    unique = list(dict.fromkeys(inputs))
    write_text_atomically(depfile, escape_make(output) + ": " + " \\\n  ".join(escape_make(p) for p in unique) + "\n")
