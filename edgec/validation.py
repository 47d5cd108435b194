"""The one validator for the TOML files users write: profiles and board files.

Both are checked by pydantic (strict, unknown fields refused) rather than msgspec: pydantic
checks plain dataclasses, so ``Profile`` and its sections stay dataclasses with the
constraints written in their annotations; its strict mode refuses what TOML users get
wrong ("4" for 4, true for a size); and every error carries the field it is about, which
the readers turn into ``file:line: field 'name': message``. msgspec decodes faster, but
these files are a few lines long and read once. Only profile and board readers import
this module: loading and running an artifact never does.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError

from .units import format_size_exact, parse_size

STRICT = ConfigDict(strict=True, extra="forbid")
"""For ``pydantic.dataclasses.dataclass(config=STRICT)``: no coercion ("1" is not 1), no unknown fields."""

TEXTUAL = "textual"
"""Annotation marker: the field is spelled as a bare string (metadata_props stores it unquoted)."""


def parse_size_field(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'expected a size such as "64MiB", got {type(value).__name__} {value!r}')
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"size {value!r} is negative")
    return parse_size(value)


Size = Annotated[int | None, BeforeValidator(parse_size_field), PlainSerializer(format_size_exact), TEXTUAL]
"""Bytes, written as ``"64MiB"`` (or a plain integer), spelled back exactly."""

Names = Annotated[tuple[str, ...] | None, Field(strict=False)]
"""A TOML list of strings (lax only so that a list becomes a tuple; items stay strict strings)."""

Positive = Field(gt=0)


def first_problem(error: ValidationError) -> tuple[str, str]:
    """The field and the message of a validation error's first problem, in edgec's wording."""
    problem = error.errors()[0]
    field, *inner = problem["loc"] or ("",)
    if problem["type"] in ("value_error", "assertion_error"):
        message = str(problem["ctx"]["error"])
    else:
        message = problem["msg"][0].lower() + problem["msg"][1:]
        if problem["type"] not in ("unexpected_keyword_argument", "missing_argument"):
            message += f", got {describe(problem['input'])}"
    if inner:
        message = f"item {inner[0]}: {message}"
    return str(field), message


def describe(value: Any) -> str:
    return "a boolean" if isinstance(value, bool) else f"{type(value).__name__} {value!r}"
