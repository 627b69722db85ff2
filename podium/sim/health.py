"""What a simulation says about the run itself, beside its throughput: the machine it ran
on, how late each event loop ran, and whether the cluster stayed whole.

Why (issue 18): a full-size run on a busy server once declared 1,808 healthy simulated
nodes down at once, replaced their allocations, and still printed ``invariants_ok: true``
with more placements than its target.  With no failure injected, a node declared down, an
allocation lost or a placement beyond the target is the control plane failing, so
:func:`stability_problems` makes each a broken invariant.  And a figure from another machine
of the same kind is only comparable with the machine's speed beside it: :func:`machine`
names the CPU and measures a fixed pure-Python loop in the same run (:func:`calibrate`).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from podium.metrics.process import LagTimer

LAG_INTERVAL = 0.1
"""Seconds between two lag samples (ten timer callbacks a second: nothing)."""


def calibrate(rounds: int = 3) -> float:
    """Milliseconds for a fixed pure-Python loop (median of ``rounds``): this machine's
    speed now, printed beside every figure so runs on other machines can be compared."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i % 7
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 1)


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (``platform.processor()`` where /proc is absent)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(calibration: bool = True) -> dict[str, Any]:
    """``cpu_model``, ``cpus`` (usable by this process), ``python``, ``load`` (1-minute
    average at the call) and ``calibration_ms`` (:func:`calibrate`, unless told not to)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 0
    out: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpus": cpus,
        "python": platform.python_version(),
        "load": round(os.getloadavg()[0], 2),
    }
    if calibration:
        out["calibration_ms"] = calibrate()
    return out


class LagSampler(LagTimer):
    """How late the running event loop runs a timer that is due every ``interval``
    seconds, every sample kept (a run's worth is small) so the p99 is exact."""

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        super().__init__(interval)
        self.samples: list[float] = []

    def observe(self, seconds: float) -> None:
        self.samples.append(seconds)

    def reset(self) -> None:
        """Forget the samples so far (set-up is not what the run measures)."""
        self.samples.clear()

    def p99_ms(self) -> float | None:
        return percentile_ms(self.samples, 0.99)


def percentile_ms(seconds: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``seconds`` (nearest rank), in milliseconds; None when empty."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    k = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return round(ordered[k] * 1000.0, 1)


def heartbeat_figures(seconds: list[float]) -> dict[str, Any]:
    """Heartbeats' times to their answers, as the agents saw them (retries included):
    ``count``, ``p50_ms``, ``p99_ms``, ``max_ms``."""
    return {
        "count": len(seconds),
        "p50_ms": percentile_ms(seconds, 0.5),
        "p99_ms": percentile_ms(seconds, 0.99),
        "max_ms": round(max(seconds) * 1000.0, 1) if seconds else None,
    }


def worst_heartbeats(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' :func:`heartbeat_figures` as one: the counts added, the worst
    process' quantiles (as for the loops' lag); a count of 0 where none was sent in the
    timed span (a run shorter than TTL/2)."""
    some = [f for f in figures if f.get("count")]
    if not some:
        return heartbeat_figures([])
    worst = max(some, key=lambda f: f["p99_ms"] or 0.0)
    return {**worst, "count": sum(f["count"] for f in some)}


def stability_problems(
    *, nodes_down: int, allocs_lost: int, placements_total: int, target: int, fail_rate: float
) -> list[str]:
    """With no failure injected, nothing may go down, be lost or be placed twice."""
    if fail_rate > 0:
        return []
    problems = []
    if nodes_down:
        problems.append(
            f"{nodes_down:,} nodes declared down with no failure injected (heartbeats starved)"
        )
    if allocs_lost:
        problems.append(f"{allocs_lost:,} allocations lost with no failure injected")
    if placements_total > target:
        problems.append(
            f"{placements_total:,} placements for a target of {target:,}: "
            f"{placements_total - target:,} replacements with no failure injected"
        )
    return problems
