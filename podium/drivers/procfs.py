"""Small, dependency-free facts about processes, read from ``/proc``.

Kept apart from the supervision logic so they can be tested (and trusted) on
their own: a pid alone does not name a process for long, so the drivers pair
it with the kernel's start time (and the boot id) before they signal anything.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from pathlib import Path
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` the drivers use."""

    state: str
    ppid: int
    pgrp: int
    start_time: int
    """Field 22: clock ticks after boot.  With the boot id it names a process uniquely."""


def parse_stat(data: bytes) -> tuple[int, ProcStat]:
    """(pid, fields) from a ``/proc/<pid>/stat`` line; ValueError if it is not one."""
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    try:
        pid = int(data[: data.index(b" (")])
        rest = data[data.rindex(b")") + 2 :].split()
        return pid, ProcStat(rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[19]))
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a /proc stat line: {data[:80]!r}") from exc


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_stat(data)[1]


def start_time(pid: int) -> int | None:
    st = read_stat(pid)
    return None if st is None else st.start_time


def boottime_ticks(ns: int) -> int:
    """CLOCK_BOOTTIME nanoseconds in the unit of ``/proc/<pid>/stat`` field 22."""
    return ns * CLK_TCK // 1_000_000_000


def now_boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def read_boot_id() -> str:
    """The kernel's boot id: start times are only comparable within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_nofile_soft: int | None = None


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit, once.

    Every running task costs the agent one pidfd, so 1,000 tasks would not fit
    the usual soft limit of 1,024.  Returns the *original* soft limit, which
    the shim restores for each task (programs that assume a small limit, e.g.
    ones using select() or closing every possible fd, keep working).
    """
    global _nofile_soft
    if _nofile_soft is None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        _nofile_soft = soft
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < target:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return _nofile_soft


def parse_signal(name: str) -> signal.Signals:
    """``"SIGTERM"``, ``"term"`` or ``"15"`` to a signal; ValueError otherwise."""
    text = name.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}") from None


_INHERITABLE = [
    int(s)
    for s in signal.Signals
    if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ)
]
"""Signals whose SIG_IGN a child would inherit (Popen itself resets PIPE and XFSZ)."""


_ignored: tuple[float, list[int]] = (-1e9, [])
IGNORED_TTL = 1.0


def ignored_signals() -> list[int]:
    """Signals this process ignores, which a task it spawns would also ignore.

    An agent started under ``nohup`` ignores SIGHUP, one started with a shell's
    ``&`` ignores SIGINT and SIGQUIT; its tasks must not.  Cached for a second:
    asking costs more than the rest of a task's start.
    """
    global _ignored
    now = time.monotonic()
    if now - _ignored[0] > IGNORED_TTL:
        out = []
        for sig in _INHERITABLE:
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(sig) == signal.SIG_IGN:
                    out.append(sig)
        _ignored = (now, out)
    return list(_ignored[1])
