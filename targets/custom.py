"""Custom boards described in TOML and passed as ``--target board.toml``.

A board names a built-in target to start from (``base``) and overrides what differs,
or describes a core from scratch (``triple`` and ``cpu`` required)::

    name = "acme-cam"
    base = "arm64-a72"
    cpu = "cortex-a55"
    mattr = ["+neon", "+dotprod"]
    features = ["asimd", "asimddp"]
    cores = 2

Every error names the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from edgec.errors import UsageError

from .base import TargetSpec

FIELDS = {
    "name": str, "base": str, "description": str, "triple": str, "cpu": str,
    "mattr": list, "features": list, "cores": int, "vector_bits": int,
}
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
        if not isinstance(value, kind) or isinstance(value, bool):
            raise fail(key, f"expected {kind.__name__}, got {type(value).__name__}")
        if kind is list and not all(isinstance(item, str) for item in value):
            raise fail(key, "expected a list of strings")
    for key in ("cores", "vector_bits"):
        if key in data and data[key] <= 0:
            raise fail(key, f"must be positive, got {data[key]}")

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
    )
