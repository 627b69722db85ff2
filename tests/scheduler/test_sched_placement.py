"""Placement: feasibility, ranking, failure reporting and blocked evaluations."""

from __future__ import annotations

from collections import Counter

import pytest

from podium.models import (
    ClientStatus,
    DesiredStatus,
    Eligibility,
    EvalStatus,
    JobType,
    NodeStatus,
    Resources,
    TriggeredBy,
)
from podium.scheduler import SCHEDULERS, default_candidate_limit, schedule
from podium.scheduler.harness import (
    Harness,
    id_sequence,
    make_alloc,
    make_eval,
    make_group,
    make_job,
    make_node,
)
from podium.scheduler.rank import NodeOrder, binpack_score, with_anti_affinity

NOW = 1000.0


def per_node(h: Harness, job_id: str) -> Counter[str]:
    return Counter(a.node_name for a in h.live(job_id))


def test_places_count_on_one_node_with_full_allocation_fields() -> None:
    h = Harness()
    h.add_node(make_node("solo"))
    h.register(make_job("web", count=3, cpu=150, memory=200, tasks=2))

    result = h.evaluate("web", now=NOW)

    plan = result.plan
    assert [a.name for a in plan.placements] == ["web.web[0]", "web.web[1]", "web.web[2]"]
    assert plan.stops == []
    assert plan.changes["web"].place == 3
    for index, alloc in enumerate(plan.placements):
        assert alloc.index == index
        assert alloc.eval_id == result.eval_update.id
        assert alloc.job_id == "web"
        assert alloc.job_version == 0
        assert alloc.group == "web"
        assert (alloc.node_id, alloc.node_name) == ("node-solo", "solo")
        assert alloc.resources == Resources(cpu=300, memory=400)
        assert alloc.task_resources == {
            "task": Resources(cpu=150, memory=200),
            "task1": Resources(cpu=150, memory=200),
        }
        assert alloc.desired_status == DesiredStatus.RUN
        assert alloc.client_status == ClientStatus.PENDING
        assert alloc.create_time == alloc.modify_time == NOW
        assert alloc.previous_allocation is None
    assert len({a.id for a in plan.placements}) == 3
    ev = result.eval_update
    assert ev.status == EvalStatus.COMPLETE
    assert ev.status_description == ""
    assert ev.failed_tg_allocs == {}
    assert ev.queued_allocations == {"web": 0}
    assert ev.plan_summary["place"] == 3
    assert ev.plan_summary["queued"] == 0
    assert ev.modify_time == NOW
    assert result.new_evals == []
    assert plan.job_version == 0
    assert plan.snapshot_index == h.index - 1  # the apply bumped it once


def test_places_on_many_nodes_one_per_node_when_equal() -> None:
    h = Harness()
    h.add_nodes(10)
    h.register(make_job("web", count=10))
    h.evaluate("web")
    assert sorted(per_node(h, "web").values()) == [1] * 10


@pytest.mark.parametrize(("nodes", "count"), [(3, 3), (3, 6), (4, 8), (5, 12), (7, 7)])
def test_replicas_spread_across_equal_nodes(nodes: int, count: int) -> None:
    h = Harness()
    h.add_nodes(nodes)
    h.register(make_job("web", count=count))
    h.evaluate("web")
    spread = per_node(h, "web")
    assert len(spread) == nodes
    assert max(spread.values()) - min(spread.values()) <= 1


def test_scoring_every_node_spreads_exactly() -> None:
    h = Harness()
    h.add_nodes(16)
    h.register(make_job("web", count=16))
    h.evaluate("web", candidate_limit=0)
    assert sorted(per_node(h, "web").values()) == [1] * 16


def test_bin_packing_prefers_the_fuller_node() -> None:
    h = Harness()
    empty, busy = h.add_node(make_node("empty")), h.add_node(make_node("busy"))
    other = h.register(make_job("other", cpu=2000, memory=4000))
    h.put_alloc(make_alloc(other, "other", 0, busy, alloc_id="other-0"))
    h.register(make_job("web", count=1, cpu=500, memory=512))

    result = h.evaluate("web")

    assert [a.node_name for a in result.plan.placements] == ["busy"]
    assert empty.name not in per_node(h, "web")


