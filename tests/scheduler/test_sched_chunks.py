"""One evaluation places at most MAX_PLACEMENTS new allocations; a follow-up goes on.

A job at the largest allowed count must not become one plan that holds the server's event
loop for seconds (issue 14): the scheduler stops at the cap and leaves a pending follow-up
evaluation, and evaluations run one after another until everything is placed, each
placement exactly once.
"""

from __future__ import annotations

from podium.models import EvalStatus, TriggeredBy
from podium.scheduler.generic import MAX_PLACEMENTS
from podium.scheduler.harness import Harness, make_job

NOW = 1000.0


def _run_chain(h: Harness, job_id: str) -> list[int]:
    """Evaluate ``job_id``, then every pending follow-up it leaves; placements per plan."""
    sizes = []
    result = h.evaluate(job_id, now=NOW)
    sizes.append(len(result.plan.placements))
    while True:
        follow = [
            e
            for e in result.new_evals
            if e.status == EvalStatus.PENDING and e.triggered_by == TriggeredBy.QUEUED_ALLOCS
        ]
        if not follow:
            return sizes
        assert len(follow) == 1
        result = h.run_eval(follow[0], now=NOW)
        sizes.append(len(result.plan.placements))


def test_a_big_service_job_is_placed_in_bounded_plans() -> None:
    count = 2 * MAX_PLACEMENTS + 500
    h = Harness()
    h.add_nodes(50, cpu=100_000, memory=100_000)
    h.register(make_job("big", count=count, cpu=10, memory=10))
    first = h.evaluate("big", now=NOW)
    assert len(first.plan.placements) == MAX_PLACEMENTS
    assert first.eval_update.failed_tg_allocs == {}  # deferred is not failed
    assert first.eval_update.blocked_eval is None
    assert first.eval_update.queued_allocations == {"big": count - MAX_PLACEMENTS}
    assert "follow-up evaluation" in first.eval_update.status_description
    (follow,) = first.new_evals
    assert follow.status == EvalStatus.PENDING and follow.previous_eval == first.eval_update.id
    second = h.run_eval(follow, now=NOW)
    third = h.run_eval(second.new_evals[0], now=NOW)
    assert [len(r.plan.placements) for r in (second, third)] == [MAX_PLACEMENTS, 500]
    assert third.new_evals == []
    names = [a.name for a in h.allocs_by_job("big", "default")]
    assert len(names) == len(set(names)) == count


def test_a_system_job_on_many_nodes_is_placed_in_bounded_plans() -> None:
    nodes = MAX_PLACEMENTS + 300
    h = Harness()
    h.add_nodes(nodes)
    h.register(make_job("agent", type="system", cpu=10, memory=10))
    sizes = _run_chain(h, "agent")
    assert sizes == [MAX_PLACEMENTS, 300]
    placed = {a.node_id for a in h.allocs_by_job("agent", "default")}
    assert len(placed) == nodes
