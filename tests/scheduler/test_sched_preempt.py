"""Preemption in the pure scheduler (podium.scheduler.preempt), driven through the harness.

A node full of lower-priority allocations and a higher-priority job that fits nowhere:
which allocations are preempted (never within 10 priority points, never a higher job,
the smallest set by the documented order), that nothing is preempted when the type may
not preempt, that the commit rule refuses stale preemptions, and that the preempted
allocations' jobs get an evaluation that replaces them by their own policy.
"""

from __future__ import annotations

import pytest

from podium.models import ClientStatus, DesiredStatus, EvalStatus, JobType, TriggeredBy
from podium.models.schedconfig import PreemptionConfig
from podium.scheduler.harness import Harness, make_alloc, make_group, make_job, make_node
from podium.scheduler.preempt import PREEMPTED, Victim, choose_victims

NOW = 1000.0


def fill(h: Harness, node_id: str, job_id: str, priority: int, sizes: list[int]) -> list[str]:
    """A running job ``job_id`` of one group per size (cpu MHz; memory 64 MB each) with
    one allocation each on ``node_id``; its allocation ids."""
    groups = {f"g{i}": make_group(1, cpu=cpu, memory=64) for i, cpu in enumerate(sizes)}
    job = h.register(make_job(job_id, groups=groups, priority=priority))
    node = h.node(node_id)
    assert node is not None
    ids = []
    for i in range(len(sizes)):
        alloc_id = f"{job_id}-{i}"
        h.put_alloc(make_alloc(job, f"g{i}", 0, node, alloc_id=alloc_id, time=NOW - 100 + i))
        ids.append(alloc_id)
    return ids


def one_node(cpu: int = 1000, memory: int = 8192) -> Harness:
    h = Harness(now=NOW)
    h.add_node(make_node("a", cpu=cpu, memory=memory))
    return h


def submit(h: Harness, job_id: str, priority: int, cpu: int, count: int = 1, **kw: object) -> None:
    h.register(make_job(job_id, priority=priority, cpu=cpu, memory=64, count=count, **kw))


def settled(h: Harness) -> list[str]:
    """The nodes over-committed once the agents have acted (a preempted allocation holds
    its resources until its tasks exit, as any stopped one does)."""
    h.run_pending()
    return h.overcommitted()


def preempted(h: Harness) -> set[str]:
    return {a.id for a in h.allocs() if a.preempted_by_alloc is not None}


# -- the rules, table-driven ---------------------------------------------------------------

CASES = [
    # (what, victims: [(job, priority, [cpu sizes])], asking priority, asking cpu, expected)
    (
        "lowest priority first",
        [("low", 20, [250, 250]), ("mid", 40, [500])],
        70,
        500,
        {"low-0", "low-1"},
    ),
    ("margin exactly 10 preempts", [("v", 60, [1000])], 70, 500, {"v-0"}),
    ("margin 9 never preempts", [("v", 61, [1000])], 70, 500, set()),
    ("same priority never preempts", [("v", 70, [1000])], 70, 500, set()),
    ("higher priority never preempts", [("v", 90, [1000])], 70, 500, set()),
    ("fewest allocations", [("v", 20, [100, 100, 100, 300, 400])], 70, 300, {"v-3"}),
    (
        "lower priority beats fewer allocations",
        [("low", 20, [100, 100, 100]), ("mid", 30, [700])],
        70,
        300,
        {"low-0", "low-1", "low-2"},
    ),
    ("least overshoot among equals", [("v", 20, [500, 200, 300])], 70, 300, {"v-2"}),
    (
        "lower priority sum among equal counts",
        [("a", 20, [300]), ("b", 30, [300]), ("c", 40, [400])],
        70,
        700,
        {"a-0", "c-0"},
    ),
    ("cannot free enough: nothing", [("v", 20, [200]), ("w", 65, [800])], 70, 500, set()),
]


