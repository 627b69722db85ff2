"""The leader's duties: the loops that act on the cluster on their own, as opposed to
the calls that serve the API.

- the scheduling workers (:mod:`podium.server.worker`), fed by the evaluation broker;
- heartbeat expiry (nodes silent for TTL + grace go down) and the drainer
  (:mod:`podium.server.nodes`);
- the deployment watcher's tick (progress deadlines) and garbage collection
  (:mod:`podium.server.gc`);
- the periodic dispatcher (:mod:`podium.server.periodic`);
- more loops of their own (``loops``: the autoscaler, podium.server.autoscaler).

Exactly one server may run them (issue 15: the one holding the etcd lease), while
every server answers reads, blocking queries and API calls.  :class:`LeaderDuties`
starts and stops them as one, without touching the API: stopping cancels the loops
and empties the broker; starting rebuilds the broker from the store's pending and
blocked evaluations (they live in the store, not in the broker) and gives every node
a fresh heartbeat TTL before it can be declared down, so a server taking the duties
(a restart today, a new leader tomorrow) does not act on time it did not watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from podium.models import EvalStatus
from podium.server.broker import EvalBroker
from podium.server.config import ServerConfig
from podium.server.hearing import check_interval
from podium.state import StateStore

log = logging.getLogger("podium.server")


class LeaderDuties:
    def __init__(
        self,
        store: StateStore,
        broker: EvalBroker,
        config: ServerConfig,
        *,
        worker: Callable[[int], Coroutine[Any, Any, None]],
        refresh_heartbeats: Callable[[], None],
        check_heartbeats: Callable[[], object],
        drain_tick: Callable[[], None],
        deployments_tick: Callable[[], None],
        gc: Callable[[], object],
        loops: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = (),
        periodic: tuple[float, Callable[[], object], Callable[[], None]] | None = None,
    ) -> None:
        """``loops``: (name, coroutine function) of more loops, each started with the
        duties and cancelled with them."""
        self.store = store
        self.broker = broker
        self.config = config
        self._worker = worker
        self._refresh_heartbeats = refresh_heartbeats
        self._check_heartbeats = check_heartbeats
        self._drain_tick = drain_tick
        self._deployments_tick = deployments_tick
        self._gc = gc
        self._loops = tuple(loops)
        self._periodic = periodic
        """The periodic dispatcher: (interval, tick, reset) (podium.server.periodic)."""
        self.tasks: list[asyncio.Task[None]] = []
        self.running = False

    def start(self) -> None:
        """Take the duties: rebuild the broker from the store, give every node a fresh
        TTL, and start the loops (in the running event loop).  A no-op while running."""
        if self.running:
            return
        self.broker.flush()
        for ev in sorted(self.store.evaluations(), key=lambda e: e.create_index):
            if ev.status == EvalStatus.PENDING:
                self.broker.enqueue(ev)
            elif ev.status == EvalStatus.BLOCKED:
                self.broker.block(ev)
        self._refresh_heartbeats()
        config = self.config
        for i in range(config.workers):
            self._spawn(self._worker(i), f"scheduler-worker-{i}")
        loops: list[tuple[str, str, Callable[[], float], Callable[[], object]]] = [
            (
                "heartbeats",
                "heartbeat check",
                lambda: check_interval(config.heartbeat_ttl),
                self._check_heartbeats,
            ),
            ("gc", "garbage collection", lambda: config.gc_interval, self._gc),
            ("drainer", "drainer", lambda: config.drain_interval, self._drain_tick),
            (
                "deployments",
                "deployment watcher",
                lambda: config.deployment_interval,
                self._deployments_tick,
            ),
        ]
        if self._periodic is not None:
            every, tick, reset = self._periodic
            reset()
            loops.append(("periodic", "periodic dispatcher", lambda: every, tick))
        for name, what, interval, tick in loops:
            self._spawn(self._every(interval, tick, what), name)
        for name, loop in self._loops:
            self._spawn(loop(), name)
        self.running = True

    async def stop(self) -> None:
        """Give the duties up: the loops end (an evaluation being processed is finished
        first: its work holds the event loop until committed) and the broker is emptied;
        what was pending stays pending in the store for whoever starts them next."""
        tasks, self.tasks = self.tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.broker.flush()
        self.running = False

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    @staticmethod
    async def _every(interval: Callable[[], float], tick: Callable[[], object], what: str) -> None:
        """``tick`` every ``interval()`` seconds; one that fails is logged, and the loop
        goes on."""
        while True:
            await asyncio.sleep(interval())
            try:
                tick()
            except Exception:
                log.exception("%s failed", what)
