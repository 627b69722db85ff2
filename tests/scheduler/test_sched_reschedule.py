"""Rescheduling failed allocations: now, later (follow-up evals), backoff, exhaustion."""

from __future__ import annotations

import pytest

from podium.models import (
    Allocation,
    ClientStatus,
    DesiredStatus,
    EvalStatus,
    JobType,
    RescheduleEvent,
    ReschedulePolicy,
    Resources,
    TriggeredBy,
)
from podium.scheduler.harness import Harness, make_eval, make_group, make_job, make_node
from podium.scheduler.reconcile import (
    RESCHEDULED,
    decide_reschedule,
    reschedule_delay,
    reschedule_eligible,
)

T0 = 1000.0


def failed_service(
    count: int = 1, policy: ReschedulePolicy | None = None
) -> tuple[Harness, Allocation]:
    """A running service whose first allocation failed at T0."""
    h = Harness(now=T0 - 100)
    h.add_nodes(3)
    h.register(make_job("web", groups={"web": make_group(count, reschedule=policy)}))
    h.converge("web")
    alloc = h.client_update(h.live("web")[0].id, ClientStatus.FAILED, now=T0)
    return h, alloc


def test_reschedule_later_creates_a_follow_up_eval_once() -> None:
    h, failed = failed_service()  # service default: 30s, exponential, unlimited

    result = h.evaluate("web", triggered_by=TriggeredBy.ALLOC_FAILURE, now=T0 + 10)

    (followup,) = result.new_evals
    assert followup.triggered_by == TriggeredBy.RESCHEDULE
    assert followup.status == EvalStatus.PENDING
    assert followup.wait_until == T0 + 30
    assert followup.job_id == "web"
    assert followup.previous_eval == result.eval_update.id
    (update,) = result.plan.placements
    assert update.id == failed.id
    assert update.followup_eval_id == followup.id
    assert update.modify_time == T0  # still the failure time the delay counts from
    assert result.plan.stops == []
    assert result.plan.changes["web"].reschedule_later == 1
    assert result.eval_update.blocked_eval is None

    # Another eval before the time: nothing new, the follow-up is already waiting.
    again = h.evaluate("web", now=T0 + 20)
    assert again.plan.empty()
    assert again.new_evals == []

    # The follow-up eval, when due, reschedules it.
    assert h.due_evals(now=T0 + 29) == []
    # stored as the plan applier stores it: stamped with the index of its commit
    assert [e.id for e in h.due_evals(now=T0 + 30)] == [followup.id]
    done = h.run_eval(followup, now=T0 + 30)
    (stop,) = done.plan.stops
    assert (stop.alloc_id, stop.description) == (failed.id, RESCHEDULED)
    (replacement,) = done.plan.placements
    assert replacement.index == failed.index
    assert replacement.previous_allocation == failed.id
    assert replacement.reschedule_events == [
        RescheduleEvent(
            time=T0 + 30, prev_alloc_id=failed.id, prev_node_id=failed.node_id, delay=30.0
        )
    ]
    assert done.plan.changes["web"].reschedule_now == 1
    assert h.alloc(failed.id).desired_status == DesiredStatus.STOP
    assert h.alloc(failed.id).next_allocation == replacement.id


def test_reschedule_now_when_the_delay_has_passed() -> None:
    h, failed = failed_service()
    result = h.evaluate("web", now=T0 + 30)
    assert result.new_evals == []
    assert [s.alloc_id for s in result.plan.stops] == [failed.id]
    (replacement,) = result.plan.placements
    assert replacement.previous_allocation == failed.id
    ch = result.plan.changes["web"]
    assert (ch.reschedule_now, ch.place, ch.ignore) == (1, 1, 0)
    h.run_pending(now=T0 + 30)
    assert h.evaluate("web", now=T0 + 31).plan.empty()


def test_exponential_delay_doubles_per_previous_reschedule() -> None:
    h, failed = failed_service()
    first = h.evaluate("web", now=T0 + 30).plan.placements[0]
    h.run_pending(now=T0 + 30)
    h.client_update(first.id, ClientStatus.FAILED, now=T0 + 100)

    later = h.evaluate("web", now=T0 + 110)
    assert later.new_evals[0].wait_until == T0 + 100 + 60

    now = h.evaluate("web", now=T0 + 160)
    (second,) = now.plan.placements
    assert [e.delay for e in second.reschedule_events] == [30.0, 60.0]
    assert [e.prev_alloc_id for e in second.reschedule_events] == [failed.id, first.id]


