"""Durations as people write them (``500ms``, ``10s``, ``2m``, ``1h30m``).

Stored as float seconds, serialised back to the shortest readable string so a
job read back from the API looks like the file it came from.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Parse ``"1h30m"``, ``"500ms"`` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string such as '10s' or '500ms'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration must be a finite number of seconds")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as '10s' or '500ms'")
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    pos = 0
    total = 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(
            f"{value!r} is not a duration; write a number with a unit: 500ms, 10s, 2m, 1h30m"
        )
    if not math.isfinite(total):
        raise ValueError(f"{value!r} is too long a duration")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact string for ``seconds`` (``90.0`` → ``"1m30s"``)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}us"
    whole = int(seconds)
    frac = seconds - whole
    if frac > 1e-9:
        return f"{seconds:g}s"
    out = ""
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    if h:
        out += f"{h}h"
    if m:
        out += f"{m}m"
    if s:
        out += f"{s}s"
    return out


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["500ms", "10s", "2m"]}),
]
"""A duration field: accepts ``"10s"`` (or seconds as a number), holds seconds."""
