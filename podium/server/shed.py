"""Load shedding: an overloaded server answers the requests that can wait with 429 and
``Retry-After``, and never a heartbeat.

Why (issue 18): a server's event loop serves every request in turn.  When more arrives than
it can carry (a storm of agents' syncs after a large placement, a dashboard polling every
job), each request waits behind all the others, heartbeats included, and a heartbeat
answered late is a node declared down that was never gone.  Kubernetes gives node
heartbeats their own objects (Leases) and API Priority and Fairness their own share of the
server; Nomad rate-limits heartbeats by design.  Podium keeps heartbeats one cheap
in-memory write on their own route, and, when the loop falls behind, turns away the work
that can wait, so the loop catches up and heartbeats are heard on time.

What counts as overloaded: the event loop's own lag.  A timer due every
:data:`SAMPLE_INTERVAL` records how late it ran (the time any callback, a heartbeat's
included, waits behind the work ahead of it); the loop is overloaded while a sample in the
last :data:`WINDOW` seconds, or the timer now overdue, is later than ``lag_limit``
(``podium server --shed-lag``, 2 s by default: far above a healthy server's few
milliseconds, well below a heartbeat's TTL).

What is shed (:func:`kind`): agents' syncs (``/v1/client/node/{id}/allocations``, reports
riding on them included: the agent keeps them until one is taken) and reads (``GET``,
``HEAD``).  Never: heartbeats and registrations (a node's life: ``PUT``/``POST``), reports
on their own and writes by people (a ``job run`` is rare and wanted), the server's own status and metrics (what an operator
looks at to see why it is busy), event streams and log streams once open.  A refused
request did nothing; the answer says when to come back (``Retry-After``: the lag seen, in
whole seconds, jittered so that thousands of agents do not come back at once), and the
SDK and the agents wait that long and send it again (podium.client: ``overloaded``).
"""

from __future__ import annotations

import math
import random
from collections import deque

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from podium.metrics.process import LagTimer
from podium.server.config import DEFAULT_SHED_LAG

SAMPLE_INTERVAL = 0.1
WINDOW = 1.0
"""A lag sample counts for this many seconds after it was taken."""
RETRY_AFTER_MAX = 30
CODE = "overloaded"
"""The ``code`` of a shed request's JSON answer (what the SDK retries on)."""

NEVER = ("/v1/status", "/v1/metrics", "/v1/event/stream", "/v1/agent/")
"""Read paths never shed (prefixes): the status an operator or a load balancer reads to
see why the server is busy, and streams (their cost is the open, not each read)."""


def kind(method: str, path: str) -> str | None:
    """``sync``, ``read`` or None (never shed) for a request."""
    if path.startswith("/v1/client/node/") and path.endswith("/allocations"):
        return "sync"  # GET, or POST with reports riding on it
    if method not in ("GET", "HEAD"):
        return None
    if path.startswith(NEVER) or "/logs" in path or "/exec" in path:
        return None
    return "read"


class LoadShedder(LagTimer):
    """The loop's recent lag and the shed counts (one per server; see the module)."""

    def __init__(self, lag_limit: float = DEFAULT_SHED_LAG, *, seed: int | None = None) -> None:
        super().__init__(SAMPLE_INTERVAL)
        self.lag_limit = lag_limit
        self.recent: deque[tuple[float, float]] = deque()
        """(when taken, lag) of samples over half the limit in the last WINDOW seconds."""
        self.shed: dict[str, int] = {"sync": 0, "read": 0}
        self._random = random.Random(seed)

    def observe(self, seconds: float) -> None:
        if self._loop is None:
            return
        now = self._loop.time()
        while self.recent and self.recent[0][0] < now - WINDOW:
            self.recent.popleft()
        if seconds > self.lag_limit / 2:
            self.recent.append((now, seconds))

    def lag(self) -> float:
        """The worst lag of the last WINDOW seconds, the timer's own overdue time included
        (started on first use: the loop must be running)."""
        if not self.running:
            self.start()
        assert self._loop is not None
        now = self._loop.time()
        overdue = now - self._due
        recent = max((lag for at, lag in self.recent if at >= now - WINDOW), default=0.0)
        return max(overdue, recent)

    def overloaded(self) -> float | None:
        """The lag when it is past the limit (shed), else None."""
        if self.lag_limit <= 0:
            return None
        lag = self.lag()
        return lag if lag > self.lag_limit else None

    def retry_after(self, lag: float) -> int:
        """Whole seconds to come back after: the lag seen, jittered up to twice it."""
        base = max(1, math.ceil(lag))
        return min(RETRY_AFTER_MAX, base + self._random.randint(0, base))


class ShedMiddleware:
    """The ASGI middleware that answers 429 to what can wait while the loop is behind."""

    def __init__(self, app: ASGIApp, shedder: LoadShedder) -> None:
        self.app = app
        self.shedder = shedder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.shedder.lag_limit <= 0:
            await self.app(scope, receive, send)
            return
        what = kind(scope["method"], scope["path"])
        lag = self.shedder.overloaded() if what is not None else None
        if what is None or lag is None:
            await self.app(scope, receive, send)
            return
        self.shedder.shed[what] += 1
        after = self.shedder.retry_after(lag)
        answer = JSONResponse(
            {
                "error": f"the server is overloaded (its event loop is {lag:.1f}s behind): "
                f"try again in {after}s",
                "code": CODE,
            },
            status_code=429,
            headers={"Retry-After": str(after)},
        )
        await answer(scope, receive, send)
