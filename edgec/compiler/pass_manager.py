"""Passes, the pass registry, textual pipelines and the pass manager.

A pass follows onnx-ir: ``requires(model)``, then ``call(model)``, then
``ensures(model)``. It declares whether it rewrites the model in place, and the
manager checks that. Pipelines are MLIR-style text that round-trips::

    remove-identity,fold-constants{size-limit=64MiB},fold-batchnorm,eliminate-dead

Options are declared per pass as a dataclass; in text they are kebab-case and
only non-default values are printed, so ``str(Pipeline.parse(s)) == s`` for any
pipeline written that way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Iterator

from ..errors import CompileError, EdgecError, UsageError
from ..ir import Model, verify
from ..units import format_size, parse_size

logger = logging.getLogger(__name__)


@dataclass
class Diagnostic:
    """Something a pass wants the user to know, tied to a node where possible."""

    severity: str  # "error", "warning" or "note"
    message: str
    node: str | None = None

    def __str__(self) -> str:
        where = f"{self.node}: " if self.node else ""
        return f"{self.severity}: {where}{self.message}"


@dataclass
class PassResult:
    model: Model
    modified: bool
    stats: dict[str, int] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


class PassError(CompileError):
    """A pass failed; the message names it and the passes that ran before it."""


def size_option(default: int):
    """A dataclass field holding bytes, written in pipelines as ``64MiB``."""
    return field(default=default, metadata={"unit": "bytes"})


@dataclass
class NoOptions:
    pass


class Pass:
    """Base class. Subclasses set ``name`` (kebab-case) and implement ``call``."""

    name: ClassVar[str]
    in_place: ClassVar[bool] = True
    Options: ClassVar[type] = NoOptions

    def __init__(self, options=None):
        self.options = options if options is not None else self.Options()

    def requires(self, model: Model) -> None:
        """Raise to refuse a model this pass cannot handle."""

    def ensures(self, model: Model) -> None:
        """Raise when the pass broke its own promise."""

    def check_inputs(self, model: Model) -> None:
        """Raise UsageError when what the user gave this pass (files named in its options)
        does not fit ``model``; drivers call it before any pass runs."""

    def call(self, model: Model) -> PassResult:
        raise NotImplementedError

    def __call__(self, model: Model) -> PassResult:
        try:
            self.requires(model)
        except CompileError as exc:
            raise PassError(f"precondition of pass '{self.name}' failed: {exc}") from None
        result = self.call(model)
        if self.in_place and result.model is not model:
            raise PassError(f"pass '{self.name}' is declared in-place but returned a new model")
        if not self.in_place and result.model is model:
            raise PassError(f"pass '{self.name}' is declared functional but returned its input")
        try:
            self.ensures(result.model)
        except CompileError as exc:
            raise PassError(f"postcondition of pass '{self.name}' failed: {exc}") from None
        return result


PASS_REGISTRY: dict[str, type[Pass]] = {}
KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator adding a pass to the registry under its kebab-case name."""
    if not KEBAB.match(cls.name):
        raise ValueError(f"pass name {cls.name!r} is not kebab-case")
    if cls.name in PASS_REGISTRY:
        raise ValueError(f"pass {cls.name!r} is registered twice")
    PASS_REGISTRY[cls.name] = cls
    return cls


def registered_passes() -> dict[str, type[Pass]]:
    import edgec.passes  # noqa: F401  importing the package registers every built-in pass

    return PASS_REGISTRY


# -- textual pipelines -----------------------------------------------------------


@dataclass
class PassSpec:
    """One pipeline element: a pass name and its options."""

    name: str
    options: object

    def create(self) -> Pass:
        return registered_passes()[self.name](self.options)

    def __str__(self) -> str:
        cls = registered_passes()[self.name]
        defaults = cls.Options()
        parts = []
        for f in dataclasses.fields(self.options):
            value = getattr(self.options, f.name)
            if value != getattr(defaults, f.name):
                parts.append(f"{f.name.replace('_', '-')}={format_option(f, value)}")
        return self.name + ("{" + ",".join(parts) + "}" if parts else "")


def format_option(f: dataclasses.Field, value) -> str:
    if f.metadata.get("unit") == "bytes":
        return format_size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_option(pass_name: str, f: dataclasses.Field, text: str):
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(f.type, str)
    try:
        if f.metadata.get("unit") == "bytes":
            return parse_size(text)
        if kind is bool:
            if text not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return text in ("true", "1")
        return kind(text)
    except ValueError as exc:
        raise UsageError(f"pipeline: pass '{pass_name}' option '{f.name.replace('_', '-')}': {exc}") from None


