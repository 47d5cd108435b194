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


def format_size_exact(size: int) -> str:
    """Like ``format_size``, but also tries decimal units and keeps the shorter: ``2GB``, not ``1953125KiB``."""
    spellings = [format_size(size)]
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size and size % factor == 0:
            spellings.append(f"{size // factor}{unit}")
            break
    return min(spellings, key=len)


def human_size(size: float) -> str:
    """A rounded size for reports: ``1.5 MiB``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} B"


DURATION_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([A-Za-zµ]+)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``33ms``, ``1.5s``, ``20us``, or a rate ``30fps`` (1/30 s per frame).

    A bare number is refused: latencies are written in ms as often as in s.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"bad duration {text!r}: write it as a string with s, ms, us, ns or fps, e.g. \"33ms\"")
    if text.strip().startswith("-"):
        raise ValueError(f"duration {text!r} is negative")
    match = DURATION.match(text)
    unit = match.group(2).lower() if match else ""
    if unit == "fps":
        rate = float(match.group(1))
        if rate <= 0:
            raise ValueError(f"rate {text!r} must be positive")
        return 1.0 / rate
    if unit not in DURATION_UNITS:
        raise ValueError(f"bad duration {text!r}: use a number with s, ms, us, ns or fps")
    return float(match.group(1)) * DURATION_UNITS[unit]


def format_duration(seconds: float) -> str:
    """A spelling ``parse_duration`` reads back exactly: ``0.033`` -> ``33ms``, ``1/30`` -> ``30fps``, else seconds in full."""
    for unit, factor in (("s", 1), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        scaled = seconds * factor
        if scaled == round(scaled) and parse_duration(f"{round(scaled)}{unit}") == seconds:
            return f"{round(scaled)}{unit}"
    rate = round(1 / seconds) if seconds > 0 else 0
    if rate and parse_duration(f"{rate}fps") == seconds:
        return f"{rate}fps"
    return f"{seconds!r}s"


def human_duration(seconds: float) -> str:
    """A rounded duration for reports: ``1.23 ms``."""
    for unit, factor in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= factor:
            return f"{seconds / factor:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
