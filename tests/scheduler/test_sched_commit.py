"""The harness commits by the plan applier's rule (podium.scheduler.commit): all or nothing.

A plan that no longer fits on one of its nodes is refused whole, evaluation outcome
included, and ``run_eval`` re-plans it as the server's worker does.  The same verdict
from the real applier over a real store is checked in tests/server/test_commit_rule.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from podium.models import EvalStatus, Evaluation, SchedulerResult
from podium.scheduler import harness as harness_module
from podium.scheduler import schedule
from podium.scheduler.commit import PLAN_ATTEMPTS
from podium.scheduler.harness import (
    Harness,
    id_sequence,
    make_alloc,
    make_eval,
    make_job,
    make_node,
)


def two_node_cluster() -> tuple[Harness, SchedulerResult]:
    """Two nodes that each fit one 600 MHz instance of ``web``, and a plan placing one
    on each; then another commit (a ``filler`` instance) takes node b before the plan
    is applied."""
    h = Harness()
    a = h.add_node(make_node("a", cpu=1000, memory=4096))
    b = h.add_node(make_node("b", cpu=1000, memory=4096))
    h.register(make_job("web", count=2, cpu=600, memory=256))
    filler = h.register(make_job("filler", count=1, cpu=900, memory=256))
    result = schedule(h, make_eval("web", eval_id="eval-web"), h.now, new_id=id_sequence("p"))
    assert sorted(p.node_id for p in result.plan.placements) == [a.id, b.id]
    h.put_alloc(make_alloc(filler, "filler", 0, b, alloc_id="filler-0"))
    return h, result


def test_a_plan_that_no_longer_fits_on_one_node_commits_nothing() -> None:
    h, result = two_node_cluster()
    index = h.index
    outcome = h.apply(result)
    assert outcome.rejected_nodes == ["node-b"]
    # Nothing of the plan was written: not the placement that still fitted on node a,
    # not the evaluation's outcome, and the index did not move.
    assert outcome.committed_placements == 0
    assert h.allocs_by_job("web") == []
    assert h.allocs_by_node("node-a") == []
    assert "eval-web" not in h.evals
    assert h.index == index == outcome.index
    assert h.overcommitted() == []


def test_an_accepted_plan_commits_whole_at_one_index() -> None:
    h = Harness()
    h.add_nodes(2, cpu=1000, memory=4096)
    h.register(make_job("web", count=2, cpu=600, memory=256))
    result = h.evaluate("web")
    outcome = h.plan_results[-1]
    assert outcome.rejected_nodes == []
    assert outcome.committed_placements == 2
    allocs = h.allocs_by_job("web")
    assert {a.create_index for a in allocs} == {a.modify_index for a in allocs} == {outcome.index}
    stored = h.evals[result.eval_update.id]
    assert stored.status == EvalStatus.COMPLETE
    assert stored.modify_index == outcome.index == h.index


def _stale_once(h: Harness, times: int) -> Callable[..., SchedulerResult]:
    """``schedule`` as another worker racing this one sees it: after each of the first
    ``times`` plans, a commit of another job takes one node the plan placed on."""
    real = harness_module.schedule
    calls = {"n": 0}

    def racing(*args: Any, **kwargs: Any) -> SchedulerResult:
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] <= times and result.plan.placements:
            node = h.node(result.plan.placements[-1].node_id)
            assert node is not None
            filler = h.register(make_job(f"filler{calls['n']}", count=1, cpu=900, memory=256))
            h.put_alloc(make_alloc(filler, filler.id, 0, node, alloc_id=f"filler-{calls['n']}"))
        return result

    return racing


def test_run_eval_replans_a_stale_plan_on_the_latest_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()
    h.add_nodes(3, cpu=1000, memory=4096)
    h.register(make_job("web", count=2, cpu=600, memory=256))
    monkeypatch.setattr(harness_module, "schedule", _stale_once(h, 1))
    result = h.evaluate("web")
    first, second = h.plan_results
    assert first.rejected_nodes and first.committed_placements == 0
    assert second.rejected_nodes == [] and second.committed_placements == 2
    # The second plan avoided the node the racing commit took.
    taken = h.alloc("filler-1").node_id
    assert taken not in {a.node_id for a in h.live("web")}
    assert h.evals[result.eval_update.id].status == EvalStatus.COMPLETE
    assert h.overcommitted() == []


def test_run_eval_fails_the_evaluation_when_every_plan_goes_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()
    h.add_nodes(PLAN_ATTEMPTS + 2, cpu=1000, memory=4096)
    h.register(make_job("web", count=2, cpu=600, memory=256))
    monkeypatch.setattr(harness_module, "schedule", _stale_once(h, PLAN_ATTEMPTS))
    ev: Evaluation = make_eval("web", eval_id="eval-web", now=h.now)
    h.run_eval(ev)
    assert [bool(r.rejected_nodes) for r in h.plan_results] == [True] * PLAN_ATTEMPTS
    assert h.live("web") == []
    failed = h.evals["eval-web"]
    assert failed.status == EvalStatus.FAILED
    assert failed.status_description == (
        f"plan rejected {PLAN_ATTEMPTS} times: the cluster kept changing"
    )
