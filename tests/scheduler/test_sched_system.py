"""The system scheduler, and affinity/spread scoring."""

from __future__ import annotations

from collections import Counter

from podium.models import ClientStatus, Eligibility, NodeStatus, TriggeredBy
from podium.scheduler import SCHEDULERS
from podium.scheduler.harness import Harness, make_eval, make_group, make_job, make_node

NOW = 1000.0


def test_system_is_registered_and_places_one_per_eligible_node() -> None:
    assert "system" in SCHEDULERS
    h = Harness()
    h.add_nodes(3)
    h.add_node(make_node("other-dc", datacenter="dc2"))
    h.add_node(make_node("no-driver", drivers=("exec",)))
    h.add_node(make_node("tiny", cpu=50))
    h.add_node(make_node("drain", drain=True, eligibility=Eligibility.INELIGIBLE))
    h.add_node(make_node("down", status=NodeStatus.DOWN))
    h.register(make_job("agent", type="system", count=7, job_fields={"datacenters": ["dc1"]}))
    result = h.evaluate("agent", now=NOW)
    placed = result.plan.placements
    assert sorted(a.node_name for a in placed) == ["n0", "n1", "n2"]
    assert {a.name for a in placed} == {"agent.agent[0]"}
    assert result.plan.changes["agent"].place == 4
    metric = result.eval_update.failed_tg_allocs["agent"]
    assert metric.dimension_exhausted == {"cpu": 1}
    assert metric.asked == {"cpu": 100, "memory": 128}
    assert metric.largest_free == {"cpu": 50}  # the tiny node's, not the placed ones'
    assert metric.constraint_filtered == {
        "datacenter not in [dc1]": 1,
        "missing driver mock": 1,
    }
    assert result.eval_update.queued_allocations == {"agent": 1}
    assert result.eval_update.blocked_eval is not None
    h.run_pending(now=NOW)
    again = h.evaluate("agent", now=NOW)
    assert again.plan.empty()


def test_system_node_joining_later_gets_one() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("agent", type="system"))
    h.converge("agent", now=NOW)
    h.add_node(make_node("late"))
    result = h.evaluate("agent", triggered_by=TriggeredBy.NODE_UPDATE, now=NOW)
    assert [a.node_name for a in result.plan.placements] == ["late"]
    assert result.plan.stops == []


def test_system_node_down_is_lost_not_replaced() -> None:
    h = Harness()
    h.add_nodes(3)
    h.register(make_job("agent", type="system"))
    h.converge("agent", now=NOW)
    h.set_node("node-n1", status=NodeStatus.DOWN)
    result = h.evaluate("agent", triggered_by=TriggeredBy.NODE_UPDATE, now=NOW)
    assert result.plan.placements == []
    [stop] = result.plan.stops
    assert stop.node_id == "node-n1" and stop.client_status == ClientStatus.LOST
    assert result.plan.changes["agent"].lost == 1
    # it comes back: a new allocation, linked to the lost one
    h.set_node("node-n1", status=NodeStatus.READY)
    back = h.evaluate("agent", triggered_by=TriggeredBy.NODE_UPDATE, now=NOW)
    [new] = back.plan.placements
    assert new.node_id == "node-n1" and new.previous_allocation == stop.alloc_id


def test_system_drained_alloc_not_replaced_elsewhere() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("agent", type="system"))
    h.converge("agent", now=NOW)
    h.set_node("node-n0", drain=True, eligibility=Eligibility.INELIGIBLE)
    assert h.evaluate("agent", now=NOW).plan.empty()  # draining node keeps it; drainer stops it
    victim = next(a for a in h.live("agent") if a.node_id == "node-n0")
    h.put_alloc(
        victim.model_copy(update={"desired_status": "stop", "desired_description": "node drain"})
    )
    assert h.evaluate("agent", now=NOW).plan.empty()


