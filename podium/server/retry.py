"""How the scheduling worker retries an evaluation that failed.

An evaluation can fail for two kinds of reasons:

- the store could not write (a full disk, an I/O error: :class:`podium.state.StoreError`).
  The evaluation is not at fault, and parking it as failed would need a write too, so it
  is retried, with backoff up to ``max_delay``, for as long as writes fail: once the disk
  has room again, its next try places what it should;
- anything else (the scheduler raised on it: a "poison" evaluation).  It is retried with
  backoff ``attempts - 1`` times, then parked as failed with the last error as its reason,
  so one bad evaluation never stops the others nor loops forever.

The worker itself never dies of either (podium.server.worker ``Worker.run``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries (the first included) before an evaluation that keeps failing is parked."""
    base_delay: float = 0.5
    """Seconds before the first retry; doubled for each one after it."""
    max_delay: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1, 2, ...)."""
        return float(min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1)))


@dataclass
class Failures:
    """One evaluation's failures so far (kept in memory by the worker)."""

    scheduler: int = 0
    """Failures that count towards parking it."""
    store: int = 0
    """Failures of the store under it (they only set the backoff)."""
    last: str = ""