def test_bin_packing_with_every_node_scored_picks_the_fullest() -> None:
    h = Harness()
    nodes = h.add_nodes(20)
    filler = h.register(make_job("filler", cpu=100, memory=100))
    # node i carries i allocations of another job; the last one is fullest.
    n = 0
    for i, node in enumerate(nodes):
        for _ in range(i):
            h.put_alloc(make_alloc(filler, "filler", n, node, alloc_id=f"f{n}"))
            n += 1
    h.register(make_job("web", count=1))
    result = h.evaluate("web", candidate_limit=0)
    assert result.plan.placements[0].node_name == "n19"


def test_resource_exhaustion_is_reported_exactly() -> None:
    h = Harness()
    h.add_nodes(2, memory=1024)
    h.register(make_job("web", count=2, memory=2000))

    result = h.evaluate("web")

    assert result.plan.placements == []
    metric = result.eval_update.failed_tg_allocs["web"]
    assert metric.nodes_evaluated == 2
    assert metric.nodes_available == 2
    assert metric.nodes_exhausted == 2
    assert metric.dimension_exhausted == {"memory": 2}
    assert metric.coalesced_failures == 1
    assert metric.asked == {"cpu": 100, "memory": 2000}
    assert metric.largest_free == {"memory": 1024}
    assert metric.describe() == (
        "2 nodes evaluated: 2 exhausted memory; asked 2,000 MB memory; largest free on an "
        "eligible node: 1,024 MB (2 instances could not be placed)"
    )
    assert result.eval_update.status_description == "group web: " + metric.describe()
    assert result.eval_update.queued_allocations == {"web": 2}


def test_cpu_is_checked_before_memory() -> None:
    h = Harness()
    h.add_node(make_node("small", cpu=500, memory=512))
    h.register(make_job("web", cpu=1000, memory=1000))
    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]
    # cpu is named as the reason, and the memory it also lacks is not hidden
    assert metric.describe() == (
        "1 node evaluated: 1 exhausted cpu; asked 1,000 MHz cpu; largest free on an eligible "
        "node: 500 MHz; asked 1,000 MB memory; largest free on an eligible node: 512 MB"
    )


def test_the_largest_free_is_the_best_node_s() -> None:
    h = Harness()
    h.add_node(make_node("small", memory=1024))
    h.add_node(make_node("big", memory=4096))
    h.add_node(make_node("bigger", memory=8192, reserved_memory=1000))
    h.register(make_job("web", memory=500_000))
    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]
    assert metric.largest_free == {"memory": 7192}
    assert "asked 500,000 MB memory; largest free on an eligible node: 7,192 MB" in (
        metric.describe()
    )


def test_nodes_short_of_different_things_are_said_to_have_neither_at_once() -> None:
    h = Harness()
    h.add_node(make_node("cpu-rich", cpu=8000, memory=512))
    h.add_node(make_node("memory-rich", cpu=500, memory=8192))
    h.register(make_job("web", cpu=1000, memory=1000))
    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]
    assert metric.dimension_exhausted == {"cpu": 1, "memory": 1}
    assert metric.largest_free == {}  # each dimension alone is free somewhere
    assert metric.describe() == (
        "2 nodes evaluated: 1 exhausted cpu, 1 exhausted memory; no eligible node has the "
        "cpu and the memory asked at once"
    )


def test_reserved_resources_are_not_offered() -> None:
    h = Harness()
    h.add_node(make_node("n", cpu=1000, memory=1000, reserved_memory=600))
    h.register(make_job("web", cpu=100, memory=500))
    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]
    assert metric.dimension_exhausted == {"memory": 1}


def test_missing_driver_and_mixed_reasons() -> None:
    h = Harness()
    h.add_node(make_node("a", memory=1024, drivers=("exec",)))
    h.add_node(make_node("b", memory=1024, drivers=("exec",)))
    h.add_node(make_node("c", drivers=("mock",)))
    h.register(make_job("web", driver="exec", memory=2000))

    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]

    assert metric.nodes_evaluated == 3
    assert metric.constraint_filtered == {"missing driver exec": 1}
    assert metric.dimension_exhausted == {"memory": 2}
    # AllocMetric.describe lists filters before exhaustion, each by frequency.
    assert metric.describe() == (
        "3 nodes evaluated: 2 exhausted memory, 1 missing driver exec; asked 2,000 MB memory; "
        "largest free on an eligible node: 1,024 MB"
    )


