"""What every target family declares, and the registry ``--target`` looks names up in."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

from edgec.errors import UsageError
from edgec.host import cpu_features, physical_cores


@dataclass(frozen=True)
class TargetSpec:
    """A named compilation target.

    ``tvm_target`` is the JSON form TVM 0.27 takes (CLI strings are refused).
    ``host_machine`` is the ``platform.machine()`` that can run the result directly;
    anything else needs a lab device (RPC) or an emulator.
    """

    name: str
    family: str
    description: str
    triple: str
    tvm_target: dict
    host_machine: str
    cores: int
    features: tuple[str, ...] = ()
    vector_bits: int = 128
    vector_registers: int = 32
    memory_bytes: int | None = None
    device: str = "cpu"
    """Where the compiled code runs: ``cpu``, or ``cuda`` for an NVIDIA GPU beside the host CPU."""
    power_watts: float | None = None
    power_source: str = ""
    """A declared power figure and where it comes from (datasheet, supply rating)."""
    cross_compiler: str | None = None
    cross_package: str | None = None
    """The Debian package that provides ``cross_compiler``, named in the error when it is missing."""
    dtypes: tuple[str, ...] = ("float32", "int8", "int32", "int64", "bool")
    notes: str = ""

    def runs_here(self) -> str | None:
        """None if this machine can run the target's code, else why not."""
        if self.family == "cortex-m":
            from .cortex_m import EMULATOR

            return None if shutil.which(EMULATOR) else f"target {self.name} runs under {EMULATOR}, not installed"
        if platform.machine() != self.host_machine:
            return f"target {self.name} runs on {self.host_machine}, this machine is {platform.machine()}"
        if self.device == "cuda" and not Path("/dev/nvidiactl").exists():
            return f"target {self.name} needs an NVIDIA GPU, and this machine has none"
        missing = [f for f in self.features if f not in cpu_features()]
        if missing:
            return f"target {self.name} needs CPU features this machine lacks: {', '.join(missing)}"
        return None

    @property
    def int8_weight_bits(self) -> int:
        """Weight bits the target's int8 kernels want: 7 where its int8 dot product is exact
        only for 7-bit weights (AVX2's uint8 x int8 pair sums saturate int16), else 8."""
        from .int8_schedules import dot_product_for

        dot = dot_product_for(self)
        return 7 if dot is not None and dot.weight_limit is not None else 8

    def manifest(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "triple": self.triple,
            "tvm_target": self.tvm_target,
            "device": self.device,
            "cores": self.cores,
            "features": list(self.features),
            "memory_bytes": self.memory_bytes,
            "power_watts": self.power_watts,
            "power_source": self.power_source,
        }

    def describe(self) -> dict:
        """Everything ``edgec targets --json`` shows."""
        return {
            **self.manifest(),
            "description": self.description,
            "vector_bits": self.vector_bits,
            "vector_registers": self.vector_registers,
            "power": {"watts": self.power_watts, "source": self.power_source},
            "dtypes": list(self.dtypes),
            "cross_compiler": self.cross_compiler,
            "runs_here": self.runs_here() is None,
            "why_not_here": self.runs_here(),
        }


FAMILIES: dict[str, Callable[[], list[TargetSpec]]] = {}


def register_family(name: str) -> Callable:
    def add(factory: Callable[[], list[TargetSpec]]):
        FAMILIES[name] = factory
        return factory

    return add


def all_targets() -> dict[str, TargetSpec]:
    # Each family module registers itself on import; the host's family is listed first.
    from . import x86, arm64, cuda, cortex_m  # noqa: F401, I001

    targets: dict[str, TargetSpec] = {}
    for factory in FAMILIES.values():
        for spec in factory():
            targets[spec.name] = spec
    return targets


def get_target(name: str) -> TargetSpec:
    """A built-in target by name, or a custom board from a ``.toml`` file."""
    targets = all_targets()
    if name.endswith(".toml"):
        from .custom import load_board

        path = Path(name)
        if not path.is_file():
            raise UsageError(f"--target {name}: no such file")
        return load_board(path, targets)
    if name not in targets:
        raise UsageError(f"--target {name}: unknown target (known: {', '.join(targets)}; see 'edgec targets')")
    return targets[name]
