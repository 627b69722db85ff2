"""The scheduling worker: takes evaluations from the broker, runs the scheduler on a
snapshot, and has the plan applier commit the plan; a plan gone stale is re-planned.

It never dies of an evaluation or of the store (:mod:`podium.server.retry`): one that
failed on the store is retried with backoff for as long as writes fail, one that failed
otherwise is parked as failed after ``retry.attempts`` tries.  Only cancellation ends
the loop (:meth:`Worker.run`), which is one of the leader's duties
(:class:`podium.server.leader.LeaderDuties`).

The scheduler itself is an argument (``plan``): the composition root chooses it, so
the worker knows the scheduler's contract and not its module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from podium.models import EvalStatus, Evaluation, SchedulerResult
from podium.scheduler.commit import PLAN_ATTEMPTS
from podium.scheduler.snapshot import Snapshot
from podium.server.applier import PlanApplier
from podium.server.broker import EvalBroker
from podium.server.retry import Failures, RetryPolicy
from podium.state import StateStore
from podium.state.errors import StoreError

log = logging.getLogger("podium.server")

EVAL_YIELD_MAX = 0.05
"""Seconds a scheduler worker leaves the event loop to others after an evaluation, at most
(it leaves as long as the evaluation took, so the API and agents get about half the loop
while big evaluations queue)."""

Plan = Callable[[Snapshot, Evaluation, float], SchedulerResult]
"""The scheduler: (snapshot, evaluation, now) -> its plan and the evaluation's outcome."""


@dataclass
class SchedulerStats:
    """Cheap counters over :meth:`Worker.process` (read by ``podium sim``)."""

    evals: int = 0
    placements: int = 0
    """Allocations placed by committed plans."""
    seconds: float = 0.0
    """Time inside the scheduler and the plan applier (re-plans included)."""
    plan_rejections: int = 0
    completed: int = 0
    """Evaluations whose plan was committed (``evals`` counts every attempt)."""
    observe: Callable[[float, float], None] | None = None
    """Called after each attempt with the seconds in the scheduler and in the applier
    (podium.server.metrics' histograms); None: nothing is observed."""