def test_unhealthy_driver_counts_as_missing() -> None:
    h = Harness()
    node = make_node("a", drivers=("docker",))
    node.drivers["docker"].healthy = False
    h.add_node(node)
    h.register(make_job("web", driver="docker"))
    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]
    assert metric.describe() == "1 node evaluated: 1 missing driver docker"


def test_group_needing_two_drivers_is_placed_only_where_both_are() -> None:
    h = Harness()
    h.add_node(make_node("exec-only", drivers=("exec",)))
    h.add_node(make_node("both", drivers=("exec", "mock")))
    group = make_group(count=2)
    group.tasks["other"] = group.tasks["task"].model_copy(update={"driver": "exec"})
    h.register(make_job("web", groups={"web": group}))
    result = h.evaluate("web")
    assert {a.node_name for a in result.plan.placements} == {"both"}


def test_nodes_not_ready_ineligible_or_draining_are_not_candidates() -> None:
    h = Harness()
    h.add_node(make_node("down", status=NodeStatus.DOWN))
    h.add_node(make_node("init", status=NodeStatus.INITIALIZING))
    h.add_node(make_node("inel", eligibility=Eligibility.INELIGIBLE))
    h.add_node(make_node("drain", drain=True))
    h.register(make_job("web"))

    result = h.evaluate("web")

    metric = result.eval_update.failed_tg_allocs["web"]
    assert metric.nodes_evaluated == 0
    assert metric.nodes_available == 0
    assert metric.describe() == "no nodes were available (none registered, ready and eligible)"

    h.add_node(make_node("ok", memory=64))
    metric = h.evaluate("web").eval_update.failed_tg_allocs["web"]
    assert (metric.nodes_evaluated, metric.nodes_available) == (1, 1)


def test_empty_cluster_queues_everything() -> None:
    h = Harness()
    h.register(make_job("web", count=2))
    result = h.evaluate("web")
    assert result.eval_update.queued_allocations == {"web": 2}
    assert result.eval_update.failed_tg_allocs["web"].nodes_evaluated == 0


def test_partial_placement_creates_a_blocked_eval_and_it_places_the_rest() -> None:
    h = Harness()
    h.add_node(make_node("a", memory=1000))
    h.register(make_job("web", count=3, memory=400))

    result = h.evaluate("web", now=NOW)

    assert [a.index for a in result.plan.placements] == [0, 1]
    ev = result.eval_update
    assert ev.status == EvalStatus.COMPLETE
    assert ev.queued_allocations == {"web": 1}
    assert ev.plan_summary["place"] == 3
    assert ev.plan_summary["queued"] == 1
    assert ev.failed_tg_allocs["web"].coalesced_failures == 0
    (blocked,) = result.new_evals
    assert blocked.status == EvalStatus.BLOCKED
    assert blocked.triggered_by == TriggeredBy.QUEUED_ALLOCS
    assert blocked.job_id == "web"
    assert blocked.previous_eval == ev.id
    assert blocked.create_time == NOW
    assert ev.blocked_eval == blocked.id

    h.add_node(make_node("b"))
    retry = h.run_eval(blocked)
    assert [(a.index, a.node_name) for a in retry.plan.placements] == [(2, "b")]
    assert retry.new_evals == []
    assert retry.eval_update.status == EvalStatus.COMPLETE


def test_placements_in_one_plan_never_double_book_a_node() -> None:
    h = Harness()
    h.add_node(make_node("a", cpu=1000, memory=1000))
    h.register(
        make_job(
            "web",
            groups={
                "x": make_group(count=2, cpu=300, memory=300),
                "y": make_group(count=2, cpu=300, memory=300),
            },
        )
    )
    result = h.evaluate("web")
    assert len(result.plan.placements) == 3
    assert result.eval_update.queued_allocations == {"x": 0, "y": 1}
    assert h.overcommitted() == []


