"""Give freed heap memory back to the operating system after large bursts.

A sync or report of a thousand allocations builds megabytes of short-lived
JSON and dicts; glibc keeps the freed pages in its arenas, so the agent's RSS
would stay at its peak.  ``malloc_trim(0)`` returns them (a millisecond or two),
and is skipped where the C library has no such call.  Used by the server and the
agent alike, so it sits outside both layers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _trim = _libc.malloc_trim
except (OSError, AttributeError):  # not glibc
    _trim = None

BURST = 200
"""Trim after a sync or report that carried at least this many allocations."""


def trim_after(count: int) -> None:
    if _trim is not None and count >= BURST:
        _trim(0)
