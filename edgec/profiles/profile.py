"""Edge profiles: the ONNX Edge working group's execution-mode contract, as TOML files.

A profile states what a deployment must meet (accuracy, memory, latency, power, data
locality) and what a model may use (ops, dtypes, quantization)::

    schema = 1
    extends = "mobile"            # a built-in name, or a .toml path relative to this file
    [memory]
    working_set = "64MiB"
    [latency]
    steady_state = "30fps"        # = 1/30 s

``load_profile`` resolves ``extends`` (child fields replace the parent's, lists
included) and then ``--set section.field=value`` overrides. Every error is a
:class:`UsageError` naming the file, the line and the field. The resolved profile
travels in the artifact's manifest (``to_dict``) and in an ONNX model's
``metadata_props`` (``to_metadata_props`` / ``from_metadata_props``), so viewers
such as Netron show it and a model carrying one can be compiled against it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as checked

from ..errors import UsageError
from ..units import format_duration, format_size_exact, parse_duration
from ..validation import STRICT, TEXTUAL, Names, Positive, Size, first_problem

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUILTIN_DIR = Path(__file__).parent / "builtin"
METADATA_PREFIX = "edge.profile."
METRICS = {"top1": "higher", "top5": "higher", "cosine": "higher", "mse": "lower", "mae": "lower"}
"""Accuracy metrics and which direction is better: ``min`` applies to "higher", ``max`` to "lower"."""
SCHEMES = ("per-channel", "per-tensor")
QUANTIZED_STORAGE = ("int8", "uint8", "int16", "uint16", "int4", "uint4")


def parse_duration_field(value) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


def check_ops(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Op names, checked against onnx's schemas where onnx is installed: a device that only
    runs and certifies artifacts has no onnx, and compiles check the names again."""
    try:
        import onnx.defs
    except ImportError:
        return check_unique(names, "op")
    for op in check_unique(names, "op") or ():
        domain, _, op_type = op.rpartition("::")
        if domain in ("", "ai.onnx", "ai.onnx.ml") and op_type != "*" and not onnx.defs.has(op_type, domain or ""):
            raise ValueError(f"unknown ONNX operator {op!r}")
    return names


def check_dtypes(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Dtype names, checked against the IR's where onnx is installed (see ``check_ops``)."""
    try:
        from ..ir.core import DTYPES
    except ImportError:
        return check_unique(names, "dtype")
    for name in check_unique(names, "dtype") or ():
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})")
    return names


