"""Placement rules: datacenters, node pools, constraints, distinct_*, max_per_node,
static ports, drains."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from podium.models import AllocatedPort, ClientStatus, Eligibility, TriggeredBy
from podium.scheduler.constraints import check, resolve, valid_target, version_matches
from podium.scheduler.harness import Harness, make_alloc, make_group, make_job, make_node

NOW = 1000.0


def rack_nodes(h: Harness, racks: dict[str, int], **kwargs: Any) -> None:
    for rack, n in racks.items():
        for i in range(n):
            h.add_node(make_node(f"{rack}-{i}", meta={"rack": rack}, **kwargs))


def per_meta(h: Harness, job_id: str, key: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for a in h.live(job_id):
        node = h.node(a.node_id)
        assert node is not None
        out[node.meta.get(key, "-")] += 1
    return out


# -- the operators ---------------------------------------------------------


def test_resolve_interpolations_and_literals() -> None:
    node = make_node(
        "a1", datacenter="eu", node_pool="gpu", attributes={"cpu.arch": "arm64"}, meta={"r": "1"}
    )
    assert resolve("${node.name}", node) == "a1"
    assert resolve("${node.unique.name}", node) == "a1"
    assert resolve("${node.id}", node) == "node-a1"
    assert resolve("${node.datacenter}", node) == "eu"
    assert resolve("${node.pool}", node) == "gpu"
    assert resolve("${node.class}", node) == ""
    assert resolve("${attr.cpu.arch}", node) == "arm64"
    assert resolve("${meta.r}", node) == "1"
    assert resolve("${meta.missing}", node) is None
    assert resolve("${bogus}", node) is None
    assert resolve("plain", node) == "plain"
    assert valid_target("${attr.os.name}") and valid_target("x")
    assert not valid_target("${nope}") and not valid_target("${attr.")


@pytest.mark.parametrize(
    ("op", "left", "right", "ok"),
    [
        ("=", "a", "a", True),
        ("=", "a", "b", False),
        ("=", None, "a", False),
        ("!=", "a", "b", True),
        ("!=", None, "a", True),  # Nomad: a missing attribute differs from any value
        (">", "10", "9", True),  # numeric when both parse
        (">", "b", "a", True),
        ("<=", "1.5", "1.50", True),
        ("<", None, "1", False),
        ("regexp", "linux-5", r"^linux", True),
        ("regexp", "darwin", r"^linux", False),
        ("regexp", "x", "(", False),
        ("version", "1.4.2", ">= 1.2, < 2.0", True),
        ("version", "2.0", ">= 1.2, < 2.0", False),
        ("version", "v1.2", "= 1.2.0", True),
        ("version", "1.3.0-beta1", ">= 1.3.0", False),
        ("version", "1.9", "~> 1.2", True),
        ("version", "2.0", "~> 1.2", False),
        ("version", "1.2.9", "~> 1.2.3", True),
        ("version", "1.3.0", "~> 1.2.3", False),
        ("version", "banana", ">= 1", False),
        ("set_contains", "a, b,c", "c,a", True),
        ("set_contains", "a,b", "a,d", False),
        ("is_set", "", "", True),
        ("is_set", None, "", False),
        ("is_not_set", None, "", True),
        ("is_not_set", "x", "", False),
    ],
)
def test_operators(op: str, left: str | None, right: str | None, ok: bool) -> None:
    assert check(op, left, right) is ok


def test_version_kernel_style() -> None:
    assert version_matches("5.15.0-91-generic", ">= 5.10")
    assert not version_matches("4.19.0", ">= 5.10")


# -- datacenters and pools -------------------------------------------------


def test_datacenters_glob_and_pool_filter_with_reasons() -> None:
    h = Harness()
    h.add_node(make_node("a", datacenter="eu-west"))
    h.add_node(make_node("b", datacenter="eu-east"))
    h.add_node(make_node("c", datacenter="us-east"))
    h.add_node(make_node("d", datacenter="eu-west", node_pool="gpu"))
    h.register(make_job("web", count=4, job_fields={"datacenters": ["eu-*"]}))
    result = h.evaluate("web", now=NOW)
    assert {a.node_name for a in result.plan.placements} == {"a", "b"}
    assert len(result.plan.placements) == 4
    h2 = Harness()
    for n in ("c", "d"):
        h2.add_node(h.node(f"node-{n}") or make_node(n))
    h2.register(make_job("web", count=1, job_fields={"datacenters": ["eu-*"]}))
    metric = h2.evaluate("web", now=NOW).eval_update.failed_tg_allocs["web"]
    assert metric.constraint_filtered == {"datacenter not in [eu-*]": 1, "node pool not default": 1}
    assert metric.describe() == (
        "2 nodes evaluated: 1 datacenter not in [eu-*], 1 node pool not default"
    )


def test_pool_all_takes_any_node_and_star_any_datacenter() -> None:
    h = Harness()
    h.add_node(make_node("a", node_pool="gpu", datacenter="x"))
    h.add_node(make_node("b", datacenter="y"))
    h.register(make_job("web", count=2, job_fields={"node_pool": "all"}))
    h.converge("web", now=NOW)
    assert {a.node_name for a in h.live("web")} == {"a", "b"}
    h.register(make_job("gpu", count=2, job_fields={"node_pool": "gpu"}))
    h.converge("gpu", now=NOW)
    assert {a.node_name for a in h.live("gpu")} == {"a"}


def test_draining_and_ineligible_nodes_are_never_candidates() -> None:
    h = Harness()
    h.add_node(make_node("ok"))
    h.add_node(make_node("drain", drain=True, eligibility=Eligibility.INELIGIBLE))
    h.add_node(make_node("inel", eligibility=Eligibility.INELIGIBLE))
    h.register(make_job("web", count=3))
    h.converge("web", now=NOW)
    assert {a.node_name for a in h.live("web")} == {"ok"}


# -- constraints -----------------------------------------------------------


def test_constraints_combine_job_group_and_tasks_and_read_in_describe() -> None:
    h = Harness()
    rack_nodes(h, {"r1": 2, "r2": 3}, memory=1024, attributes={"cpu.arch": "amd64"})
    spec = make_job(
        "web",
        count=6,
        memory=600,
        constraints=[{"attribute": "${meta.rack}", "value": "r1"}],
        job_fields={"constraints": [{"attribute": "${attr.cpu.arch}", "value": "amd64"}]},
    )
    h.register(spec)
    result = h.evaluate("web", now=NOW)
    assert {a.node_name for a in result.plan.placements} == {"r1-0", "r1-1"}
    metric = result.eval_update.failed_tg_allocs["web"]
    assert metric.describe() == (
        "5 nodes evaluated: 3 constraint ${meta.rack} = r1, 2 exhausted memory; "
        "asked 600 MB memory; largest free on an eligible node: 424 MB "
        "(4 instances could not be placed)"
    )

    # a task-level constraint applies to the group as well
    task_spec = spec.model_copy(deep=True)
    task_spec.groups["web"].constraints = []
    task_spec.groups["web"].tasks["task"].constraints = [
        task_spec.constraints[0].model_copy(update={"value": "arm64"})
    ]
    h2 = Harness()
    rack_nodes(h2, {"r1": 1}, attributes={"cpu.arch": "amd64"})
    h2.register(task_spec)
    metric = h2.evaluate("web", now=NOW).eval_update.failed_tg_allocs["web"]
    assert metric.constraint_filtered == {"constraint ${attr.cpu.arch} = arm64": 1}


def test_missing_attribute_fails_except_is_not_set() -> None:
    h = Harness()
    h.add_node(make_node("plain"))
    h.add_node(make_node("tagged", meta={"ssd": "true"}))
    h.register(
        make_job("a", count=2, constraints=[{"attribute": "${meta.ssd}", "operator": "is_set"}])
    )
    h.register(
        make_job("b", count=2, constraints=[{"attribute": "${meta.ssd}", "operator": "is_not_set"}])
    )
    h.converge("a", now=NOW)
    h.converge("b", now=NOW)
    assert {x.node_name for x in h.live("a")} == {"tagged"}
    assert {x.node_name for x in h.live("b")} == {"plain"}


def test_distinct_hosts_group_and_job_level() -> None:
    h = Harness()
    h.add_nodes(3)
    h.register(make_job("web", count=4, constraints=[{"operator": "distinct_hosts"}]))
    result = h.evaluate("web", now=NOW)
    assert len({a.node_id for a in result.plan.placements}) == 3
    metric = result.eval_update.failed_tg_allocs["web"]
    assert metric.constraint_filtered == {"distinct_hosts": 3}
    assert result.eval_update.queued_allocations == {"web": 1}

    # job level: no two allocations of the job (any group) on one node
    h2 = Harness()
    h2.add_nodes(3)
    h2.register(
        make_job(
            "app",
            groups={"a": make_group(2), "b": make_group(2)},
            job_fields={"constraints": [{"operator": "distinct_hosts"}]},
        )
    )
    h2.evaluate("app", now=NOW)
    assert len(h2.live("app")) == 3
    assert len({a.node_id for a in h2.live("app")}) == 3


def test_distinct_hosts_counts_existing_allocations() -> None:
    h = Harness()
    nodes = h.add_nodes(2)
    job = h.register(make_job("web", count=2, constraints=[{"operator": "distinct_hosts"}]))
    h.put_alloc(make_alloc(job, "web", 0, nodes[0], alloc_id="a0"))
    result = h.evaluate("web", now=NOW)
    assert [a.node_id for a in result.plan.placements] == [nodes[1].id]


def test_distinct_property_limits_per_value() -> None:
    h = Harness()
    rack_nodes(h, {"r1": 3, "r2": 3})
    h.register(
        make_job(
            "web",
            count=5,
            constraints=[
                {"attribute": "${meta.rack}", "operator": "distinct_property", "value": "2"}
            ],
        )
    )
    result = h.evaluate("web", now=NOW)
    assert per_meta(h, "web", "rack") == {"r1": 2, "r2": 2}
    metric = result.eval_update.failed_tg_allocs["web"]
    assert metric.constraint_filtered == {"distinct_property ${meta.rack}": 6}


def test_max_per_node() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("web", count=5, max_per_node=2))
    result = h.evaluate("web", now=NOW)
    assert Counter(a.node_id for a in result.plan.placements) == {"node-n0": 2, "node-n1": 2}
    assert result.eval_update.failed_tg_allocs["web"].constraint_filtered == {"max_per_node 2": 2}


# -- static ports ------------------------------------------------------------


PORTS = {"ports": {"http": {"static": 8080}, "dyn": {}}}


def test_static_port_one_per_node_and_recorded_on_alloc() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("web", count=3, network=PORTS))
    result = h.evaluate("web", now=NOW)
    placed = result.plan.placements
    assert len({a.node_id for a in placed}) == 2 == len(placed)
    assert placed[0].ports == {"http": AllocatedPort(value=8080)}
    assert result.eval_update.failed_tg_allocs["web"].constraint_filtered == {"port 8080 in use": 2}


def test_static_port_held_by_other_jobs_reported_or_from_spec() -> None:
    h = Harness()
    a, b, c = h.add_nodes(3)
    other = h.register(make_job("other", count=1, network={"ports": {"p": {"static": 8080}}}))
    plain = h.register(make_job("plain", count=1))
    # not yet reported: found through the other job's spec
    h.put_alloc(make_alloc(other, "other", 0, a, alloc_id="o0"))
    # reported by the agent on an allocation whose spec has no static port
    reported = make_alloc(plain, "plain", 0, b, alloc_id="p0")
    h.put_alloc(reported.model_copy(update={"ports": {"x": AllocatedPort(value=8080)}}))
    # a finished holder frees the port
    h.put_alloc(
        make_alloc(other, "other", 1, c, alloc_id="o1", client_status=ClientStatus.COMPLETE)
    )
    h.register(make_job("web", count=2, network=PORTS))
    result = h.evaluate("web", now=NOW)
    assert [x.node_id for x in result.plan.placements] == [c.id]


def test_static_port_destructive_update_reuses_its_own_port() -> None:
    h = Harness()
    h.add_nodes(1)
    h.register(make_job("web", count=1, network=PORTS))
    h.converge("web", now=NOW)
    h.register(make_job("web", count=1, network=PORTS, config={"v": 2}))
    result = h.evaluate("web", now=NOW)
    assert result.plan.changes["web"].destructive_update == 1
    assert len(result.plan.placements) == 1 and len(result.plan.stops) == 1


# -- drains ------------------------------------------------------------------


def test_drained_allocation_is_replaced_elsewhere_with_link() -> None:
    h = Harness()
    h.add_nodes(3)
    h.register(make_job("web", count=3, constraints=[{"operator": "distinct_hosts"}]))
    h.converge("web", now=NOW)
    victim = next(a for a in h.live("web") if a.node_id == "node-n0")
    h.add_node(make_node("n3"))
    h.set_node("node-n0", drain=True, eligibility=Eligibility.INELIGIBLE)
    h.put_alloc(
        victim.model_copy(
            update={"desired_status": "stop", "desired_description": "node drain: migrating"}
        )
    )
    result = h.evaluate("web", triggered_by=TriggeredBy.NODE_UPDATE, now=NOW)
    [new] = result.plan.placements
    assert new.node_id == "node-n3"
    assert new.index == victim.index
    assert new.previous_allocation == victim.id
    assert result.plan.stops == []
    h.run_pending(now=NOW)
    assert h.evaluate("web", now=NOW).plan.empty()  # replaced once, not twice
