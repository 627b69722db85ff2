"""Polling helpers: tests wait for conditions with short timeouts, never long sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path


async def until(check: Callable[[], object], timeout: float = 3.0, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def has_text(path: str, text: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return text in Path(path).read_text()
        except FileNotFoundError:
            return False

    return check


def pss_kib(pid: int) -> int:
    """Proportional set size: the process's share of the memory it maps."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Pss for {pid}")