def test_reschedule_delay_functions() -> None:
    def alloc_with(n_events: int) -> Allocation:
        return Allocation(
            id="a",
            eval_id="e",
            name="j.g[0]",
            job_id="j",
            job_version=0,
            group="g",
            index=0,
            node_id="n",
            resources=Resources(),
            reschedule_events=[
                RescheduleEvent(time=float(i), prev_alloc_id=f"p{i}", prev_node_id="n", delay=1.0)
                for i in range(n_events)
            ],
        )

    exp = ReschedulePolicy(delay=10.0, delay_function="exponential", max_delay=25.0)
    assert reschedule_delay(exp, alloc_with(0)) == 10.0
    assert reschedule_delay(exp, alloc_with(1)) == 20.0
    assert reschedule_delay(exp, alloc_with(2)) == 25.0  # capped
    assert reschedule_delay(exp, alloc_with(500)) == 25.0  # no overflow
    const = ReschedulePolicy(delay=7.0, delay_function="constant", max_delay=1.0)
    assert reschedule_delay(const, alloc_with(3)) == 7.0


def test_attempts_count_only_within_the_interval() -> None:
    policy = ReschedulePolicy(attempts=2, interval=100.0, unlimited=False, delay=0.0)

    def failed_at(time: float, events: list[float]) -> Allocation:
        return Allocation(
            id="a",
            eval_id="e",
            name="j.g[0]",
            job_id="j",
            job_version=0,
            group="g",
            index=0,
            node_id="n",
            resources=Resources(),
            client_status=ClientStatus.FAILED,
            modify_time=time,
            reschedule_events=[
                RescheduleEvent(time=t, prev_alloc_id="p", prev_node_id="n", delay=0.0)
                for t in events
            ],
        )

    assert reschedule_eligible(policy, failed_at(500.0, [450.0]))
    assert not reschedule_eligible(policy, failed_at(500.0, [420.0, 450.0]))
    assert reschedule_eligible(policy, failed_at(500.0, [100.0, 450.0]))  # one aged out
    assert not reschedule_eligible(ReschedulePolicy(attempts=0, unlimited=False), failed_at(0, []))
    assert reschedule_eligible(ReschedulePolicy(attempts=0, unlimited=True), failed_at(0, [1, 2]))
    decision = decide_reschedule(failed_at(500.0, [420.0, 450.0]), policy, 1e9, "e")
    assert decision.when == "exhausted"


def test_attempts_exhausted_leaves_it_failed_and_says_so() -> None:
    h = Harness(now=T0 - 100)
    h.add_nodes(2)
    h.register(make_job("etl", type=JobType.BATCH, count=1))  # batch: 1 attempt per day, 5s
    h.converge("etl")
    first = h.client_update(h.live("etl")[0].id, ClientStatus.FAILED, now=T0)
    replacement = h.evaluate("etl", now=T0 + 5).plan.placements[0]
    assert replacement.previous_allocation == first.id
    h.run_pending(now=T0 + 5)
    h.client_update(replacement.id, ClientStatus.FAILED, now=T0 + 50)

    result = h.evaluate("etl", now=T0 + 1000)

    assert result.plan.empty()
    assert result.new_evals == []
    assert result.eval_update.status == EvalStatus.COMPLETE
    assert result.eval_update.status_description == (
        "group etl: 1 failed allocation not rescheduled (reschedule attempts exhausted)"
    )
    assert result.plan.changes["etl"].ignore == 1
    assert h.alloc(replacement.id).client_status == ClientStatus.FAILED

    # The window is measured back from the failure, so waiting does not help.
    assert h.evaluate("etl", now=T0 + 10 * 86400).plan.empty()