@pytest.mark.parametrize(
    ("victims", "priority", "cpu", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_service_preemption_rules(
    victims: list[tuple[str, int, list[int]]], priority: int, cpu: int, expected: set[str]
) -> None:
    h = one_node()
    h.set_preemption("service")
    for job_id, prio, sizes in victims:
        fill(h, "node-a", job_id, prio, sizes)
    submit(h, "urgent", priority, cpu)
    result = h.evaluate("urgent")
    assert {p.alloc_id for p in result.plan.preemptions} == expected
    assert preempted(h) == expected
    placed = result.plan.placements
    if expected:
        assert len(placed) == 1
        assert sorted(placed[0].preempted_allocations or []) == sorted(expected)
    else:
        assert placed == []
        assert result.eval_update.failed_tg_allocs  # queued, blocked: like any misfit
    assert settled(h) == []


def test_choose_victims_is_the_documented_order() -> None:
    """Pure: the highest priority, then count, then priority sum, then overshoot."""
    from podium.scheduler.harness import make_alloc as mk

    h = one_node()
    job = h.register(make_job("v", cpu=100, memory=64))
    node = h.node("node-a")
    assert node is not None

    def v(i: int, prio: int, cpu: int) -> Victim:
        a = mk(job, "v", i, node, alloc_id=f"x{i}")
        return Victim(
            a.model_copy(update={"resources": a.resources.model_copy(update={"cpu": cpu})}), prio
        )

    got = choose_victims([v(0, 10, 400), v(1, 10, 400), v(2, 20, 800)], 800, 0, 1000, 1000)
    assert got is not None
    assert sorted(x.alloc.id for x in got[1]) == ["x0", "x1"]  # priority 10 is enough
    got = choose_victims([v(0, 10, 400), v(2, 20, 800), v(3, 20, 500)], 800, 0, 1000, 1000)
    assert got is not None
    assert [x.alloc.id for x in got[1]] == ["x2"]  # priority 20 needed: then one alloc
    assert choose_victims([v(0, 10, 100)], 800, 0, 1000, 1000) is None


def test_budget_falls_back_to_greedy_and_still_frees_enough() -> None:
    h = one_node(cpu=100_000)
    h.set_preemption("service")
    fill(h, "node-a", "many", 20, [97 + (i % 7) for i in range(60)])
    fill(h, "node-a", "pad", 20, [100_000 - sum(97 + (i % 7) for i in range(60))])
    submit(h, "urgent", 70, 2_000)
    result = h.evaluate("urgent")
    freed = sum(p.cpu for p in result.plan.preemptions)
    assert freed >= 2_000
    assert len(result.plan.placements) == 1
    assert settled(h) == []


# -- per scheduler type --------------------------------------------------------------------


def test_disabled_config_never_preempts() -> None:
    h = one_node()
    h.set_preemption()  # nothing may preempt, system included
    fill(h, "node-a", "low", 10, [1000])
    submit(h, "urgent", 90, 500)
    h.register(make_job("sys", type=JobType.SYSTEM, priority=90, cpu=500, memory=64))
    assert h.evaluate("urgent").plan.preemptions == []
    assert h.evaluate("sys").plan.preemptions == []
    assert preempted(h) == set()


def test_defaults_are_nomads_system_only() -> None:
    assert PreemptionConfig().types() == ["system"]
    h = one_node()
    fill(h, "node-a", "low", 10, [1000])
    submit(h, "urgent", 90, 500)
    assert h.evaluate("urgent").plan.preemptions == []  # service: off by default
    h.register(make_job("sys", type=JobType.SYSTEM, priority=90, cpu=500, memory=64))
    result = h.evaluate("sys")
    assert [p.alloc_id for p in result.plan.preemptions] == ["low-0"]


def test_system_job_preempts_on_each_full_node() -> None:
    h = Harness(now=NOW)
    for name in ("a", "b", "c"):
        h.add_node(make_node(name, cpu=1000, memory=4096))
    fill(h, "node-a", "low", 20, [600, 300])
    fill(h, "node-b", "mid", 55, [900])  # within 10 of 60: kept
    submit(h, "batchy", 20, 100)  # room on c
    h.converge("batchy")
    h.register(make_job("agent", type=JobType.SYSTEM, priority=60, cpu=200, memory=64))
    result = h.evaluate("agent")
    assert [p.alloc_id for p in result.plan.preemptions] == ["low-1"]
    assert {a.node_id for a in result.plan.placements} == {"node-a", "node-c"}
    assert result.eval_update.failed_tg_allocs  # node b: no room, nothing preemptible
    assert settled(h) == []


def test_batch_preempts_only_when_enabled() -> None:
    h = one_node()
    fill(h, "node-a", "low", 10, [1000])
    submit(h, "crunch", 90, 500, type=JobType.BATCH)
    h.set_preemption("service")
    assert h.evaluate("crunch").plan.preemptions == []
    h.set_preemption("batch")
    assert [p.alloc_id for p in h.evaluate("crunch").plan.preemptions] == ["low-0"]


# -- what a preemption writes, and what follows ----------------------------------------------


def test_preempted_allocations_record_by_what_and_are_rescheduled() -> None:
    h = one_node()
    h.set_preemption("service")
    fill(h, "node-a", "low", 20, [400, 400])
    submit(h, "urgent", 70, 700)  # 200 free: both must go
    result = h.evaluate("urgent")
    new = result.plan.placements[0]
    victims = [h.alloc(p.alloc_id) for p in result.plan.preemptions]
    assert len(victims) == 2
    for v in victims:
        assert v.desired_status == DesiredStatus.STOP
        assert v.preempted_by_alloc == new.id
        assert v.preempted_by_job == "urgent"
        assert v.desired_description.startswith(PREEMPTED)
        assert new.id in v.desired_description and "urgent" in v.desired_description
    assert "preempted 2 allocations" in result.eval_update.status_description
    # the victims' job gets an evaluation of its own...
    (follow,) = [e for e in result.new_evals if e.job_id == "low"]
    assert follow.triggered_by == TriggeredBy.PREEMPTION
    assert follow.status == EvalStatus.PENDING
    assert h.evals[follow.id].status == EvalStatus.PENDING
    # ...which, while the node is full, queues the replacements and blocks
    h.run_pending()
    again = h.run_eval(h.evals[follow.id])
    assert again.plan.placements == []
    assert sum(again.eval_update.queued_allocations.values()) == 2
    blocked = [e for e in h.evals.values() if e.job_id == "low" and e.status == EvalStatus.BLOCKED]
    assert len(blocked) == 1
    # room appears: the blocked evaluation places them, linked to what they replace
    h.add_node(make_node("b", cpu=1000, memory=8192))
    placed = h.run_eval(blocked[0]).plan.placements
    assert len(placed) == 2
    assert {a.node_id for a in placed} == {"node-b"}
    assert {a.previous_allocation for a in placed} == {v.id for v in victims}
    assert h.converge("low")[-1].plan.empty()
    assert h.converge("urgent")[-1].plan.empty()


def test_preemption_places_elsewhere_when_room_exists() -> None:
    """A preempted allocation whose job finds room on another node moves there at once."""
    h = Harness(now=NOW)
    h.add_node(make_node("a", cpu=1000, memory=8192))
    fill(h, "node-a", "low", 20, [1000])
    h.set_preemption("service")
    submit(h, "urgent", 70, 1000, constraints=[{"attribute": "${node.name}", "value": "a"}])
    result = h.evaluate("urgent")
    assert [p.alloc_id for p in result.plan.preemptions] == ["low-0"]
    h.add_node(make_node("b", cpu=1000, memory=8192))
    (follow,) = [e for e in result.new_evals if e.job_id == "low"]
    placed = h.run_eval(h.evals[follow.id]).plan.placements
    assert [(a.node_id, a.previous_allocation) for a in placed] == [("node-b", "low-0")]


def test_plan_is_deterministic() -> None:
    def once() -> list[str]:
        h = one_node()
        h.set_preemption("service")
        fill(h, "node-a", "low", 20, [200] * 5)
        submit(h, "urgent", 70, 400)
        return [p.alloc_id for p in h.evaluate("urgent").plan.preemptions]

    first = once()
    assert len(first) == 2
    assert all(once() == first for _ in range(3))


def test_two_placements_never_preempt_the_same_allocation() -> None:
    h = one_node()
    h.set_preemption("service")
    fill(h, "node-a", "low", 20, [250, 250, 250, 250])
    submit(h, "urgent", 70, 250, count=3)
    result = h.evaluate("urgent")
    ids = [p.alloc_id for p in result.plan.preemptions]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert len(result.plan.placements) == 3
    assert settled(h) == []


# -- the commit rule ----------------------------------------------------------------------


STALE = {
    "victim finished": lambda h: h.client_update("low-0", ClientStatus.COMPLETE),
    "victim stopped": lambda h: h.put_alloc(
        h.alloc("low-0").model_copy(update={"desired_status": DesiredStatus.STOP})
    ),
    "victim's job raised its priority": lambda h: h.register(
        make_job("low", groups={"g0": make_group(1, cpu=1000, memory=64)}, priority=65)
    ),
    "victim moved": lambda h: h.put_alloc(
        h.alloc("low-0").model_copy(update={"node_id": "node-b"})
    ),
}


@pytest.mark.parametrize("change", list(STALE.values()), ids=list(STALE))
def test_commit_refuses_stale_preemptions(change: object) -> None:
    from podium.scheduler import schedule
    from podium.scheduler.harness import make_eval

    h = one_node()
    h.add_node(make_node("b", cpu=10, memory=10))
    h.set_preemption("service")
    fill(h, "node-a", "low", 20, [1000])
    submit(h, "urgent", 70, 500)
    result = schedule(h, make_eval("urgent", eval_id="ev-1", priority=70), NOW, new_id=h.new_id)
    assert [p.alloc_id for p in result.plan.preemptions] == ["low-0"]
    change(h)  # type: ignore[operator]
    changed = h.index
    outcome = h.apply(result)
    assert outcome.rejected_nodes == ["node-a"]
    assert h.index == changed  # nothing of the plan was written
    assert h.alloc("low-0").preempted_by_alloc is None
    assert h.live("urgent") == []


def test_commit_accepts_a_fresh_preemption_and_counts_it() -> None:
    h = one_node()
    h.set_preemption("service")
    fill(h, "node-a", "low", 20, [1000])
    submit(h, "urgent", 70, 500)
    h.evaluate("urgent")
    assert h.plan_results[-1].committed_preemptions == 1
    assert h.plan_results[-1].rejected_nodes == []


def test_between_nodes_the_same_order_decides() -> None:
    """Node a could free room with one priority-30 allocation; node b with two of priority
    20: b wins (lowest highest-priority first).  Between equal sets, the lower node id."""
    h = Harness(now=NOW)
    for name in ("a", "b", "c"):
        h.add_node(make_node(name, cpu=1000, memory=8192))
    h.set_preemption("service")
    fill(h, "node-a", "mid", 30, [1000])
    fill(h, "node-b", "low", 20, [500, 500])
    fill(h, "node-c", "mid2", 30, [1000])
    submit(h, "urgent", 70, 800)
    result = h.evaluate("urgent")
    assert {p.alloc_id for p in result.plan.preemptions} == {"low-0", "low-1"}
    assert result.plan.placements[0].node_id == "node-b"
    # b is now taken by urgent; the next one must use a or c: equal sets, a wins
    submit(h, "urgent2", 70, 800)
    result = h.evaluate("urgent2")
    assert [p.alloc_id for p in result.plan.preemptions] == ["mid-0"]
    assert result.plan.placements[0].node_id == "node-a"


def test_job_plan_dry_run_lists_preemptions_and_commits_nothing() -> None:
    """``job plan``'s dry run (podium.server.jobplan.plan_job) over the harness: the
    candidate's preemptions are in the answer; the harness is left as it was."""
    from podium.models import next_job
    from podium.scheduler.harness import make_eval
    from podium.server.jobplan import plan_job

    h = one_node()
    h.set_preemption("service")
    fill(h, "node-a", "low", 20, [400, 400])
    index = h.index
    spec = make_job("urgent", priority=70, cpu=700, memory=64)
    candidate, _ = next_job(spec, None, index + 1, NOW)
    ev = make_eval("urgent", eval_id="plan-ev", priority=70)
    answer = plan_job(h, None, candidate, ev, NOW, new_id=h.new_id, diff=False)
    assert sorted(p.alloc_id for p in answer.preemptions) == ["low-0", "low-1"]
    assert {p.preempted_by_job for p in answer.preemptions} == {"urgent"}
    assert h.index == index
    assert preempted(h) == set()
    assert h.job("urgent") is None
