"""``job plan``: what registering a spec would do, worked out without writing anything.

The real scheduler runs on a :class:`CandidateSnapshot`: the store's snapshot
in which the job answers with the candidate version (as
:meth:`podium.server.core.Server.register_job` would store it) although
nothing was committed.  The evaluation it schedules is built but never stored
or enqueued, and the resulting plan is read, not applied, so a plan leaves the
store index, the evaluations and the broker exactly as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from podium.models import Evaluation, Job, JobSpec, JobVersion
from podium.models.diff import job_diff
from podium.models.views import JobPlanResult
from podium.scheduler import Snapshot, schedule


class CandidateSnapshot:
    """A snapshot that answers ``job()`` and ``job_spec()`` with an uncommitted version.

    Everything else is the base snapshot's (``__getattr__`` passes it on), so
    the scheduler sees the cluster exactly as a worker would right after the
    registration.
    """

    def __init__(self, base: Snapshot, job: Job) -> None:
        self._base = base
        self._job = job

    def _mine(self, job_id: str, namespace: str) -> bool:
        return job_id == self._job.id and namespace == self._job.namespace

    @property
    def index(self) -> int:
        return self._base.index

    def job(self, job_id: str, namespace: str = "default") -> Job | None:
        if self._mine(job_id, namespace):
            return self._job
        return self._base.job(job_id, namespace)

    def job_spec(self, job_id: str, version: int, namespace: str = "default") -> JobSpec | None:
        if self._mine(job_id, namespace) and version == self._job.version:
            return self._job.spec
        return self._base.job_spec(job_id, version, namespace)

    def job_versions(self, job_id: str, namespace: str = "default") -> list[JobVersion]:
        older: list[JobVersion] = getattr(self._base, "job_versions")(job_id, namespace)  # noqa: B009
        if not self._mine(job_id, namespace):
            return older
        candidate = JobVersion(
            job_id=self._job.id,
            namespace=self._job.namespace,
            version=self._job.version,
            spec=self._job.spec,
            submit_time=self._job.submit_time,
            modify_index=self._job.modify_index,
        )
        return [candidate, *(v for v in older if v.version != self._job.version)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def plan_job(
    base: Snapshot,
    current: Job | None,
    candidate: Job,
    evaluation: Evaluation,
    now: float,
    *,
    new_id: Callable[[], str],
    diff: bool = True,
) -> JobPlanResult:
    """Run the scheduler on ``candidate`` registered over ``base``; commit nothing.

    ``current`` is the job as stored (None: a new job), ``candidate`` the job
    as registration would store it, ``evaluation`` the job-register evaluation
    registration would create (never stored).
    """
    snap = CandidateSnapshot(base, candidate)
    result = schedule(snap, evaluation, now, new_id=new_id)
    ev = result.eval_update
    changed = current is None or current.stop or current.spec != candidate.spec
    return JobPlanResult(
        job_id=candidate.id,
        index=base.index,
        job_modify_index=current.job_modify_index if current is not None else 0,
        version=candidate.version,
        changed=changed,
        diff=(
            job_diff(
                current.spec if current is not None else None,
                candidate.spec,
                old_stopped=current.stop if current is not None else False,
            )
            if diff
            else None
        ),
        changes=result.plan.changes,
        failed_tg_allocs=ev.failed_tg_allocs,
        queued_allocations={g: n for g, n in ev.queued_allocations.items() if n},
        notes=ev.status_description,
        preemptions=result.plan.preemptions,
    )
