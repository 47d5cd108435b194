"""Sizes as people write them: ``64MiB``, ``512KiB``, ``1.5GB``, ``4096``."""

from __future__ import annotations

import re

SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes in ``text``; raises ValueError with the accepted units."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size {text} is negative")
        return text
    match = SIZE.match(text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        if text.strip().startswith("-"):
            raise ValueError(f"size {text!r} is negative")
        raise ValueError(f"bad size {text!r}: use a number with B, KiB, MiB, GiB, kB, MB or GB")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


def format_size(size: int) -> str:
    """The shortest exact spelling: ``67108864`` -> ``64MiB``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def human_size(size: float) -> str:
    """A rounded size for reports: ``1.5 MiB``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} B"