class Worker:
    def __init__(
        self,
        store: StateStore,
        broker: EvalBroker,
        applier: PlanApplier,
        clock: Callable[[], float],
        process: Callable[[Evaluation], None],
    ) -> None:
        self.store = store
        self.broker = broker
        self.applier = applier
        self.clock = clock
        self._process = process
        """What :meth:`run` does with each evaluation (the server's ``process_eval``,
        which calls :meth:`process` with the scheduler it chose)."""
        self.stats = SchedulerStats()
        self.retry = RetryPolicy()
        """How failed evaluations are retried, then parked (podium.server.retry)."""
        self.failures: dict[str, Failures] = {}

    async def run(self, n: int) -> None:
        """One scheduling worker: it never dies of an evaluation or of the store (see
        podium.server.retry); only cancellation ends it."""
        while True:
            ev = await self.broker.dequeue()
            started = time.perf_counter()
            try:
                self.work(ev)
            except Exception:  # a bug in the failure path itself: log it, keep working
                log.exception("scheduling worker %d: evaluation %s", n, ev.id)
            # Let the API breathe between evaluations: as long as this one held the loop (up
            # to EVAL_YIELD_MAX), so a request needing a few loop turns is not served one
            # turn per evaluation while a backlog of big evaluations runs (measured: API
            # p99 several seconds at 5,000 nodes with one turn between them).
            await asyncio.sleep(min(time.perf_counter() - started, EVAL_YIELD_MAX))

    def process(self, ev: Evaluation, plan: Plan, attempts: int = PLAN_ATTEMPTS) -> None:
        """Schedule one evaluation and commit its plan (re-planning if the plan went stale)."""
        for _ in range(attempts):
            current = self.store.evaluation(ev.id) or ev
            if current.terminal():
                return
            started = time.perf_counter()
            # nothing below awaits until the plan is committed: the live tables will do
            snap = self.store.view()
            now = self.clock()
            result = plan(snap, current, now)
            result.plan.snapshot_index = snap.index
            planned = time.perf_counter()
            outcome = self.applier.apply(result, now)
            stats = self.stats
            done = time.perf_counter()
            stats.seconds += done - started
            stats.evals += 1
            if stats.observe is not None:
                stats.observe(planned - started, done - planned)
            if not outcome.rejected_nodes:
                stats.placements += outcome.committed_placements
                stats.completed += 1
            else:
                stats.plan_rejections += 1
                log.info(
                    "plan for %s went stale on %d nodes; re-planning",
                    ev.id,
                    len(outcome.rejected_nodes),
                )
                continue
            for new_ev in result.new_evals:
                stored = self.store.evaluation(new_ev.id) or new_ev
                if stored.status == EvalStatus.BLOCKED:
                    # one blocked evaluation per job: a newer one replaces the older
                    older = self.broker.drop_blocked(stored.namespace, stored.job_id)
                    if older is not None and older.id != stored.id:
                        self._cancel(older, "superseded by a newer blocked evaluation")
                    self.broker.block(stored)
                elif stored.status == EvalStatus.PENDING:
                    self.broker.enqueue(stored)
            # stopping frees capacity only when tasks exit; client_update unblocks then
            return
        self._fail_eval(ev, f"plan rejected {attempts} times: the cluster kept changing")

    def work(self, ev: Evaluation) -> None:
        """Process ``ev``; on failure, retry it later or park it (``_eval_failed``)."""
        try:
            self._process(ev)
            self.failures.pop(ev.id, None)
        except Exception as exc:
            self._eval_failed(ev, exc)
        finally:
            self.broker.ack(ev)
            self._cancel_superseded_safely()

    def _fail_eval(self, ev: Evaluation, why: str) -> None:
        txn = self.store.txn()
        txn.put_eval(
            ev.model_copy(
                update={
                    "status": EvalStatus.FAILED,
                    "status_description": why,
                    "modify_index": txn.index,
                    "modify_time": self.clock(),
                }
            )
        )
        self.store.commit(txn)

    def _eval_failed(self, ev: Evaluation, exc: Exception) -> None:
        """Retry ``ev`` with backoff (a failed store write: for as long as writes fail; any
        other error: up to ``retry.attempts`` tries), then park it as failed."""
        current = self.store.evaluation(ev.id)
        if current is not None and current.terminal():  # its outcome was committed after all
            self.failures.pop(ev.id, None)
            return
        failures = self.failures.setdefault(ev.id, Failures())
        policy = self.retry
        if isinstance(exc, StoreError):
            failures.store += 1
            failures.last = f"store error: {exc}"
            log.warning("evaluation %s: %s", ev.id, failures.last)
        else:
            failures.scheduler += 1
            failures.last = f"scheduler error: {type(exc).__name__}: {exc}"
            log.error("evaluation %s failed", ev.id, exc_info=exc)
            if failures.scheduler >= policy.attempts:
                why = f"failed {failures.scheduler} times; last: {failures.last}"
                try:
                    self._fail_eval(current or ev, why)
                    self.failures.pop(ev.id, None)
                    log.error("evaluation %s parked as failed: %s", ev.id, why)
                    return
                except StoreError as store_exc:  # park it once the store writes again
                    log.warning("evaluation %s: cannot park it: %s", ev.id, store_exc)
        delay = policy.delay(failures.scheduler + failures.store)
        retry_at = self.clock() + delay
        log.warning("evaluation %s: retrying in %.1fs", ev.id, delay)
        if failures.store == 0:  # the store writes: say so where people look
            with contextlib.suppress(StoreError):
                self._note_retry(current or ev, failures, retry_at)
        again = self.store.evaluation(ev.id) or ev
        self.broker.enqueue(again.model_copy(update={"wait_until": retry_at}))

    def _note_retry(self, ev: Evaluation, failures: Failures, retry_at: float) -> None:
        """Record the failed try on the evaluation (``podium eval status`` shows it), with
        its retry time, which a restarted server honours too (the broker holds it)."""
        txn = self.store.txn()
        txn.put_eval(
            ev.model_copy(
                update={
                    "status_description": (
                        f"try {failures.scheduler} of {self.retry.attempts} failed "
                        f"({failures.last}); retrying"
                    ),
                    "wait_until": retry_at,
                    "modify_index": txn.index,
                    "modify_time": self.clock(),
                }
            )
        )
        self.store.commit(txn)

    def _cancel_superseded_safely(self) -> None:
        try:
            self._cancel_superseded()
        except StoreError as exc:  # they stay pending in the store; cancel them next time
            log.warning("cannot cancel superseded evaluations: %s", exc)

    def _cancel(self, ev: Evaluation, why: str) -> None:
        current = self.store.evaluation(ev.id)
        if current is None or current.terminal():
            return
        txn = self.store.txn()
        txn.put_eval(
            current.model_copy(
                update={
                    "status": EvalStatus.CANCELED,
                    "status_description": why,
                    "modify_index": txn.index,
                    "modify_time": self.clock(),
                }
            )
        )
        self.store.commit(txn)

    def _cancel_superseded(self) -> None:
        old = self.broker.take_superseded()
        if not old:
            return
        try:
            self._commit_superseded(old)
        except StoreError:
            self.broker.supersede(old)  # tried again after the next evaluation
            raise

    def _commit_superseded(self, old: list[Evaluation]) -> None:
        txn = self.store.txn()
        for ev in old:
            current = self.store.evaluation(ev.id)
            if current is None or current.terminal():
                continue
            txn.put_eval(
                current.model_copy(
                    update={
                        "status": EvalStatus.CANCELED,
                        "status_description": "superseded by a newer evaluation",
                        "modify_index": txn.index,
                        "modify_time": self.clock(),
                    }
                )
            )
        self.store.commit(txn)
