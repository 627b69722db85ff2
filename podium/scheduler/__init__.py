"""The scheduler: a pure function from (snapshot, evaluation, now) to a plan.

``schedule`` reads an immutable :class:`Snapshot`, decides what should run
where, and returns a :class:`~podium.models.SchedulerResult`; it never writes,
does no I/O, and takes time and ids from its caller, so the same inputs always
give the same plan.  That is what lets ``job plan`` dry-run it, the plan
applier re-check it, and simulations replay it.  See README.md in this package
for the pipeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Protocol

from podium.models import EvalStatus, Evaluation, Plan, SchedulerResult
from podium.scheduler.generic import GenericScheduler, schedule_batch, schedule_service
from podium.scheduler.rank import default_candidate_limit
from podium.scheduler.snapshot import Snapshot
from podium.scheduler.system import schedule_system


class SchedulerFunc(Protocol):
    """What every job type's scheduler looks like (a system scheduler registers one too)."""

    def __call__(
        self,
        snapshot: Snapshot,
        evaluation: Evaluation,
        now: float,
        new_id: Callable[[], str],
        candidate_limit: int | None = None,
    ) -> SchedulerResult: ...


SCHEDULERS: dict[str, SchedulerFunc] = {
    "service": schedule_service,
    "batch": schedule_batch,
    "system": schedule_system,
}
"""Job type -> scheduler."""


def _uuid() -> str:
    return str(uuid.uuid4())


def schedule(
    snapshot: Snapshot,
    evaluation: Evaluation,
    now: float,
    *,
    new_id: Callable[[], str] = _uuid,
    candidate_limit: int | None = None,
) -> SchedulerResult:
    """Schedule one evaluation.

    ``now`` stamps every new object and decides which reschedule delays have
    passed; ``new_id`` names new allocations and evaluations (pass a counter
    for reproducible output).  ``candidate_limit`` overrides how many feasible
    nodes are scored per placement (default: log2 of the node count for
    services, 2 for batch jobs); benchmarks use it to weigh speed against fit.

    The job type comes from the job, or from the evaluation when the job has
    been purged.  A type without a scheduler fails the evaluation rather than
    raising, so one odd job cannot wedge a server's worker loop.
    """
    job = snapshot.job(evaluation.job_id, evaluation.namespace)
    job_type = job.spec.type.value if job is not None else evaluation.type
    scheduler = SCHEDULERS.get(job_type)
    if scheduler is None:
        return SchedulerResult(
            plan=Plan(
                eval_id=evaluation.id, job_id=evaluation.job_id, snapshot_index=snapshot.index
            ),
            eval_update=evaluation.model_copy(
                update={
                    "status": EvalStatus.FAILED,
                    "status_description": f"no scheduler for job type {job_type!r}",
                    "modify_time": now,
                }
            ),
        )
    return scheduler(snapshot, evaluation, now, new_id, candidate_limit)


__all__ = [
    "SCHEDULERS",
    "GenericScheduler",
    "SchedulerFunc",
    "Snapshot",
    "default_candidate_limit",
    "schedule",
]