def test_system_update_in_place_destructive_and_constraint_change() -> None:
    h = Harness()
    h.add_node(make_node("a", meta={"role": "edge"}))
    h.add_node(make_node("b"))
    h.register(make_job("agent", type="system", meta={"x": "1"}))
    h.converge("agent", now=NOW)
    h.register(make_job("agent", type="system", meta={"x": "2"}))
    r = h.evaluate("agent", now=NOW)
    assert r.plan.changes["agent"].in_place_update == 2 and not r.plan.stops
    h.register(make_job("agent", type="system", config={"v": 2}))
    r = h.evaluate("agent", now=NOW)
    assert r.plan.changes["agent"].destructive_update == 2
    assert sorted(a.node_name for a in r.plan.placements) == ["a", "b"]
    assert {p.previous_allocation for p in r.plan.placements} == {s.alloc_id for s in r.plan.stops}
    h.run_pending(now=NOW)
    h.register(
        make_job(
            "agent",
            type="system",
            config={"v": 2},
            constraints=[{"attribute": "${meta.role}", "value": "edge"}],
        )
    )
    r = h.evaluate("agent", now=NOW)
    assert [s.node_id for s in r.plan.stops] == ["node-b"]
    assert r.plan.placements[0].node_name == "a"  # in place on the node that still matches


def test_system_job_stop_stops_all() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("agent", type="system"))
    h.converge("agent", now=NOW)
    h.stop_job("agent")
    r = h.evaluate("agent", now=NOW)
    assert len(r.plan.stops) == 2 and r.plan.placements == []


def test_system_failed_alloc_holds_its_node() -> None:
    h = Harness()
    h.add_nodes(1)
    h.register(make_job("agent", type="system"))
    h.converge("agent", now=NOW)
    [alloc] = h.live("agent")
    h.client_update(alloc.id, ClientStatus.FAILED, now=NOW)
    assert h.evaluate("agent", now=NOW).plan.empty()


def test_system_failed_alloc_is_replaced_by_a_forced_evaluation() -> None:
    h = Harness()
    h.add_nodes(1)
    h.register(make_job("agent", type="system"))
    h.converge("agent", now=NOW)
    [alloc] = h.live("agent")
    h.client_update(alloc.id, ClientStatus.FAILED, now=NOW)
    forced = make_eval("agent", eval_id=h.new_id(), type="system", now=NOW).model_copy(
        update={"force_reschedule": True}
    )
    result = h.run_eval(forced, now=NOW)
    (placed,) = result.plan.placements
    assert placed.node_id == alloc.node_id and placed.id != alloc.id


# -- spread and affinity ------------------------------------------------------


def racks(h: Harness, layout: dict[str, int], key: str = "rack") -> None:
    for value, n in layout.items():
        for i in range(n):
            h.add_node(make_node(f"{value}-{i}", meta={key: value}))


def by_rack(h: Harness, job_id: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for a in h.live(job_id):
        node = h.node(a.node_id)
        assert node is not None
        out[node.meta["rack"]] += 1
    return out


def test_even_spread_over_two_racks() -> None:
    for seed in range(5):
        h = Harness(id_prefix=f"s{seed}")
        racks(h, {"r1": 4, "r2": 1})
        h.register(make_job("web", count=4, spread=[{"attribute": "${meta.rack}"}]))
        h.converge("web", now=NOW)
        assert by_rack(h, "web") == {"r1": 2, "r2": 2}


def test_spread_targets_80_20() -> None:
    for seed in range(5):
        h = Harness(id_prefix=f"t{seed}")
        racks(h, {"r1": 3, "r2": 3})
        h.register(
            make_job(
                "web",
                count=10,
                spread=[
                    {
                        "attribute": "${meta.rack}",
                        "weight": 100,
                        "targets": [
                            {"value": "r1", "percent": 80},
                            {"value": "r2", "percent": 20},
                        ],
                    }
                ],
            )
        )
        h.converge("web", now=NOW)
        assert by_rack(h, "web") == {"r1": 8, "r2": 2}


def test_affinity_prefers_and_negative_avoids() -> None:
    h = Harness()
    racks(h, {"r1": 3, "r2": 3})
    h.register(
        make_job(
            "web",
            count=3,
            affinities=[{"attribute": "${meta.rack}", "value": "r2", "weight": 100}],
        )
    )
    h.converge("web", now=NOW)
    assert by_rack(h, "web") == {"r2": 3}
    h.register(
        make_job(
            "api",
            groups={"api": make_group(3)},
            job_fields={
                "affinities": [{"attribute": "${meta.rack}", "value": "r1", "weight": -100}]
            },
        )
    )
    h.converge("api", now=NOW)
    assert by_rack(h, "api") == {"r2": 3}
