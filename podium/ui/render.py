"""Jinja2 rendering for the UI: one environment, autoescaped, with the few filters the
templates share (ages, sizes, short ids).  Templates are read once from the package and
compiled once; a render is then a plain function call (the jobs page with 1,000 jobs
renders in tens of milliseconds: bench/ui_page.py)."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from podium.ui import TEMPLATES


def short(ident: str | None, n: int = 8) -> str:
    """An id as people read it (the API takes any unique prefix)."""
    return (ident or "")[:n]


def age(ts: float | None, now: float | None = None) -> str:
    """``12s``, ``5m``, ``3h``, ``2d``: how long ago ``ts`` was ("" for none)."""
    if not ts:
        return ""
    delta = max(0.0, (now if now is not None else time.time()) - ts)
    if delta < 60:
        return f"{int(delta)}s"
    if delta < 3600:
        return f"{int(delta // 60)}m"
    if delta < 86400:
        return f"{int(delta // 3600)}h"
    return f"{int(delta // 86400)}d"


def clock(ts: float | None) -> str:
    """A UTC time of day with the date, for events and versions."""
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def mib(mb: int | float) -> str:
    """Megabytes as people read them (MB below 1 GB)."""
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{int(mb)} MB"


def percent(part: float, whole: float) -> int:
    """``part`` of ``whole`` in whole percent, 0..100 (0 for an empty whole)."""
    if whole <= 0:
        return 0
    return max(0, min(100, round(100 * part / whole)))


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(short=short, age=age, clock=clock, mib=mib)
    env.globals.update(percent=percent)
    return env


def render(name: str, **context: Any) -> str:
    """Template ``name`` (relative to podium/ui/templates) rendered with ``context``."""
    return environment().get_template(name).render(**context)
