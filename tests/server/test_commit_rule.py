"""The plan applier and the scheduler's harness commit by one rule (podium.scheduler.commit).

The same cluster is held twice, in a server's real store and in a ``Harness``; each plan
is scheduled once, on the server's store, and handed to both committers.  Their verdicts
and every row they write must agree, and a plan that went stale on one node is refused
whole by both (before the shared rule, the harness committed the nodes that still fitted).
"""

from __future__ import annotations

from typing import Any

from podium.models import EvalStatus, JobSpec, PlanResult, SchedulerResult
from podium.scheduler import schedule
from podium.scheduler.harness import Harness, id_sequence, make_group, make_job, make_node
from podium.server.core import Server
from podium.state import StateStore

NOW = 1000.0
INDEXES = {"create_index", "modify_index"}


def twins() -> tuple[Server, Harness]:
    server = Server(StateStore(), clock=lambda: NOW)
    h = Harness(now=NOW)
    for name in ("a", "b", "c"):
        node = make_node(name, cpu=1000, memory=4096)
        server.register_node(node)
        h.add_node(node)
    return server, h


def plan(server: Server, h: Harness, spec: JobSpec, new_id: Any) -> SchedulerResult:
    """Register ``spec`` on both; the scheduler's result for the server's evaluation."""
    registered = server.register_job(spec)
    h.register(spec)
    ev = server.store.evaluation(registered.eval_id)
    assert ev is not None
    return schedule(server.store.view(), ev, NOW, new_id=new_id)


def commit_both(server: Server, h: Harness, result: SchedulerResult) -> PlanResult:
    outcome = server.applier.apply(result, NOW)
    twin = h.apply(result, now=NOW)
    assert twin.rejected_nodes == outcome.rejected_nodes
    assert twin.committed_placements == outcome.committed_placements
    assert twin.committed_stops == outcome.committed_stops
    return outcome


def rows(server: Server, h: Harness, job_id: str) -> None:
    """The job's allocations and evaluations are the same in both, but for the indexes
    (the server's store counts other writes too)."""
    ours = {a.id: a.model_dump(exclude=INDEXES) for a in server.store.allocs_by_job(job_id)}
    theirs = {a.id: a.model_dump(exclude=INDEXES) for a in h.allocs_by_job(job_id)}
    assert ours == theirs
    for ev in server.store.evals_by_job(job_id):
        twin = h.evals.get(ev.id)
        if ev.triggered_by == "job-register" and twin is None:
            continue  # the server's own registration eval: the harness stores it at commit
        assert twin is not None
        assert twin.model_dump(exclude=INDEXES) == ev.model_dump(exclude=INDEXES)


def test_both_committers_write_the_same_rows() -> None:
    server, h = twins()
    new_id = id_sequence("p")
    v1 = make_job("web", groups={"web": make_group(3, cpu=300, memory=256)})
    first = commit_both(server, h, plan(server, h, v1, new_id))
    assert first.committed_placements == 3
    rows(server, h, "web")
    # A destructive update: stops, replacements linked to their predecessors.
    v2 = make_job("web", groups={"web": make_group(3, cpu=250, memory=256)})
    second = commit_both(server, h, plan(server, h, v2, new_id))
    assert (second.committed_placements, second.committed_stops) == (3, 3)
    rows(server, h, "web")
    stopped = [a for a in h.allocs_by_job("web") if a.job_version == 0]
    assert stopped and all(a.next_allocation for a in stopped)


def test_a_plan_stale_on_one_node_is_refused_whole_by_both() -> None:
    server, h = twins()
    new_id = id_sequence("p")
    result = plan(server, h, make_job("web", count=3, cpu=600, memory=256), new_id)
    assert len({p.node_id for p in result.plan.placements}) == 3
    # Meanwhile another job's plan fills node b, in both.
    filler = make_job(
        "filler",
        count=1,
        cpu=900,
        memory=256,
        job_fields={"constraints": [{"attribute": "${node.name}", "value": "b"}]},
    )
    commit_both(server, h, plan(server, h, filler, new_id))
    index, h_index = server.store.index, h.index

    outcome = commit_both(server, h, result)
    assert outcome.rejected_nodes == ["node-b"]
    assert outcome.committed_placements == 0
    # Neither wrote anything: not the placements on a and c, not the eval's outcome.
    assert (server.store.index, h.index) == (index, h_index)
    assert server.store.allocs_by_job("web") == h.allocs_by_job("web") == []
    ev = server.store.evaluation(result.eval_update.id)
    assert ev is not None and ev.status == EvalStatus.PENDING
    assert result.eval_update.id not in h.evals
