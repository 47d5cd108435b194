"""Custom boards described in TOML and passed as ``--target board.toml``.

A board names a built-in target to start from (``base``) and overrides what differs,
or describes a core from scratch (``triple`` and ``cpu`` required)::

    name = "acme-cam"
    base = "arm64-a72"
    cpu = "cortex-a55"
    mattr = ["+neon", "+dotprod"]
    features = ["asimd", "asimddp"]
    cores = 2
    memory = "2GiB"
    power_watts = 4.5
    power_source = "ACME-CAM datasheet, rev. 3: 4.5 W peak"

``features`` are the CPU features the code may use, by their ``/proc/cpuinfo``
names (arm64 HWCAP names, x86 flags); the runtime checks them on the device.
Every error names the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from edgec.errors import UsageError
from edgec.host import HWCAP2_NAMES, HWCAP_NAMES
from edgec.units import parse_size

from .base import TargetSpec

FIELDS = {
    "name": str, "base": str, "description": str, "triple": str, "cpu": str,
    "mattr": list, "features": list, "cores": int, "vector_bits": int, "vector_registers": int,
    "memory": str, "power_watts": float, "power_source": str, "dtypes": list,
}
DTYPES = {"float32", "float16", "bfloat16", "int8", "uint8", "int16", "int32", "int64", "bool"}
X86_FLAG = re.compile(r"^[a-z0-9_]+$")
STARTING_POINT = {"aarch64-linux-gnu": "arm64-a72", "x86_64-linux-gnu": "x86-64"}
"""The built-in target a board without ``base`` starts from, by triple (toolchain, host machine)."""


def line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return 1


def load_board(path: Path, builtins: dict[str, TargetSpec]) -> TargetSpec:
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None

    def fail(key: str, message: str) -> UsageError:
        return UsageError(f"{path}:{line_of(text, key)}: field '{key}': {message}")

    for key, value in data.items():
        if key not in FIELDS:
            raise fail(key, f"unknown field (known: {', '.join(FIELDS)})")
        kind = FIELDS[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = data[key] = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise fail(key, f"expected {kind.__name__}, got {type(value).__name__}")
        if kind is list and not all(isinstance(item, str) for item in value):
            raise fail(key, "expected a list of strings")
    for key in ("cores", "vector_bits", "vector_registers", "power_watts"):
        if key in data and data[key] <= 0:
            raise fail(key, f"must be positive, got {data[key]}")
    if "power_watts" in data and not data.get("power_source"):
        raise fail("power_watts", "needs 'power_source': where the figure comes from (datasheet, supply rating)")
    memory = None
    if "memory" in data:
        try:
            memory = parse_size(data["memory"])
        except ValueError as exc:
            raise fail("memory", str(exc)) from None
        if memory == 0:
            raise fail("memory", "must be positive")
    unknown_dtypes = [d for d in data.get("dtypes", []) if d not in DTYPES]
    if unknown_dtypes:
        raise fail("dtypes", f"unknown dtype {unknown_dtypes[0]!r} (known: {', '.join(sorted(DTYPES))})")

    if "base" in data:
        if data["base"] not in builtins:
            raise fail("base", f"unknown target '{data['base']}' (known: {', '.join(builtins)})")
        spec = builtins[data["base"]]
        if "triple" in data and data["triple"] != spec.triple:
            raise fail("triple", f"conflicts with base {spec.name} ({spec.triple})")
    else:
        for key in ("triple", "cpu"):
            if key not in data:
                raise UsageError(f"{path}: field '{key}' is required when there is no 'base'")
        if data["triple"] not in STARTING_POINT:
            raise fail("triple", f"unsupported triple (supported: {', '.join(STARTING_POINT)})")
        spec = builtins[STARTING_POINT[data["triple"]]]

    check_features(data.get("features", []), spec.triple, fail)
    tvm_target = dict(spec.tvm_target)
    if "cpu" in data:
        tvm_target["mcpu"] = data["cpu"]
    if "mattr" in data:
        tvm_target["mattr"] = data["mattr"]
    cores = data.get("cores", spec.cores)
    tvm_target["num-cores"] = cores
    return dataclasses.replace(
        spec,
        name=data.get("name", path.stem),
        description=data.get("description", f"custom board from {path.name}"),
        tvm_target=tvm_target,
        cores=cores,
        features=tuple(data.get("features", spec.features)),
        vector_bits=data.get("vector_bits", spec.vector_bits),
        vector_registers=data.get("vector_registers", spec.vector_registers),
        memory_bytes=memory if memory is not None else spec.memory_bytes,
        power_watts=data.get("power_watts", spec.power_watts),
        power_source=data.get("power_source", spec.power_source),
        dtypes=tuple(data.get("dtypes", spec.dtypes)),
    )


def check_features(features: list[str], triple: str, fail) -> None:
    """Refuse a feature name the runtime could never find on a device, so a typo is not a load-time refusal."""
    if triple.startswith("aarch64"):
        known = HWCAP_NAMES + HWCAP2_NAMES
        unknown = [f for f in features if f not in known]
        hint = "an arm64 HWCAP name as /proc/cpuinfo shows it, e.g. asimd, asimddp"
    else:
        unknown = [f for f in features if not X86_FLAG.match(f)]
        hint = "an x86 flag as /proc/cpuinfo shows it, e.g. avx2, avx512f"
    if unknown:
        raise fail("features", f"unknown feature {unknown[0]!r} (use {hint})")
