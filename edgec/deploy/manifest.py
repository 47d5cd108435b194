"""The artifact manifest as dataclasses: the fields readers use, typed, parsed once.

``Manifest.parse`` checks every field's type against these declarations (the one place that
does) and names the first bad field; readers then use attributes instead of string keys.
The sections other modules own (the report, the memory plan, the profile, the compliance
record, the quantization record, the partition plan) stay JSON objects here: their owners
read them (``PartitionPlan.from_dict``, ``profile_from_dict``).

Fields later formats added are optional with the defaults older edgecs implied (no dim
bindings, device ``cpu``, no features), so every manifest the runtime accepted still loads.
Keys the dataclasses do not declare are left out of the typed view and stay in the raw
dict. ``manifest.schema.json`` beside this module is :func:`json_schema`'s output,
published for readers in other languages; a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

JSONObject = dict[str, Any]
"""A section whose owner parses it: any JSON object."""


@dataclass(frozen=True)
class Member:
    sha256: str
    size: int


@dataclass(frozen=True)
class Weight:
    """One weight in ``weights.bin``: raw little-endian bytes at a 64-byte-aligned offset."""

    name: str
    dtype: str
    shape: list[int]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output; an output dim may be a name or null (sized at run time)."""

    name: str
    dtype: str
    shape: list[int | str | None]
    valid_rows: str | None = None
    """The output holding how many of this output's rows are valid (NonMaxSuppression's,
    compiled at their upper bound); the runtimes return only those."""
    count_of_rows: bool = False
    """This output is such a count: the library returns it, the runtimes do not."""


@dataclass(frozen=True)
class IOSignature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass(frozen=True)
class ShapeInput:
    """An input whose value is a shape, compiled as ``shape`` (``onnx_rewrites.pin_run_time_shapes``);
    the runtimes refuse a value that, broadcast with ``data_shape``, gives another."""

    input: str
    node: str
    op: str
    data_shape: list[int]
    shape: list[int]


@dataclass(frozen=True)
class Target:
    """The target an artifact was built for (``TargetSpec.manifest`` plus what lowering adds)."""

    name: str
    triple: str
    family: str | None = None
    device: str = "cpu"
    features: list[str] = field(default_factory=list)
    cores: int | None = None
    memory_bytes: int | None = None
    power_watts: float | None = None
    power_source: str | None = None
    tvm_target: JSONObject | None = None
    board: str | None = None
    """The qemu-system-arm machine of a firmware artifact."""
    model_symbol: str | None = None
    mcu_memory: JSONObject | None = None
    integer_kernels: JSONObject | None = None
    tuned_kernels: list[str] | None = None
    shape_inputs: list[ShapeInput] = field(default_factory=list)


@dataclass(frozen=True)
class Partition:
    """One library of a partitioned artifact (format 2), in the order they run."""

    id: int
    library: str
    runs_on: str
    inputs: list[str]
    outputs: list[str]
    weights: list[str]
    device: str | None = None
    nodes: int | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    memory_plan: JSONObject | None = None
    runtime_memory: JSONObject | None = None
    lowering: JSONObject | None = None


@dataclass(frozen=True)
class Source:
    file: str
    sha256: str


@dataclass(frozen=True)
class DimBindingRecord:
    """A symbolic input dim that was given a size (``importer.DimBinding.to_dict``)."""

    input: str
    axis: int
    dim: str | None
    value: int
    source: str


@dataclass(frozen=True)
class Manifest:
    format: str
    format_version: int
    members: dict[str, Member]
    weights: list[Weight]
    target: Target
    signature: IOSignature
    edgec_version: str | None = None
    tvm_version: str | None = None
    onnx_version: str | None = None
    source: Source | None = None
    pipeline: str | None = None
    dim_bindings: list[DimBindingRecord] = field(default_factory=list)
    partitions: list[Partition] | None = None
    partition_plan: JSONObject | None = None
    report: JSONObject | None = None
    memory_plan: JSONObject | None = None
    runtime_memory: JSONObject | None = None
    profile: JSONObject | None = None
    compliance: JSONObject | None = None
    quantization: JSONObject | None = None
    recurrent_steps: int | None = None
    """Time steps one call runs (1: a streaming model), for a per-step latency check."""

    @classmethod
    def parse(cls, data: JSONObject) -> Manifest:
        """The typed manifest; ``ManifestFieldError`` names the first field of the wrong type."""
        return parse_value(cls, data, "")


class ManifestFieldError(ValueError):
    """A manifest field is missing or has the wrong type; ``field`` is its dotted path."""

    def __init__(self, field: str):
        super().__init__(f"field '{field}' is missing or invalid")
        self.field = field


def parse_value(kind, value, where: str):
    """``value`` checked against the type ``kind``, dataclasses built; raises ManifestFieldError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ManifestFieldError(where or "manifest")
        hints = type_hints(kind)
        values = {}
        for item in dataclasses.fields(kind):
            path = f"{where}.{item.name}" if where else item.name
            if item.name in value:
                values[item.name] = parse_value(hints[item.name], value[item.name], path)
            elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise ManifestFieldError(path)
        return kind(**values)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return parse_value(option, value, where)
            except ManifestFieldError:
                continue
        raise ManifestFieldError(where)
    if origin is list:
        if not isinstance(value, list):
            raise ManifestFieldError(where)
        return [parse_value(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestFieldError(where)
        return {key: parse_value(args[1], item, f"{where}.{key}") for key, item in value.items()}
    if kind is Any:
        return value
    if kind is type(None):
        ok = value is None
    elif kind is float:
        ok = type(value) in (int, float)
    else:
        ok = type(value) is kind  # bool is not an int here
    if not ok:
        raise ManifestFieldError(where)
    return value


@cache
def type_hints(kind) -> dict:
    """A dataclass's resolved field types, once per class (a manifest has a few hundred weights)."""
    return typing.get_type_hints(kind)


JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def json_schema() -> JSONObject:
    """The JSON Schema (draft 2020-12) of the manifest, derived from the dataclasses above."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://edgec.dev/schemas/manifest.schema.json",
            "title": "edgec artifact manifest (manifest.json)", **schema_of(Manifest)}


def schema_of(kind) -> JSONObject:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        fields = dataclasses.fields(kind)
        return {"type": "object",
                "properties": {f.name: schema_of(hints[f.name]) for f in fields},
                "required": [f.name for f in fields
                             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]}
    if origin in (typing.Union, types.UnionType):
        options = [schema_of(option) for option in args]
        if all(set(option) == {"type"} and isinstance(option["type"], str) for option in options):
            return {"type": [option["type"] for option in options]}
        return {"anyOf": options}
    if origin is list:
        return {"type": "array", "items": schema_of(args[0])}
    if origin is dict:
        return {"type": "object"} if args[1] is Any else {"type": "object", "additionalProperties": schema_of(args[1])}
    return {"type": JSON_TYPES[kind]}
