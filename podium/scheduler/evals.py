"""The evaluations a scheduler run leaves behind for its job: blocked (waits for
capacity), continued (one evaluation places at most MAX_PLACEMENTS), and those of jobs that
lost allocations to preemption.  One constructor, so they differ only in why."""

from __future__ import annotations

from podium.models import EvalStatus, Evaluation, Job, TriggeredBy


def follow_up_eval(
    job: Job,
    cause: Evaluation,
    eval_id: str,
    now: float,
    *,
    triggered_by: TriggeredBy,
    status: EvalStatus,
    why: str,
) -> Evaluation:
    """A new evaluation of ``job``, made by ``cause``, at ``now``."""
    return Evaluation(
        id=eval_id,
        namespace=job.namespace,
        priority=job.priority,
        type=job.spec.type.value,
        triggered_by=triggered_by,
        job_id=job.id,
        job_modify_index=job.job_modify_index,
        status=status,
        status_description=why,
        previous_eval=cause.id,
        create_time=now,
        modify_time=now,
    )
