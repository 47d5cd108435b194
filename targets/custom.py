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
from typing import Annotated, Literal

from pydantic import Field, ValidationError
from pydantic.dataclasses import dataclass as checked

from edgec.errors import UsageError
from edgec.host import HWCAP2_NAMES, HWCAP_NAMES
from edgec.validation import STRICT, Names, Positive, Size, first_problem

from .base import TargetSpec

DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int16", "int32", "int64", "bool")
X86_FLAG = re.compile(r"^[a-z0-9_]+$")
STARTING_POINT = {"aarch64-linux-gnu": "arm64-a72", "x86_64-linux-gnu": "x86-64"}
"""The built-in target a board without ``base`` starts from, by triple (toolchain, host machine)."""

Count = Annotated[int | None, Positive]


@checked(frozen=True, config=STRICT)
class Board:
    """A board file's fields, each checked on its own (edgec.validation); load_board relates them."""

    name: str | None = None
    base: str | None = None
    description: str | None = None
    triple: str | None = None
    cpu: str | None = None
    mattr: Names = None
    features: Names = None
    cores: Count = None
    vector_bits: Count = None
    vector_registers: Count = None
    memory: Annotated[Size, Positive] = None
    power_watts: Annotated[float | None, Positive] = None
    power_source: str | None = None
    dtypes: Annotated[tuple[Literal[DTYPES], ...] | None, Field(strict=False)] = None


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

    known = [item.name for item in dataclasses.fields(Board)]
    for key in data:
        if key not in known:
            raise fail(key, f"unknown field (known: {', '.join(known)})")
    try:
        board = Board(**data)
    except ValidationError as exc:
        raise fail(*first_problem(exc)) from None
    if board.power_watts is not None and not board.power_source:
        raise fail("power_watts", "needs 'power_source': where the figure comes from (datasheet, supply rating)")

    if board.base is not None:
        if board.base not in builtins:
            raise fail("base", f"unknown target '{board.base}' (known: {', '.join(builtins)})")
        spec = builtins[board.base]
        if board.triple is not None and board.triple != spec.triple:
            raise fail("triple", f"conflicts with base {spec.name} ({spec.triple})")
    else:
        for key in ("triple", "cpu"):
            if getattr(board, key) is None:
                raise UsageError(f"{path}: field '{key}' is required when there is no 'base'")
        if board.triple not in STARTING_POINT:
            raise fail("triple", f"unsupported triple (supported: {', '.join(STARTING_POINT)})")
        spec = builtins[STARTING_POINT[board.triple]]

    check_features(board.features or (), spec.triple, fail)
    tvm_target = dict(spec.tvm_target)
    if board.cpu is not None:
        tvm_target["mcpu"] = board.cpu
    if board.mattr is not None:
        tvm_target["mattr"] = list(board.mattr)
    cores = board.cores or spec.cores
    tvm_target["num-cores"] = cores

    def given(value, default):
        return default if value is None else value

    return dataclasses.replace(
        spec,
        name=given(board.name, path.stem),
        description=given(board.description, f"custom board from {path.name}"),
        tvm_target=tvm_target,
        cores=cores,
        features=given(board.features, spec.features),
        vector_bits=given(board.vector_bits, spec.vector_bits),
        vector_registers=given(board.vector_registers, spec.vector_registers),
        memory_bytes=given(board.memory, spec.memory_bytes),
        power_watts=given(board.power_watts, spec.power_watts),
        power_source=given(board.power_source, spec.power_source),
        dtypes=given(board.dtypes, spec.dtypes),
    )


def check_features(features: tuple[str, ...], triple: str, fail) -> None:
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
