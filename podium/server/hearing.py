"""Whether a silence is the nodes' or the server's own, before nodes are declared down.

Why (issue 18): a full-size simulation on a busy server once declared 1,808 healthy nodes
down at once, and their allocations were replaced: the server had stopped *hearing*
heartbeats (its loop held by other work, their requests queued behind it), not the nodes
sending them.  In a real cluster that is the failure that hurts most: the busy server moves
work off healthy machines, which makes it busier still.  Nomad gives every node a fresh TTL
after a leader election for the same reason; Kubernetes' node controller stops evicting
when a whole zone looks unhealthy at once.

:class:`Hearing` keeps two plain observations, and :meth:`Hearing.verdict` turns them into
an extension of the deadline, with the reason logged:

- **the check ran late**: the heartbeat check is due every ``interval``; when it runs much
  later by the process' monotonic clock, the server's loop was held (a long commit, a GC pause, a stopped process) and no
  heartbeat could be heard meanwhile.  Every node's silence is shortened by the excess.
- **heartbeats are heard late by everyone**: agents send a heartbeat every TTL/2; when the
  live nodes' heartbeats reach the handler, at the median, more than a TTL apart, the queue
  is the server's (requests waiting behind bulk work), and a mass of silent nodes is more
  likely that queue than a mass failure.  A mass expiry (at least ``MASS_MIN`` nodes and
  ``MASS_SHARE`` of the ready ones in one pass) is then held back by one TTL, at most
  ``MAX_HOLDS`` times per silence, so a real failure is still declared once the server
  hears again (or after those holds).

Everything here is arithmetic on the numbers given (the clock is the caller's), so the
tests need no server and no sleep.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

MASS_MIN = 10
"""Fewer nodes than this expiring at once is never treated as the server's own silence."""
MASS_SHARE = 0.1
"""Nor is less than this share of the ready nodes."""
MAX_HOLDS = 3
"""A silent node's deadline is held back at most this many times (then it goes down)."""
GAPS_KEPT = 2048
"""Recent inter-heartbeat gaps kept (a few seconds' worth at thousands of nodes)."""
LATE_FACTOR = 2.0
"""The check is 'late' past this many intervals (plus one second of slack)."""


def check_interval(ttl: float) -> float:
    """Seconds between two heartbeat checks for a TTL (the leader's loop uses it)."""
    return min(1.0, ttl / 4)


@dataclass
class Hearing:
    """The server's record of its own hearing (kept by :class:`podium.server.nodes.Nodes`)."""

    ttl: float
    last_check: float | None = None
    gaps: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=GAPS_KEPT))
    """(when heard, seconds since that node's previous heartbeat)."""
    holds: dict[str, int] = field(default_factory=dict)

    @property
    def interval(self) -> float:
        return check_interval(self.ttl)

    def heard(self, node_id: str, now: float, previous: float | None) -> None:
        """A heartbeat reached the handler at ``now``; ``previous``: the node's last."""
        self.holds.pop(node_id, None)
        if previous is not None and now >= previous:
            self.gaps.append((now, now - previous))

    def forget(self, node_id: str) -> None:
        self.holds.pop(node_id, None)

    def restart(self, now: float | None = None) -> None:
        """Duties (re)taken at ``now`` (every node given a fresh TTL then): the time before
        is nobody's stall, the time after is this server's, and the first check measures
        it from ``now`` (None: from the first check on)."""
        self.last_check = now

    def median_gap(self, now: float) -> float | None:
        """The median gap between live nodes' heartbeats heard in the last 2 TTLs."""
        since = now - 2 * self.ttl
        recent = [gap for at, gap in self.gaps if at >= since]
        return statistics.median(recent) if len(recent) >= MASS_MIN else None

    def stall(self, now: float) -> tuple[float, str | None]:
        """Seconds this check runs late (the server was not listening), with why; (0, None)
        when on time.  Called once per check, ``now`` from the process' monotonic clock
        (the time the server itself ran, not the cluster's clock, which tests move)."""
        last, self.last_check = self.last_check, now
        if last is None:
            return 0.0, None
        late = now - last - self.interval
        if late <= self.interval * (LATE_FACTOR - 1) + 1.0:
            return 0.0, None
        return late, (
            f"the heartbeat check ran {now - last:.1f}s after the last one (due every "
            f"{self.interval:g}s): this server was not listening for {late:.1f}s, so every "
            f"node's silence is counted {late:.1f}s shorter"
        )

    def hold(self, now: float, expiring: list[str], ready: int) -> tuple[set[str], str | None]:
        """The expiring nodes to give one more TTL instead of declaring them down now, with
        why (empty: declare them all)."""
        if len(expiring) < max(MASS_MIN, MASS_SHARE * ready):
            return set(), None
        gap = self.median_gap(now)
        if gap is None or gap <= self.ttl:
            return set(), None  # the others are heard on time: the silent ones are silent
        held = {n for n in expiring if self.holds.get(n, 0) < MAX_HOLDS}
        if not held:
            return set(), None  # held long enough: they go down
        for n in held:
            self.holds[n] = self.holds.get(n, 0) + 1
        return held, (
            f"{len(expiring)} of {ready} nodes silent at once while the others' heartbeats "
            f"reach this server {gap:.1f}s apart (sent every {self.ttl / 2:g}s): the backlog "
            f"is this server's; {len(held)} held for another {self.ttl:g}s"
        )
