"""Child jobs: what periodic launches and dispatches have in common.

A periodic or parameterized job is a template (``Job.template()``: the scheduler never
places it); each launch or dispatch is a child job of its own (``Job.parent_id``), with
its own versions, evaluations and allocations, made here in the same transaction as
what the parent records of it.  Children are batch jobs like any other, and garbage
collected once finished (:func:`collect`): after ``alloc_gc_age``, or sooner past the
newest :data:`KEEP_FINISHED` of their parent.
"""

from __future__ import annotations

from collections.abc import Iterable

from podium.models import EvalStatus, Evaluation, Job, JobSpec, JobVersion, TriggeredBy, next_job
from podium.models.dispatch import encode_payload
from podium.server import catalog
from podium.server.evals import new_eval
from podium.state import StateStore, Txn
from podium.state.store import Snapshot

KEEP_FINISHED = 100
"""Finished children kept per parent, whatever their age (a job launched every few
seconds would otherwise hold thousands)."""


def refuse_reserved(spec: JobSpec) -> None:
    """A job file may not name a child (``<job>/periodic-...``) nor carry a payload:
    the server makes those (ValueError, a 400, before anything is written)."""
    if "/" in spec.job:
        raise ValueError(
            f"job id {spec.job!r}: ids with '/' are the children of periodic and "
            "parameterized jobs, which the server names; register the parent instead"
        )
    if spec.payload is not None:
        raise ValueError(
            "payload is set by `podium job dispatch` on a dispatched job, not in a job file"
        )


def child_spec(
    parent: Job, child_id: str, meta: dict[str, str] | None = None, payload: bytes | None = None
) -> JobSpec:
    """The parent's spec as a child runs it: its own id, no ``periodic`` or
    ``parameterized`` block, the dispatch's meta merged over the job's, the payload."""
    spec = parent.spec.model_copy(deep=True)
    spec.job = child_id
    spec.periodic = None
    spec.parameterized = None
    spec.namespace = None
    if meta:
        spec.meta = {**spec.meta, **meta}
    spec.payload = encode_payload(payload) if payload else None
    return spec


def put_child(
    txn: Txn,
    parent: Job,
    spec: JobSpec,
    now: float,
    *,
    why: str,
    trigger: TriggeredBy = TriggeredBy.JOB_REGISTER,
    token: str = "",
) -> tuple[Job, Evaluation]:
    """Write child job ``spec`` of ``parent`` (job, version 0, evaluation) into ``txn``;
    returns the child and its evaluation (enqueue it after the commit)."""
    child, _ = next_job(spec, None, txn.index, now, parent.namespace)
    child.parent_id = parent.id
    child.dispatch_token = token
    txn.put_job(child)
    txn.put_version(
        JobVersion(
            job_id=child.id,
            namespace=child.namespace,
            version=child.version,
            spec=spec,
            submit_time=now,
            modify_index=txn.index,
            description=why,
        )
    )
    ev = new_eval(child, trigger, txn.index, now)
    txn.put_eval(ev)
    return child, ev


def children(store: Snapshot | StateStore, parent: Job) -> list[Job]:
    """``parent``'s children still stored, oldest first."""
    return sorted(
        (j for j in store.jobs(parent.namespace) if j.parent_id == parent.id),
        key=lambda j: j.create_index,
    )


def running(store: Snapshot | StateStore, job: Job) -> bool:
    """Whether ``job`` (a child) still runs or is about to: an allocation its agent has
    not reported finished, or an evaluation not yet done (a placement on its way, a
    reschedule waiting for its delay).  What ``prohibit_overlap`` waits for."""
    if any(not a.client_terminal() for a in store.allocs_by_job(job.id, job.namespace)):
        return True
    return any(
        e.status in (EvalStatus.PENDING, EvalStatus.BLOCKED)
        for e in store.evals_by_job(job.id, job.namespace)
    )


def finished_at(store: Snapshot | StateStore, job: Job) -> float:
    """The last time anything of ``job`` changed (its allocations, evaluations, itself)."""
    times = [job.submit_time]
    times += [a.modify_time for a in store.allocs_by_job(job.id, job.namespace)]
    times += [e.modify_time for e in store.evals_by_job(job.id, job.namespace)]
    return max(times)


def collect(store: StateStore, max_age: float, now: float, keep: int = KEEP_FINISHED) -> int:
    """Purge finished children older than ``max_age``, and those past the newest
    ``keep`` finished ones of each parent, with their versions, evaluations and
    allocations (one transaction).  Returns how many jobs went."""
    finished: dict[tuple[str, str], list[tuple[float, Job]]] = {}
    for job in store.jobs(None):
        if not job.parent_id or running(store, job):
            continue
        finished.setdefault((job.namespace, job.parent_id), []).append(
            (finished_at(store, job), job)
        )
    doomed: list[Job] = []
    for jobs in finished.values():
        jobs.sort(key=lambda p: (p[0], p[1].create_index), reverse=True)
        for i, (at, job) in enumerate(jobs):
            if i >= keep or now - at > max_age:
                doomed.append(job)
    if not doomed:
        return 0
    txn = store.txn()
    purge(store, txn, doomed)
    catalog.sync_txn(store, txn)
    store.commit(txn)
    return len(doomed)


def purge(store: StateStore, txn: Txn, jobs: Iterable[Job]) -> None:
    for job in jobs:
        versions = [v.version for v in store.job_versions(job.id, job.namespace)]
        txn.delete_job(job.namespace, job.id, versions)
        for alloc in store.allocs_by_job(job.id, job.namespace):
            txn.delete_alloc(alloc.id)
        for ev in store.evals_by_job(job.id, job.namespace):
            txn.delete_eval(ev.id)
