"""The periodic dispatcher: launches periodic jobs' children when their cron says so.

One of the leader's duties (:class:`podium.server.leader.LeaderDuties` runs
:meth:`PeriodicDispatcher.tick` every :data:`TICK` seconds; a server that loses the lead
stops it with the others).  What to do is :func:`podium.models.periodic.decide`'s, a
pure function of the job's ``periodic`` block, its last launch, when its version was
registered, whether an earlier launch still runs, and now; this module only reads
those from the store and commits the outcome.

The last launch is stored on the parent job (``Job.periodic_launch``) in the very
transaction that creates the launch's child, so a leader that crashes after the commit
has launched it and a new one sees it launched; one that crashes before has launched
nothing, and its successor launches it (once: at most the newest missed launch runs
after an outage).  Launches skipped by ``prohibit_overlap`` are recorded the same way,
so they are not run later either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from podium.errors import Conflict, NotFound, PodiumError
from podium.models import Evaluation, Job, TriggeredBy
from podium.models.periodic import decide, launch_id
from podium.server import children, namespaces
from podium.server.broker import EvalBroker
from podium.state import JOBS, StateStore

log = logging.getLogger("podium.server")

TICK = 0.25
"""Seconds between two looks at the periodic jobs (how late a launch may start)."""


@dataclass
class Launched:
    job_id: str
    eval_id: str
    index: int


class PeriodicDispatcher:
    def __init__(self, store: StateStore, broker: EvalBroker, clock: Callable[[], float]) -> None:
        self.store = store
        self.broker = broker
        self.clock = clock
        self._next: dict[tuple[str, str], tuple[tuple[object, ...], float | None]] = {}
        """Per job: what its decision was made from, and when a launch is next due, so a
        tick looks again only at jobs whose time came (or that changed)."""

        self._periodic: list[tuple[str, str]] = []
        self._jobs_index = -1
        """The periodic jobs as of the jobs table's index ``_jobs_index``: a tick scans
        every job only when some job changed, not four times a second."""

    def reset(self) -> None:
        """Forget the cached schedule (a server taking the lead starts from the store)."""
        self._next.clear()
        self._jobs_index = -1

    def _periodic_jobs(self) -> list[Job]:
        index = self.store.table_index(JOBS)
        if index != self._jobs_index:
            self._periodic = [
                (j.namespace, j.id)
                for j in self.store.jobs(None)
                if j.spec.periodic is not None and not j.stop
            ]
            self._jobs_index = index
        found = (self.store.job(job_id, ns) for ns, job_id in self._periodic)
        return [j for j in found if j is not None]

    def tick(self) -> list[str]:
        """Launch every periodic job whose launch is due; returns the children made."""
        now = self.clock()
        made: list[str] = []
        seen: set[tuple[str, str]] = set()
        for job in self._periodic_jobs():
            if job.spec.periodic is None or job.stop:
                continue
            key = (job.namespace, job.id)
            seen.add(key)
            basis = (job.job_modify_index, job.periodic_launch, job.submit_time)
            cached = self._next.get(key)
            if cached is not None and cached[0] == basis:
                due = cached[1]
                if due is None or due > now:
                    continue
            try:
                child = self._consider(job, now)
            except Exception:
                log.exception("periodic job %s: launch failed", job.id)
                continue
            if child is not None:
                made.append(child)
        for key in list(self._next):
            if key not in seen:
                del self._next[key]
        return made

    def _consider(self, job: Job, now: float) -> str | None:
        periodic = job.spec.periodic
        assert periodic is not None
        live = periodic.prohibit_overlap and any(
            children.running(self.store, c) for c in children.children(self.store, job)
        )
        d = decide(periodic, job.periodic_launch, job.submit_time, now, running_child=live)
        key = (job.namespace, job.id)
        if d.record is None:
            self._next[key] = (
                (job.job_modify_index, job.periodic_launch, job.submit_time),
                d.next_at,
            )
            return None
        if d.missed:
            log.warning(
                "periodic job %s: launches were missed (no leader ran them); running the "
                "latest one only",
                job.id,
            )
        txn = self.store.txn()
        txn.put_job(job.model_copy(update={"periodic_launch": d.record, "modify_index": txn.index}))
        child_id: str | None = None
        ev: Evaluation | None = None
        if d.launch is not None:
            cid = launch_id(job.id, d.launch)
            if self.store.job(cid, job.namespace) is None:  # forced at that second already
                spec = children.child_spec(job, cid)
                try:
                    namespaces.admit(self.store, job.namespace, spec, None)
                except PodiumError as exc:
                    log.warning("periodic job %s: launch %s refused: %s", job.id, cid, exc)
                else:
                    _, ev = children.put_child(
                        txn,
                        job,
                        spec,
                        now,
                        why=f"periodic launch of {job.id} scheduled at {int(d.launch)}",
                        trigger=TriggeredBy.PERIODIC_JOB,
                    )
                    child_id = cid
        elif d.overlap:
            log.info("periodic job %s: launch skipped, the previous one still runs", job.id)
        self.store.commit(txn)
        if ev is not None:
            self.broker.enqueue(ev)
        # the stored job changed (its last launch): the next tick decides from it afresh
        self._next.pop(key, None)
        return child_id

    def force(self, job_id: str, namespace: str = "default") -> Launched:
        """Launch periodic job ``job_id`` now, whatever its schedule (and
        ``prohibit_overlap``, as Nomad's ``periodic force``); the schedule is untouched."""
        job = self.store.job(job_id, namespace)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        if job.spec.periodic is None:
            raise ValueError(f"job {job.id} is not periodic (it has no periodic block)")
        if job.stop:
            raise Conflict(f"job {job.id} is stopped: run it again before forcing a launch")
        now = self.clock()
        cid = launch_id(job.id, now)
        if self.store.job(cid, job.namespace) is not None:
            raise Conflict(f"job {job.id} was launched at this second already ({cid})")
        spec = children.child_spec(job, cid)
        namespaces.admit(self.store, job.namespace, spec, None)
        txn = self.store.txn()
        _, ev = children.put_child(
            txn, job, spec, now, why=f"forced launch of {job.id}", trigger=TriggeredBy.PERIODIC_JOB
        )
        index = self.store.commit(txn)
        self.broker.enqueue(ev)
        return Launched(job_id=cid, eval_id=ev.id, index=index)