def test_failures_close_together_share_one_follow_up() -> None:
    h = Harness(now=T0 - 100)
    h.add_nodes(3)
    h.register(make_job("web", count=3))
    h.converge("web")
    a, b, c = h.live("web")
    h.client_update(a.id, ClientStatus.FAILED, now=T0)
    h.client_update(b.id, ClientStatus.FAILED, now=T0 + 2)
    h.client_update(c.id, ClientStatus.FAILED, now=T0 + 20)

    result = h.evaluate("web", now=T0 + 21)

    assert [e.wait_until for e in result.new_evals] == [T0 + 30, T0 + 50]
    by_id = {u.id: u.followup_eval_id for u in result.plan.placements}
    assert by_id[a.id] == by_id[b.id] == result.new_evals[0].id
    assert by_id[c.id] == result.new_evals[1].id
    assert result.plan.changes["web"].reschedule_later == 3

    # The shared follow-up reschedules both, even b whose own time is 2s later.
    first = h.run_eval(result.new_evals[0], now=T0 + 30)
    assert sorted(p.previous_allocation or "" for p in first.plan.placements) == sorted(
        [a.id, b.id]
    )
    assert first.plan.changes["web"].ignore == 1  # c still waits for its own follow-up


@pytest.mark.parametrize("job_type", [JobType.SERVICE, JobType.BATCH])
def test_reschedule_replacement_does_not_fit_keeps_failed_alloc(job_type: JobType) -> None:
    h = Harness(now=T0 - 100)
    node = h.add_node(make_node("a", memory=1000))
    h.register(make_job("web", type=job_type, count=1, memory=600))
    h.converge("web")
    failed = h.client_update(h.live("web")[0].id, ClientStatus.FAILED, now=T0)
    hog = h.register(make_job("hog", memory=500))
    h.converge(hog.id)
    assert [a.node_id for a in h.live("hog")] == [node.id]

    result = h.evaluate("web", now=T0 + 3600)

    assert result.plan.stops == []  # the failed allocation is not stopped without a successor
    assert result.plan.placements == []
    assert result.eval_update.queued_allocations == {"web": 1}
    assert result.new_evals[0].status == EvalStatus.BLOCKED
    assert h.alloc(failed.id).desired_status == DesiredStatus.RUN


def test_a_cancelled_follow_up_is_replaced_so_the_allocation_is_not_forgotten() -> None:
    h, failed = failed_service()
    first = h.evaluate("web", triggered_by=TriggeredBy.ALLOC_FAILURE, now=T0 + 10)
    (followup,) = first.new_evals
    # the broker superseded the follow-up with another evaluation of the job
    h.evals[followup.id] = followup.model_copy(update={"status": EvalStatus.CANCELED})

    again = h.evaluate("web", now=T0 + 20)

    (new_followup,) = again.new_evals
    assert new_followup.id != followup.id
    assert new_followup.wait_until == T0 + 30
    (update,) = again.plan.placements
    assert update.id == failed.id and update.followup_eval_id == new_followup.id


def test_a_forced_evaluation_replaces_failed_allocations_the_policy_gave_up_on() -> None:
    """``podium compose up`` again after a failure: the register's evaluation carries
    ``force_reschedule``, so a failed allocation is replaced now, past its policy and delay."""
    h, failed = failed_service(policy=ReschedulePolicy(attempts=0, unlimited=False))
    assert h.evaluate("web", now=T0 + 1).plan.placements == []  # the policy says never

    forced = make_eval("web", eval_id=h.new_id(), now=T0 + 2).model_copy(
        update={"force_reschedule": True}
    )
    result = h.run_eval(forced, now=T0 + 2)

    (stop,) = result.plan.stops
    assert (stop.alloc_id, stop.description) == (failed.id, RESCHEDULED)
    (replacement,) = result.plan.placements
    assert (replacement.index, replacement.previous_allocation) == (failed.index, failed.id)
    assert result.plan.changes["web"].reschedule_now == 1
    assert result.new_evals == []


def test_a_forced_evaluation_does_not_wait_out_the_reschedule_delay() -> None:
    h, failed = failed_service()  # service default: a 30s delay
    forced = make_eval("web", eval_id=h.new_id(), now=T0 + 1).model_copy(
        update={"force_reschedule": True}
    )
    result = h.run_eval(forced, now=T0 + 1)
    assert [p.previous_allocation for p in result.plan.placements] == [failed.id]
    assert result.new_evals == []  # no follow-up: it is replaced now
