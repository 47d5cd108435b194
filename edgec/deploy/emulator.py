"""Bare-metal microcontroller artifacts (format version 3): run on an emulated board, export the C project.

The artifact's ``firmware.elf`` is the model linked with a harness that reads
``in<i>.bin`` and writes ``out<i>.bin`` through Arm semihosting;
``qemu-system-arm -M <board>`` runs it in a fresh private directory holding those
files. It checks instructions and numbers; qemu's timing says nothing about a real
microcontroller's, so nothing here measures time.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, UsageError
from ..runtime import Signature
from .artifact import FIRMWARE, FIRMWARE_VERSION, PROJECT, ArtifactFile

EMULATOR = "qemu-system-arm"
TIMEOUT = 600.0
"""Seconds one emulated inference may take before it counts as hung."""


def emulator_command(machine: str) -> list[str]:
    """qemu for ``machine`` with semihosting on and no consoles: the harness talks through semihosting."""
    qemu = shutil.which(EMULATOR)
    if qemu is None:
        raise ArtifactError(f"running a microcontroller artifact needs {EMULATOR}: "
                            "install the Debian package qemu-system-arm")
    return [qemu, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-kernel", FIRMWARE]


class EmulatedModel(Signature):
    """A firmware artifact loaded for the emulator: same ``run`` as ``runtime.CompiledModel``."""

    emulated = True

    def __init__(self, artifact: ArtifactFile):
        super().__init__(artifact)
        self.path = artifact.path
        self.machine = artifact.typed.target.board
        self._command = emulator_command(self.machine)
        self._firmware = artifact.read_member(FIRMWARE)  # checked against the manifest's sha256

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference under qemu; inputs are checked by name, dtype and shape first."""
        arrays = self.checked_inputs(inputs)
        with tempfile.TemporaryDirectory(prefix="edgec-qemu-") as workdir:
            directory = Path(workdir)
            (directory / FIRMWARE).write_bytes(self._firmware)
            for i, array in enumerate(arrays):
                (directory / f"in{i}.bin").write_bytes(array.tobytes())
            where = f"{self.path}: the firmware under {EMULATOR} -M {self.machine}"
            try:
                done = subprocess.run(self._command, cwd=directory, capture_output=True, text=True, timeout=TIMEOUT,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise ArtifactError(f"{where} did not finish in {TIMEOUT:.0f} s") from None
            if done.returncode != 0 or "edgec-harness: ok" not in done.stdout:
                said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
                raise ArtifactError(f"{where} failed (exit status {done.returncode}): {said[-1] if said else 'no output'}")
            outputs = {}
            for i, spec in enumerate(self.outputs):
                data = (directory / f"out{i}.bin").read_bytes()
                outputs[spec["name"]] = np.frombuffer(data, dtype=spec["dtype"]).reshape(spec["shape"]).copy()
            return outputs


def export_project(artifact: ArtifactFile, directory: Path) -> list[Path]:
    """Unpack the artifact's ``project.tar`` (checked against the manifest) into ``directory``:
    plain files under ``project/`` only, nothing outside ``directory``."""
    if artifact.typed.format_version != FIRMWARE_VERSION:
        raise UsageError(f"{artifact.path} is not microcontroller firmware (target "
                         f"{artifact.typed.target.name}); export-c takes a cortex-m* artifact")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory}: exists and is not an empty directory")
    written = []
    with tarfile.open(fileobj=io.BytesIO(artifact.read_member(PROJECT)), mode="r:") as tar:
        members = tar.getmembers()
        for info in members:
            parts = Path(info.name).parts
            if not info.isfile() or len(parts) < 2 or parts[0] != "project" or ".." in parts or info.name.startswith("/"):
                raise ArtifactError(f"{artifact.path}: member '{PROJECT}' holds {info.name!r}, "
                                    "not a plain file under project/")
        try:
            for info in members:
                path = directory.joinpath(*Path(info.name).parts[1:])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tar.extractfile(info).read())
                written.append(path)
        except OSError as exc:
            raise UsageError(f"{directory}: cannot write the project: {exc.strerror}") from None
    return written