def test_existing_allocations_count_against_capacity_even_when_stopping() -> None:
    h = Harness()
    node = h.add_node(make_node("a", memory=1000))
    other = h.register(make_job("other", memory=800))
    h.put_alloc(
        make_alloc(other, "other", 0, node, alloc_id="o0", desired_status=DesiredStatus.STOP)
    )
    h.register(make_job("web", memory=400))
    assert h.evaluate("web").eval_update.queued_allocations == {"web": 1}

    h.client_update("o0", ClientStatus.COMPLETE)  # the process exited: room again
    assert h.evaluate("web").eval_update.queued_allocations == {"web": 0}


def test_batch_and_service_candidate_limits() -> None:
    assert default_candidate_limit(1, batch=False) == 2
    assert default_candidate_limit(4, batch=False) == 2
    assert default_candidate_limit(5, batch=False) == 3
    assert default_candidate_limit(5000, batch=False) == 13
    assert default_candidate_limit(5000, batch=True) == 2


def test_batch_jobs_place_too() -> None:
    h = Harness()
    h.add_nodes(5)
    h.register(make_job("etl", type=JobType.BATCH, count=4))
    result = h.evaluate("etl")
    assert len(result.plan.placements) == 4
    assert result.eval_update.status == EvalStatus.COMPLETE


def test_binpack_score_shape() -> None:
    assert binpack_score(1000, 1000, 1000, 1000) == 1.0
    assert binpack_score(1000, 1000, 0, 0) == 0.0
    half = binpack_score(1000, 1000, 500, 500)
    assert 0.0 < half < 1.0
    assert binpack_score(1000, 1000, 600, 600) > half
    # Full in both dimensions beats full in one and idle in the other.
    assert binpack_score(1000, 1000, 500, 500) > binpack_score(1000, 1000, 1000, 0)


def test_anti_affinity_penalty() -> None:
    assert with_anti_affinity(0.5, 0, 3) == 0.5
    assert with_anti_affinity(0.5, 1, 2) == pytest.approx((0.5 - 1.0) / 2)
    # A penalty fades as the group grows.
    assert with_anti_affinity(0.5, 1, 100) > with_anti_affinity(0.5, 1, 3)


def test_node_order_is_a_seeded_permutation() -> None:
    nodes = [make_node(f"n{i}") for i in range(50)]
    a = NodeOrder(nodes, "seed")
    b = NodeOrder(nodes, "seed")
    c = NodeOrder(nodes, "other")
    order_a = [a.at(i).id for i in range(50)]
    assert order_a == [b.at(i).id for i in range(50)]
    assert sorted(order_a) == sorted(n.id for n in nodes)
    assert order_a != [c.at(i).id for i in range(50)]
    # Asking out of order gives the same permutation.
    d = NodeOrder(nodes, "seed")
    assert d.at(30).id == order_a[30]
    assert [d.at(i).id for i in range(50)] == order_a


def test_unknown_job_type_fails_the_eval() -> None:
    h = Harness()
    h.add_nodes(1)
    h.register(make_job("web"))
    saved = SCHEDULERS.pop("service")
    try:
        result = schedule(h, make_eval("web", eval_id="e1"), NOW, new_id=id_sequence())
    finally:
        SCHEDULERS["service"] = saved
    assert result.eval_update.status == EvalStatus.FAILED
    assert result.eval_update.status_description == "no scheduler for job type 'service'"
    assert result.plan.empty()


def test_exec_user_root_or_denylisted_is_not_placed() -> None:
    """The node advertises whom exec refuses; root (uid 0) is refused everywhere."""
    h = Harness()
    node = make_node("a", memory=1024, drivers=("exec",))
    node.attributes["driver.exec.user_denylist"] = "0,daemon,root,toor"
    h.add_node(node)
    for user, job_id in (("root", "r"), ("0", "z"), ("toor", "t"), ("daemon", "d")):
        job = make_job(job_id, driver="exec", memory=100)
        for task in job.groups[job_id].tasks.values():
            task.user = user
        h.register(job)
        metric = h.evaluate(job_id).eval_update.failed_tg_allocs[job_id]
        assert metric.constraint_filtered == {f"exec: user {user} is refused": 1}
    ok = make_job("ok", driver="exec", memory=100)
    for task in ok.groups["ok"].tasks.values():
        task.user = "nobody"
    h.register(ok)
    assert not h.evaluate("ok").eval_update.failed_tg_allocs