def check_unique(names: tuple[str, ...] | None, what: str) -> tuple[str, ...] | None:
    duplicates = sorted({name for name in names or () if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{what} {', '.join(duplicates)} listed twice")
    return names


def check_schema(version: int | None) -> int | None:
    if version != SCHEMA_VERSION:
        raise ValueError(f"profile schema {version!r} is not supported (this edgec reads schema {SCHEMA_VERSION})")
    return version


Text = Annotated[str | None, TEXTUAL]
Duration = Annotated[float | None, BeforeValidator(parse_duration_field), PlainSerializer(format_duration), TEXTUAL]
NonNegative = Annotated[float | None, Field(ge=0)]
OpNames = Annotated[Names, AfterValidator(check_ops)]
DtypeNames = Annotated[Names, AfterValidator(check_dtypes)]


# Each section is a pydantic dataclass: the annotations are the whole check of one value (see
# edgec.validation); what relates two fields is check_conflicts' job.

@checked(frozen=True, config=STRICT)
class Header:
    """The top-level fields."""

    schema: Annotated[int | None, AfterValidator(check_schema)] = None
    name: Text = None
    description: Text = None
    extends: Text = None
    """A built-in profile's name, or a .toml path relative to this file."""


@checked(frozen=True, config=STRICT)
class Accuracy:
    dataset: Text = None
    metric: Annotated[Literal[tuple(METRICS)] | None, TEXTUAL] = None
    min: NonNegative = None
    max: NonNegative = None
    max_drop: NonNegative = None
    """Worst allowed degradation against the float model on the same data."""


@checked(frozen=True, config=STRICT)
class Memory:
    working_set: Size = None
    """Peak RAM in bytes: activation arena + weights + runtime."""
    activation_arena: Size = None
    weights: Size = None
    """Bytes of weights (the flash on a microcontroller)."""


@checked(frozen=True, config=STRICT)
class Latency:
    batch_size: Annotated[int | None, Positive] = None
    first_time: Duration = None
    """Seconds from loading to the first result."""
    steady_state: Duration = None
    """Seconds per inference once warm (median)."""
    per: Annotated[Literal["batch", "step"] | None, TEXTUAL] = None
    """What ``steady_state`` times: ``"batch"`` (one call, the default) or ``"step"`` (one step of a
    recurrent model: one call of its streaming form, whose state the caller keeps)."""


@checked(frozen=True, config=STRICT)
class Power:
    min_ips_per_watt: Annotated[float | None, Positive] = None
    """Steady-state inferences per second per watt."""


@checked(frozen=True, config=STRICT)
class DataLocality:
    on_device: bool | None = None
    """True: the model must run without any network."""
    network_qos: Text = None
    """The network service the model needs when it is not on-device (recorded, not measured)."""


@checked(frozen=True, config=STRICT)
class Ops:
    allowed: OpNames = None
    """ONNX op types (``Conv``, ``com.microsoft::Gelu``, ``ai.onnx.ml::*``); None allows any."""
    excluded: OpNames = None


@checked(frozen=True, config=STRICT)
class Dtypes:
    compute: DtypeNames = None
    """Types of activations (graph inputs and node outputs)."""
    storage: DtypeNames = None
    """Types of weights (initializers)."""


@checked(frozen=True, config=STRICT)
class Quantization:
    required: bool | None = None
    scheme: Annotated[Literal[SCHEMES] | None, TEXTUAL] = None
    symmetric: bool | None = None


SECTIONS: dict[str, type] = {
    "accuracy": Accuracy, "memory": Memory, "latency": Latency, "power": Power,
    "data_locality": DataLocality, "ops": Ops, "dtypes": Dtypes, "quantization": Quantization,
}


@dataclass(frozen=True)
class Profile:
    """A resolved profile: inheritance and overrides applied, every value checked."""

    name: str
    description: str = ""
    accuracy: Accuracy = field(default_factory=Accuracy)
    memory: Memory = field(default_factory=Memory)
    latency: Latency = field(default_factory=Latency)
    power: Power = field(default_factory=Power)
    data_locality: DataLocality = field(default_factory=DataLocality)
    ops: Ops = field(default_factory=Ops)
    dtypes: Dtypes = field(default_factory=Dtypes)
    quantization: Quantization = field(default_factory=Quantization)
    sources: tuple[str, ...] = ()
    """Where the values came from, base first: files, built-ins, ``--set``, metadata."""

    @property
    def batch_size(self) -> int:
        return self.latency.batch_size or 1

    def to_dict(self) -> dict:
        """The resolved profile in its TOML spelling (sizes and durations as unit strings).

        It is itself a valid profile: ``profile_from_dict(p.to_dict()) == p`` up to ``sources``.
        """
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "name": self.name}
        if self.description:
            out["description"] = self.description
        for section, cls in SECTIONS.items():
            values = adapter(cls).dump_python(getattr(self, section), mode="json", exclude_none=True)
            if values:
                out[section] = values
        return out

    def to_toml(self) -> str:
        """The resolved profile as a TOML file, for ``edgec profiles show``."""
        data = self.to_dict()
        lines = [f"{key} = {toml_value(value)}" for key, value in data.items() if not isinstance(value, dict)]
        for section, values in data.items():
            if isinstance(values, dict):
                lines += ["", f"[{section}]", *(f"{key} = {toml_value(value)}" for key, value in values.items())]
        return "\n".join(lines) + "\n"


def toml_value(value) -> str:
    # JSON's spelling of strings, numbers, booleans and lists of strings is valid TOML.
    return json.dumps(value, ensure_ascii=False)


@cache
def adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(item.name for item in dataclasses.fields(cls))


def is_textual(cls: type, name: str) -> bool:
    """Whether a field is spelled as a bare string (metadata_props keeps it unquoted)."""
    return TEXTUAL in cls.__pydantic_fields__[name].metadata


# -- reading one layer (a file, --set overrides, metadata_props) ---------------------------------

@dataclass(frozen=True)
class Setting:
    value: Any
    where: str
    """``file:line`` (or ``--set``, ``metadata_props ...``), for error messages."""
    written: Any
    """The value as written, which the section dataclass is built from (its checks parse units)."""


Layer = dict[str, Setting]
"""Checked values by dotted field name (``memory.working_set``); top-level keys undotted."""


def fail(where: str, name: str, message: str) -> UsageError:
    return UsageError(f"{where}: field '{name}': {message}")


def check_setting(name: str, value, where: str) -> Setting:
    """Check one dotted field's raw value into a Setting, or raise naming where and which field."""
    section, _, key = name.partition(".")
    if not key:
        cls, key = Header, section
        if key not in field_names(Header):
            raise fail(where, name, f"unknown field (known: {', '.join([*field_names(Header), *SECTIONS])})")
    elif section not in SECTIONS:
        raise fail(where, name, f"unknown section '{section}' (known: {', '.join(SECTIONS)})")
    else:
        cls = SECTIONS[section]
        if key not in field_names(cls):
            raise fail(where, name, f"unknown field (known in [{section}]: {', '.join(field_names(cls))})")
    try:
        return Setting(getattr(cls(**{key: value}), key), where, value)
    except ValidationError as exc:
        raise fail(where, name, first_problem(exc)[1]) from None


def line_of(text: str, section: str | None, key: str | None) -> int:
    """The line defining ``key`` in table ``section`` (or the table header, or 1): tomllib keeps no lines."""
    current, header = None, None
    for number, line in enumerate(text.splitlines(), start=1):
        table = re.match(r"\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]", line)
        if table:
            current = table.group(1)
            if current == section:
                header = number
            continue
        if key is None:
            continue
        if current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
        if current is None and section and re.match(rf"\s*{re.escape(section)}\s*\.\s*{re.escape(key)}\s*=", line):
            return number
        if current is None and section and re.match(rf"\s*{re.escape(section)}\s*=\s*\{{.*\b{re.escape(key)}\s*=", line):
            return number
    return header or 1


def read_file_layer(path: Path) -> Layer:
    """Check every field of one profile file (``extends`` not yet followed)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the profile: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    layer: Layer = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in SECTIONS:
            where = f"{path}:{line_of(text, key, None)}"
            raise fail(where, key, f"unknown section '{key}' (known: {', '.join(SECTIONS)})")
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise fail(f"{path}:{line_of(text, None, key)}", key, "expected a table ([section])")
            for inner, item in value.items():
                where = f"{path}:{line_of(text, key, inner)}"
                layer[f"{key}.{inner}"] = check_setting(f"{key}.{inner}", item, where)
        else:
            layer[key] = check_setting(key, value, f"{path}:{line_of(text, None, key)}")
    if "schema" not in layer:
        raise fail(f"{path}:1", "schema", f"missing; add 'schema = {SCHEMA_VERSION}' as the first line")
    return layer


def parse_override(text: str) -> tuple[str, Any]:
    """``memory.working_set=64MiB`` -> (field, value): a TOML value if it parses as one, else the raw text."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or "." not in name:
        raise UsageError(f"--set {text}: expected SECTION.FIELD=VALUE, e.g. memory.working_set=64MiB")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return name, value


def override_layer(overrides: Sequence[str]) -> Layer:
    layer: Layer = {}
    for text in overrides:
        name, value = parse_override(text)
        layer[name] = check_setting(name, value, f"--set {text}")
    return layer


# -- resolving extends, then building the Profile ------------------------------------------------

def builtin_profiles() -> dict[str, Path]:
    """Built-in profile files by name, device classes first, then the topology map's profiles."""
    order = ["mobile", "smart-device", "infra-edge", "mcu",
             "basic-2d-image", "advanced-2d-image", "basic-audio", "advanced-audio"]
    found = {path.stem: path for path in BUILTIN_DIR.glob("*.toml")}
    return {name: found[name] for name in [*order, *sorted(set(found) - set(order))] if name in found}


def find_profile(spec: str | Path, relative_to: Path | None = None) -> Path:
    """A built-in name or a ``.toml`` path (relative to the extending file's folder)."""
    text = str(spec)
    if not text.endswith(".toml"):
        builtins = builtin_profiles()
        if text not in builtins:
            raise UsageError(f"unknown profile '{text}' (built-in: {', '.join(builtins)}; or give a .toml file)")
        return builtins[text]
    path = Path(text)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if not path.is_file():
        raise UsageError(f"{path}: no such profile file")
    return path


def resolve_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[Layer, tuple[str, ...]]:
    """The merged layer of ``path`` and everything it extends, plus the files used, base first."""
    path = path.resolve()
    layer = read_file_layer(path)
    if "extends" not in layer:
        return layer, (str(path),)
    setting = layer["extends"]
    try:
        parent_path = find_profile(setting.value, path.parent).resolve()
    except UsageError as exc:
        raise fail(setting.where, "extends", str(exc)) from None
    if parent_path in (*chain, path):
        cycle = " -> ".join(p.name for p in (*chain, path, parent_path))
        raise fail(setting.where, "extends", f"cycle: {cycle}")
    parent, sources = resolve_file(parent_path, (*chain, path))
    merged = {k: v for k, v in parent.items() if k not in ("name", "description", "extends")}
    merged.update(layer)
    del merged["extends"]
    return merged, (*sources, str(path))


def load_profile(spec: str | Path, overrides: Sequence[str] = ()) -> Profile:
    """A built-in profile by name or a profile file, with ``--set`` overrides applied last."""
    path = find_profile(spec)
    layer, sources = resolve_file(path)
    layer.setdefault("name", Setting(path.stem, str(path), path.stem))
    if overrides:
        layer.update(override_layer(overrides))
        sources = (*sources, *(f"--set {text}" for text in overrides))
    profile = build_profile(layer, sources)
    logger.info("profile %s from %s", profile.name, " <- ".join(sources))
    return profile


def profile_from_dict(data: Mapping, where: str = "profile") -> Profile:
    """A Profile from its ``to_dict`` form (a manifest's copy, say); errors name ``where``."""
    layer: Layer = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            for inner, item in value.items():
                layer[f"{key}.{inner}"] = check_setting(f"{key}.{inner}", item, where)
        else:
            layer[key] = check_setting(key, value, where)
    if "name" not in layer:
        raise fail(where, "name", "missing")
    return build_profile(layer, (where,))


def build_profile(layer: Layer, sources: tuple[str, ...]) -> Profile:
    if "extends" in layer:
        raise fail(layer["extends"].where, "extends", "is followed only in profile files; give the resolved values")
    check_conflicts(layer)
    sections = {}
    for section, cls in SECTIONS.items():
        values = {key: layer[f"{section}.{key}"].written for key in field_names(cls) if f"{section}.{key}" in layer}
        sections[section] = cls(**values)
    name = layer["name"].value if "name" in layer else "unnamed"
    description = layer["description"].value if "description" in layer else ""
    return Profile(name=name, description=description, sources=sources, **sections)


def check_conflicts(layer: Layer) -> None:
    """Fields that are each fine but contradict one another; the error names both places."""

    def get(name):
        return layer[name].value if name in layer else None

    def conflict(name: str, other: str, message: str) -> UsageError:
        here, there = layer[name].where, layer[other].where if other in layer else ""
        same_file, _, line = there.rpartition(":")
        if same_file and same_file == here.rpartition(":")[0] and line.isdigit():
            there = f"line {line}"
        return fail(here, name, f"conflicts with {other}" + (f" ({there})" if there else "") + f": {message}")

    first, steady = get("latency.first_time"), get("latency.steady_state")
    if first is not None and steady is not None and first < steady:
        raise conflict("latency.first_time", "latency.steady_state",
                       f"first-time latency {format_duration(first)} is below steady-state latency "
                       f"{format_duration(steady)}; the first run includes loading")
    both = sorted(set(get("ops.allowed") or ()) & set(get("ops.excluded") or ()))
    if both:
        raise conflict("ops.excluded", "ops.allowed", f"{', '.join(both)} both allowed and excluded")
    arena, working_set = get("memory.activation_arena"), get("memory.working_set")
    if arena is not None and working_set is not None and arena > working_set:
        raise conflict("memory.activation_arena", "memory.working_set",
                       f"the arena ({format_size_exact(arena)}) is part of the working set ({format_size_exact(working_set)})")
    metric = get("accuracy.metric")
    for bound, direction in (("min", "higher"), ("max", "lower")):
        name = f"accuracy.{bound}"
        if name in layer and metric is None:
            raise fail(layer[name].where, name, "needs accuracy.metric")
        if name in layer and METRICS[metric] != direction:
            right = "max" if bound == "min" else "min"
            raise conflict(name, "accuracy.metric", f"{metric} is {METRICS[metric]}-is-better; use accuracy.{right}")
    if "accuracy.max_drop" in layer and metric is None:
        raise fail(layer["accuracy.max_drop"].where, "accuracy.max_drop", "needs accuracy.metric")
    if metric in ("top1", "top5", "cosine") and (get("accuracy.min") or 0) > 1:
        raise conflict("accuracy.min", "accuracy.metric", f"{metric} is at most 1, got {get('accuracy.min')}")
    if get("data_locality.on_device") and "data_locality.network_qos" in layer:
        raise conflict("data_locality.network_qos", "data_locality.on_device",
                       "an on-device model needs no network QoS")
    storage = get("dtypes.storage")
    if get("quantization.required") and storage is not None and not set(storage) & set(QUANTIZED_STORAGE):
        raise conflict("quantization.required", "dtypes.storage",
                       f"quantized weights need an integer storage type ({', '.join(QUANTIZED_STORAGE)})")


# -- metadata_props ------------------------------------------------------------------------------

def to_metadata_props(profile: Profile) -> dict[str, str]:
    """``edge.profile.*`` entries for an ONNX model's metadata_props: strings bare, the rest JSON."""
    props = {}
    for key, value in profile.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for inner, item in items:
            name = f"{key}.{inner}" if inner else key
            props[METADATA_PREFIX + name] = item if isinstance(item, str) else json.dumps(item)
    return props


def from_metadata_props(props: Mapping[str, str]) -> Profile | None:
    """The profile an ONNX model carries in its metadata_props, or None when it carries none."""
    entries = {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
    if not entries:
        return None
    layer: Layer = {}
    for name, text in entries.items():
        where = f"metadata_props '{METADATA_PREFIX}{name}'"
        section, _, key = name.partition(".")
        cls = SECTIONS.get(section) if key else Header
        if cls is not None and (key or section) in field_names(cls) and is_textual(cls, key or section):
            value = text
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise fail(where, name, f"expected a JSON value, got {text!r}") from None
        layer[name] = check_setting(name, value, where)
    if "schema" not in layer:
        raise fail(f"metadata_props '{METADATA_PREFIX}schema'", "schema", "missing")
    return build_profile(layer, ("metadata_props",))
