"""Keep the cyclic collector's full passes short in a process that holds millions of objects.

Why (issue 18): a server holding 1,000,000 allocations keeps tens of millions of objects,
and CPython's full (generation 2) collection walks every one of them, holding the event
loop all the while: measured in ``podium sim`` at 1,000,000 placements, passes of 2-8 s late
in the run, growing with the heap.  During such a pass no heartbeat is heard and no request
answered.  Refcounting frees almost everything this code makes (a forced full collection
of the simulated agents' 2 GB found 0-64 unreachable objects); the full passes walk the
living, not garbage.

:class:`GcPauses` freezes the survivors after each full collection (``gc.freeze``: they move
to the permanent generation, which no collection walks), so the next full pass walks only
what was allocated since, and CPython starts one only when that has grown by a quarter.  The
price: a cycle among frozen objects that becomes garbage later is kept until the next
unfrozen pass, which runs at most every ``full_every`` seconds (an hour by default): the
objects are given back to the collector (``gc.unfreeze``) before a full collection then.
Each full pass's duration is recorded (``pauses``, for ``podium sim``'s JSON line and the
metrics).  Used by the server and the agent alike, so it sits outside both layers.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

PAUSES_KEPT = 10_000
"""Full collections' durations kept (a long-lived server's list stays bounded)."""
FULL_EVERY = 3600.0
"""Seconds between two full passes over everything, frozen objects included."""


class GcPauses:
    """A ``gc.callbacks`` hook: times full collections and freezes their survivors."""

    def __init__(self, *, freeze: bool = True, full_every: float = FULL_EVERY) -> None:
        self.freeze = freeze
        self.full_every = full_every
        self.pauses: deque[float] = deque(maxlen=PAUSES_KEPT)
        """Seconds each recent full collection took, in order."""
        self._started: float | None = None
        self._last_full = time.monotonic()

    def install(self) -> GcPauses:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    @property
    def installed(self) -> bool:
        return self._callback in gc.callbacks

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def reset(self) -> None:
        self.pauses.clear()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        now = time.monotonic()
        if phase == "start":
            self._started = now
            if self.freeze and now - self._last_full >= self.full_every:
                # this pass walks everything: what was frozen meets the collector again
                self._last_full = now
                gc.unfreeze()
            return
        if self._started is not None:
            self.pauses.append(now - self._started)
            self._started = None
        if self.freeze:
            gc.freeze()

    def figures(self) -> dict[str, Any]:
        """``count``, ``max_ms`` and ``total_s`` of the full collections recorded."""
        return {
            "count": len(self.pauses),
            "max_ms": round(max(self.pauses) * 1000.0, 1) if self.pauses else None,
            "total_s": round(sum(self.pauses), 2),
        }


WATCH = GcPauses()
"""This process' hook (installed by :func:`podium.runtime.tune_gc` and the simulator)."""