PIPELINE_ITEM = re.compile(r"\s*([A-Za-z0-9_-]+)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


@dataclass
class Pipeline:
    passes: list[PassSpec]

    @classmethod
    def parse(cls, text: str) -> Pipeline:
        """Parse ``a,b{opt=1},c``; unknown passes and options are usage errors."""
        registry = registered_passes()
        specs, pos, text = [], 0, text.strip()
        while pos < len(text):
            match = PIPELINE_ITEM.match(text, pos)
            if not match or match.end() == pos:
                raise UsageError(f"pipeline: cannot parse {text[pos:]!r} (expected name or name{{key=value,...}})")
            name, option_text = match.group(1), match.group(2)
            if name not in registry:
                raise UsageError(f"pipeline: unknown pass '{name}' (known: {', '.join(sorted(registry))})")
            options_cls = registry[name].Options
            fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(options_cls)}
            values = {}
            for item in filter(None, (s.strip() for s in (option_text or "").split(","))):
                key, sep, raw = item.partition("=")
                if not sep or key.strip() not in fields:
                    known = ", ".join(fields) or "none"
                    raise UsageError(f"pipeline: pass '{name}' has no option '{key.strip()}' (options: {known})")
                f = fields[key.strip()]
                values[f.name] = parse_option(name, f, raw.strip())
            specs.append(PassSpec(name, options_cls(**values)))
            pos = match.end()
        return cls(specs)

    def __str__(self) -> str:
        return ",".join(str(spec) for spec in self.passes)

    def __iter__(self) -> Iterator[PassSpec]:
        return iter(self.passes)

    def files(self) -> list[str]:
        """The files the passes' options name (fields marked ``metadata={"file": True}``): compile inputs."""
        return [value for spec in self.passes for f in dataclasses.fields(spec.options)
                if f.metadata.get("file") and (value := getattr(spec.options, f.name))]

    def check_inputs(self, model: Model) -> None:
        for spec in self.passes:
            spec.create().check_inputs(model)


# -- instruments and the manager ---------------------------------------------------


class Instrument:
    """Hooks around each pass (MLIR's PassInstrumentation). All default to no-ops."""

    def before_pipeline(self, model: Model, pipeline: Pipeline) -> None: ...
    def before_pass(self, pass_: Pass, model: Model, index: int) -> None: ...
    def after_pass(self, pass_: Pass, result: PassResult, index: int, seconds: float) -> None: ...
    def after_failure(self, pass_: Pass, model: Model, error: Exception, index: int) -> None: ...
    def after_pipeline(self, model: Model) -> None: ...


class PassManager:
    """Runs a pipeline, verifying after each pass (on by default) and calling instruments."""

    def __init__(self, pipeline: Pipeline, instruments: Iterable[Instrument] = (), verify_each: bool = True):
        self.pipeline = pipeline
        self.instruments = list(instruments)
        self.verify_each = verify_each
        self.diagnostics: list[tuple[str, Diagnostic]] = []

    def run(self, model: Model) -> Model:
        if self.verify_each:
            verify(model)
        self.notify(lambda i: i.before_pipeline(model, self.pipeline))
        ran: list[str] = []
        for index, spec in enumerate(self.pipeline, start=1):
            pass_ = spec.create()
            self.notify(lambda i: i.before_pass(pass_, model, index))
            start = time.perf_counter()
            try:
                result = pass_(model)
                errors = [d for d in result.diagnostics if d.severity == "error"]
                if errors:
                    raise PassError("; ".join(str(d) for d in errors))
                if self.verify_each:
                    verify(result.model)
            except Exception as exc:  # any failure is reported with its pass and history
                self.notify(lambda i: i.after_failure(pass_, model, exc, index))
                history = ", ".join(ran) if ran else "(none)"
                detail = str(exc) if isinstance(exc, EdgecError) else f"{type(exc).__name__}: {exc}"
                lines = detail.strip().splitlines() or [type(exc).__name__]
                detail = lines[0] + (" ..." if len(lines) > 1 else "")  # one line; -v logs the rest
                where = f"{detail} in pass '{pass_.name}' after: {history}"
                if isinstance(exc, EdgecError) and not isinstance(exc, CompileError):
                    raise type(exc)(where) from exc  # a usage error or profile violation keeps its exit code
                raise PassError(where) from exc
            seconds = time.perf_counter() - start
            self.diagnostics.extend((pass_.name, d) for d in result.diagnostics)
            model = result.model
            self.notify(lambda i: i.after_pass(pass_, result, index, seconds))
            ran.append(pass_.name)
        self.notify(lambda i: i.after_pipeline(model))
        return model

    def notify(self, call: Callable[[Instrument], None]) -> None:
        for instrument in self.instruments:
            call(instrument)
