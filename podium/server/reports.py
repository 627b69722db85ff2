"""Agents' reports of their allocations' states: checked (a node speaks only for its
own allocations, one agent run's requests in order), then group-committed: reports
arriving within ``report_batch_window`` share one transaction and one fsync, as Nomad
batches ``Node.UpdateAlloc`` into one Raft apply.

In the same transaction as the reports, the deployment watcher counts health and the
jobs whose groups wait (``depends_on``) get an evaluation; after it, failed
allocations' jobs are evaluated and blocked evaluations woken when capacity was freed.
The batcher is a task of its own, started by the first report and ended by
:meth:`Reports.close`; it is not one of the leader's duties (it only commits what the
API accepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from podium.errors import Conflict, Forbidden
from podium.memtrim import trim_after
from podium.models import (
    Allocation,
    AllocClientUpdate,
    AllocHealth,
    ClientStatus,
    DesiredStatus,
    Job,
    TriggeredBy,
)
from podium.server import catalog, deployments, evals
from podium.server.broker import EvalBroker
from podium.server.config import ServerConfig
from podium.server.jobs import Jobs
from podium.state import ALLOCS, StateStore, Txn

log = logging.getLogger("podium.server")

Report = tuple[str, list[AllocClientUpdate], "asyncio.Future[int]"]


def _merge_health(alloc: Allocation, update: AllocClientUpdate) -> AllocHealth | None:
    """The agent judges health; the server alone says which allocations are canaries."""
    reported = update.deployment_status
    if reported is None:
        return alloc.deployment_status
    canary = alloc.deployment_status.canary if alloc.deployment_status else False
    return reported.model_copy(update={"canary": canary})


def _has_waiting_group(store: StateStore, job: Job) -> bool:
    """Whether a group with depends_on has never been placed (so it may be waiting)."""
    if not any(g.depends_on for g in job.spec.groups.values()):
        return False
    placed = {a.group for a in store.allocs_by_job(job.id, job.namespace)}
    return any(g.depends_on and name not in placed for name, g in job.spec.groups.items())


class Reports:
    def __init__(
        self,
        store: StateStore,
        broker: EvalBroker,
        config: ServerConfig,
        clock: Callable[[], float],
        watcher: deployments.DeploymentWatcher,
        jobs: Jobs,
        commit: Callable[[list[tuple[str, list[AllocClientUpdate]]]], int] | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.config = config
        self.clock = clock
        self.watcher = watcher
        self.jobs = jobs
        self._commit_batch = commit or self.commit_many
        """What commits a batch (the server's ``client_update_many``, which wrappers such as
        ``podium sim``'s counter may replace; it calls :meth:`commit_many`)."""
        self._queue: list[Report] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._order: dict[str, tuple[str, int]] = {}
        """node id -> (agent session, sequence) of the newest report request taken from it."""

    async def batched(
        self,
        node_id: str,
        updates: list[AllocClientUpdate],
        *,
        session: str = "",
        seq: int = 0,
    ) -> int:
        """One agent's reports, committed with whatever other reports arrive within
        ``report_batch_window`` (a group commit: one transaction, one fsync).  Returns
        once the batch is durable, so an acknowledged report is never lost.

        ``session`` and ``seq`` (the agent's run and its count of report requests) order
        one agent's reports: an agent may have two requests with reports in flight (a
        report and a sync carrying reports, or a retry after a timeout), and one taken
        after a newer one would write an older state over a newer one.  Such a request
        is refused whole (:class:`Conflict`), before anything of it is written; the agent
        sends those allocations' current states again."""
        self.check_own(node_id, updates)
        self.check_order(node_id, session, seq)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.append((node_id, updates, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._batcher(), name="report-batcher")
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Stop the batcher; reports accepted before now are committed, not dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        pending, self._queue = self._queue, []
        if pending:
            self._commit(pending)

    def check_own(self, node_id: str, updates: list[AllocClientUpdate]) -> None:
        """Refuse (:class:`Forbidden`) a request in which ``node_id`` reports on an
        allocation placed on another node: a node speaks only for itself.  (An
        allocation the store no longer holds is let through; the commit skips it.)"""
        store = self.store
        for u in updates:
            alloc = store.alloc(u.id)
            if alloc is not None and alloc.node_id != node_id:
                raise Forbidden(
                    f"node {node_id} reported on allocation {u.id}, which is placed on node "
                    f"{alloc.node_id}: a node may report only on its own allocations; "
                    "nothing of this request was written"
                )

    def check_order(self, node_id: str, session: str, seq: int) -> None:
        """Take the report request ``seq`` of the agent run ``session`` on ``node_id``, or
        raise :class:`Conflict` when a newer one of the same run was taken already.  No
        ``session``: unordered (a hand-made request), always taken.  Kept in memory only:
        after a server restart the first request of each run is taken as it comes."""
        if not session:
            return
        last = self._order.get(node_id)
        if last is not None and last[0] == session and seq <= last[1]:
            raise Conflict(
                f"report {seq} of agent run {session} on node {node_id} arrived after report "
                f"{last[1]}: not written; send the allocations' current states again"
            )
        self._order[node_id] = (session, seq)

    async def _batcher(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.config.report_batch_window > 0:
                await asyncio.sleep(self.config.report_batch_window)
            while self._queue:
                batch = self._take_batch()
                self._commit(batch)
                if self._queue:
                    # what is left waits one turn of the loop: a transaction holds the loop
                    # for as long as it applies, and heartbeats are heard in between
                    await asyncio.sleep(0)

    def _take_batch(self) -> list[Report]:
        """The oldest queued requests, up to ``report_batch_max`` allocations in all (at
        least one request): a storm of reports is committed in bounded transactions, not
        one that holds the event loop for seconds (issue 18: 1-6 s late in a full-size
        simulation, every heartbeat waiting behind it)."""
        limit = self.config.report_batch_max
        taken = 0
        count = 0
        for _node_id, updates, _future in self._queue:
            if count and taken + len(updates) > limit:
                break
            taken += len(updates)
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    def _commit(self, batch: list[Report]) -> None:
        try:
            index = self._commit_batch([(node_id, updates) for node_id, updates, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                future = batch[0][2]
                if not future.done():
                    future.set_exception(exc)
                return
            # Nothing was committed (the hooks after the commit do not raise): retry each
            # request alone, so one bad report fails only its own request.
            log.warning("a batch of %d reports failed; retrying one by one: %s", len(batch), exc)
            for item in batch:
                self._commit([item])
            return
        for _node_id, _updates, future in batch:
            if not future.done():
                future.set_result(index)

    def commit_many(self, reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
        """Agents' reports ``(node_id, updates)``, in one transaction."""
        store = self.store
        now = self.clock()
        txn = store.txn()
        txn.client_update = True
        failed_jobs: dict[tuple[str, str], Job] = {}
        watch_jobs: set[tuple[str, str]] = set()
        freed = False
        written = txn.puts[ALLOCS]
        for node_id, updates in reports:
            for u in updates:
                # a report earlier in the batch may have written this allocation already
                alloc = written.get(u.id) or store.alloc(u.id)
                if alloc is None or alloc.node_id != node_id:
                    continue
                if alloc.client_status == ClientStatus.LOST:
                    # The server gave up on it and replaced it; what the agent says of it now
                    # (its copy stopping after a reconnect) only updates the task states.
                    txn.put_alloc(
                        alloc.model_copy(
                            update={
                                "task_states": u.task_states,
                                "modify_index": txn.index,
                                "modify_time": now,
                            }
                        )
                    )
                    continue
                txn.put_alloc(
                    alloc.model_copy(
                        update={
                            "client_status": u.client_status,
                            "client_description": u.client_description,
                            "task_states": u.task_states,
                            "ports": u.ports or alloc.ports,
                            "checks": u.checks if u.checks is not None else alloc.checks,
                            "deployment_status": _merge_health(alloc, u),
                            "modify_index": txn.index,
                            "modify_time": now,
                        }
                    )
                )
                watch_jobs.add((alloc.namespace, alloc.job_id))
                if u.client_status.terminal and not alloc.client_status.terminal:
                    freed = True
                    if (
                        u.client_status == ClientStatus.FAILED
                        and alloc.desired_status == DesiredStatus.RUN
                    ):
                        job = store.job(alloc.job_id, alloc.namespace)
                        if job is not None and not job.stop:
                            failed_jobs[(job.namespace, job.id)] = job
        evs = []
        for job in failed_jobs.values():
            ev = evals.new_eval(job, TriggeredBy.ALLOC_FAILURE, txn.index, now)
            txn.put_eval(ev)
            evs.append(ev)
        outcome = self._watch_reported(txn, watch_jobs, failed_jobs, now)
        evs.extend(outcome.evals)
        catalog.sync_txn(store, txn)  # running instances (re)registered, finished ones removed
        index = store.commit(txn)
        try:
            for ev in evs:
                self.broker.enqueue(ev)
            self.jobs.revert_all(outcome.reverts)
            if freed:
                evals.unblock(store, self.broker, self.clock)
        except Exception:
            # committed: the reports are durable whatever happens to what follows them
            log.exception("after agents' reports at index %d", index)
        trim_after(sum(len(updates) for _node_id, updates in reports))
        return index

    def _watch_reported(
        self,
        txn: Txn,
        jobs: set[tuple[str, str]],
        already: dict[tuple[str, str], Job],
        now: float,
    ) -> deployments.Outcome:
        """After agents' reports: move the jobs' running deployments along, and evaluate a
        job whose groups wait (depends_on) for what just changed."""
        store = self.store
        dep_ids: list[str] = []
        outcome = deployments.Outcome()
        for ns, job_id in jobs:
            dep = self.watcher.active_for(job_id, ns)
            if dep is not None:
                dep_ids.append(dep.id)
            job = store.job(job_id, ns)
            if job is None or job.stop or (ns, job_id) in already:
                continue
            if _has_waiting_group(store, job):
                ev = evals.new_eval(job, TriggeredBy.ALLOC_STATUS, txn.index, now)
                txn.put_eval(ev)
                outcome.evals.append(ev)
        if dep_ids:
            outcome.merge(self.watcher.refresh(txn, dep_ids, now))
        return outcome
