"""The evaluation broker: hands pending evaluations to scheduler workers.

Rules (after Nomad's ``eval_broker.go``):

- highest priority first, then oldest;
- at most one evaluation per job is in flight; later ones for the same job wait
  and only the newest of them runs (older ones are superseded: the scheduler
  always reconciles against the latest job, so running each would be waste);
- an evaluation with ``wait_until`` in the future is held until then;
- blocked evaluations (nothing fitted) are parked until capacity changes.

The broker holds ids and ordering only; the evaluations live in the store, so
a restarted server rebuilds the broker from the store's pending evaluations.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from podium.models import Evaluation

JobKey = tuple[str, str]


@dataclass(order=True)
class _Item:
    sort: tuple[int, int]
    evaluation: Evaluation = field(compare=False)


class EvalBroker:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._ready: list[_Item] = []
        self._ready_keys: set[JobKey] = set()
        self._seq = itertools.count()
        self._inflight: dict[JobKey, str] = {}
        """Jobs with an evaluation being scheduled, and that evaluation's type."""
        self._waiting: dict[JobKey, Evaluation] = {}
        self._delayed: list[tuple[float, int, Evaluation]] = []
        self._blocked: dict[JobKey, Evaluation] = {}
        self._wakeup = asyncio.Event()
        self._superseded: list[Evaluation] = []
        self._closed = False

    @staticmethod
    def _key(ev: Evaluation) -> JobKey:
        return (ev.namespace, ev.job_id)

    # -- producers
    def enqueue(self, ev: Evaluation) -> None:
        if ev.wait_until is not None and ev.wait_until > self._clock():
            heapq.heappush(self._delayed, (ev.wait_until, next(self._seq), ev))
            self._notify()
            return
        key = self._key(ev)
        if key in self._inflight or key in self._ready_keys:
            prev = self._waiting.get(key)
            if prev is None or prev.create_index <= ev.create_index:
                self._waiting[key] = ev
                if prev is not None and prev.id != ev.id:
                    self._superseded.append(prev)
            elif prev.id != ev.id:
                self._superseded.append(ev)
            return
        self._push_ready(ev)

    def block(self, ev: Evaluation) -> None:
        """Park a blocked evaluation until :meth:`unblock` (capacity changed)."""
        self._blocked[self._key(ev)] = ev

    def unblock(self) -> list[Evaluation]:
        """Take every blocked evaluation; the caller marks them pending and enqueues them."""
        evs = list(self._blocked.values())
        self._blocked.clear()
        return evs

    def drop_blocked(self, namespace: str, job_id: str) -> Evaluation | None:
        return self._blocked.pop((namespace, job_id), None)

    # -- consumers
    async def dequeue(self) -> Evaluation:
        while True:
            if self._closed:
                raise asyncio.CancelledError
            self._promote_delayed()
            if self._ready:
                item = heapq.heappop(self._ready)
                self._ready_keys.discard(self._key(item.evaluation))
                self._inflight[self._key(item.evaluation)] = item.evaluation.type
                return item.evaluation
            timeout = None
            if self._delayed:
                timeout = max(0.0, self._delayed[0][0] - self._clock())
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def ack(self, ev: Evaluation) -> None:
        """The worker is done with ``ev``; release the next one for its job, if any."""
        key = self._key(ev)
        self._inflight.pop(key, None)
        nxt = self._waiting.pop(key, None)
        if nxt is not None:
            self._push_ready(nxt)

    def supersede(self, evs: list[Evaluation]) -> None:
        """Hand back superseded evaluations the server could not cancel (the store failed)."""
        self._superseded.extend(evs)

    def take_superseded(self) -> list[Evaluation]:
        """Evaluations replaced by a newer one for the same job; the server cancels them."""
        out, self._superseded = self._superseded, []
        return out

    def stats(self) -> dict[str, int]:
        return {
            "ready": len(self._ready),
            "inflight": len(self._inflight),
            "waiting": len(self._waiting),
            "delayed": len(self._delayed),
            "blocked": len(self._blocked),
        }

    def stats_by_type(self) -> dict[str, dict[str, int]]:
        """How many evaluations are ready, unacked (in flight), waiting (behind one of
        their job's in flight), delayed and blocked, by scheduler type (``service``,
        ``batch``, ``system``): read at scrape time by podium.server.metrics."""
        out: dict[str, dict[str, int]] = {
            "ready": {},
            "unacked": {},
            "waiting": {},
            "delayed": {},
            "blocked": {},
        }

        def count(state: str, evs: Iterable[Evaluation]) -> None:
            by_type = out[state]
            for ev in evs:
                by_type[ev.type] = by_type.get(ev.type, 0) + 1

        count("ready", (item.evaluation for item in self._ready))
        count("waiting", self._waiting.values())
        count("delayed", (ev for _at, _seq, ev in self._delayed))
        count("blocked", self._blocked.values())
        count_types = out["unacked"]
        for kind in self._inflight.values():
            count_types[kind] = count_types.get(kind, 0) + 1
        return out

    def close(self) -> None:
        self._closed = True
        self._notify()

    def flush(self) -> None:
        """Forget every evaluation held (ready, in flight, waiting, delayed, blocked,
        superseded): the server gave up the leader's duties, or takes them and rebuilds
        the broker from the store, where the evaluations live (as Nomad's broker is
        flushed when it is disabled)."""
        self._ready.clear()
        self._ready_keys.clear()
        self._inflight.clear()
        self._waiting.clear()
        self._delayed.clear()
        self._blocked.clear()
        self._superseded.clear()

    # -- internals
    def _push_ready(self, ev: Evaluation) -> None:
        heapq.heappush(self._ready, _Item((-ev.priority, next(self._seq)), ev))
        self._ready_keys.add(self._key(ev))
        self._notify()

    def _promote_delayed(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, ev = heapq.heappop(self._delayed)
            ev = ev.model_copy(update={"wait_until": None})
            self.enqueue(ev)

    def _notify(self) -> None:
        self._wakeup.set()
