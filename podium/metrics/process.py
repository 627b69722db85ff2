"""Process metrics: memory, fds, CPU (prometheus_client's process collector, named
``podium_process_*``) and event-loop lag.

Event-loop lag is how late a timer fires: a timer due every ``interval`` seconds records
how long after its due time the loop ran it.  Everything a server or agent does runs on
one loop, so the lag is the delay every request, heartbeat and report meets behind work
that holds the loop.  The timer is a plain ``call_later`` chain (no task: nothing to
cancel or await at shutdown); a server starts it with itself, an agent at its first scrape.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.process_collector import ProcessCollector

LAG_INTERVAL = 0.5
"""Seconds between the lag timer's firings (two timer callbacks a second: nothing)."""
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def add_process_metrics(registry: CollectorRegistry) -> None:
    """``podium_process_resident_memory_bytes``, ``podium_process_open_fds``,
    ``podium_process_cpu_seconds_total`` and the rest of prometheus_client's process
    collector (read from /proc at scrape time; nothing on Linux-less systems)."""
    ProcessCollector(namespace="podium", registry=registry)


class LagTimer:
    """A timer due every ``interval`` seconds on the running loop that hands how late it
    ran to :meth:`observe` (subclasses keep it as they need)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def observe(self, seconds: float) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Start sampling on the running loop (again after :meth:`stop`; no-op while on)."""
        loop = asyncio.get_running_loop()
        if self._handle is not None and self._loop is loop and not loop.is_closed():
            return
        self._loop = loop
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self.observe(max(0.0, self._loop.time() - self._due))
        self._schedule()


class LoopLag(LagTimer):
    """Measures the running event loop's lag into a histogram of ``registry``."""

    def __init__(self, registry: CollectorRegistry, interval: float = LAG_INTERVAL) -> None:
        super().__init__(interval)
        self.histogram = Histogram(
            "podium_process_event_loop_lag_seconds",
            "How late the event loop ran a timer that was due (sampled every "
            f"{interval:g}s): the wait work on the loop imposes on every other callback.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def observe(self, seconds: float) -> None:
        self.histogram.observe(seconds)
