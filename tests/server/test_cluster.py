"""Server and agents together (mock driver): placement, scaling, failures, lost nodes."""

from __future__ import annotations

import asyncio

from podium.models import ClientStatus, DesiredStatus, EvalStatus, NodeStatus
from tests.server.conftest import Cluster, mock_job


async def test_job_runs_and_spreads_over_nodes(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.add_agent()
    await cluster.run(mock_job(count=4))
    running = await cluster.until(
        lambda: len(cluster.running("web")) == 4 and cluster.running("web"), what="4 running"
    )
    per_node: dict[str, int] = {}
    for a in running:
        per_node[a.node_id] = per_node.get(a.node_id, 0) + 1
    assert sorted(per_node.values()) == [2, 2]
    assert sorted(a.index for a in running) == [0, 1, 2, 3]


async def test_scale_down_stops_highest_indexes(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(mock_job(count=3))
    await cluster.until(lambda: len(cluster.running("web")) == 3, what="3 running")
    await cluster.client.scale_job("web", "g", 1)
    await cluster.until(lambda: len(cluster.running("web")) == 1, what="scaled to 1")
    assert [a.index for a in cluster.running("web")] == [0]
    stopped = [a for a in cluster.allocs("web") if a.desired_status == DesiredStatus.STOP]
    await cluster.until(
        lambda: all(
            cluster.store.alloc(a.id).client_status  # type: ignore[union-attr]
            == ClientStatus.COMPLETE
            for a in stopped
        ),
        what="stopped allocs complete",
    )
    versions = await cluster.client.job_versions("web")
    assert [v.version for v in versions] == [1, 0]


async def test_failed_allocation_is_rescheduled(cluster: Cluster) -> None:
    await cluster.add_agent()
    spec = mock_job(
        run_for="10ms",
        exit_code=1,
        restart={"attempts": 0, "mode": "fail"},
        reschedule={"attempts": 1, "interval": "1h", "delay": "0s", "unlimited": False},
    )
    await cluster.run(spec)
    failed = await cluster.until(
        lambda: (
            len([a for a in cluster.allocs("web") if a.client_status == ClientStatus.FAILED]) == 2
        ),
        what="the original and its one replacement to fail",
    )
    assert failed
    allocs = sorted(cluster.allocs("web"), key=lambda a: a.create_index)
    assert allocs[1].previous_allocation == allocs[0].id
    # attempts exhausted: no third allocation
    await cluster.settled("web")
    assert len(cluster.allocs("web")) == 2


async def test_lost_node_allocations_are_replaced(cluster: Cluster) -> None:
    a0 = await cluster.add_agent()
    await cluster.run(mock_job(count=2))
    await cluster.until(lambda: len(cluster.running("web")) == 2, what="2 running")
    await cluster.add_agent()
    # the first node falls silent
    await a0.stop()
    cluster.agents.remove(a0)
    await cluster.until(
        lambda: (
            cluster.store.node(a0.node_id).status  # type: ignore[union-attr]
            == NodeStatus.DOWN
        ),
        timeout=5,
        what="node down",
    )
    await cluster.until(
        lambda: (
            len(cluster.running("web")) == 2
            and all(a.node_id != a0.node_id for a in cluster.running("web"))
        ),
        what="replacements running on the other node",
    )
    lost = [a for a in cluster.allocs("web") if a.client_status == ClientStatus.LOST]
    assert len(lost) == 2


async def test_blocked_evaluation_places_when_capacity_appears(cluster: Cluster) -> None:
    await cluster.run(mock_job(count=1))
    blocked = await cluster.until(
        lambda: [e for e in cluster.store.evaluations() if e.status == EvalStatus.BLOCKED],
        what="a blocked eval",
    )
    first = next(e for e in cluster.store.evaluations() if e.status == EvalStatus.COMPLETE)
    assert "no nodes" in first.failed_tg_allocs["g"].describe()
    assert blocked
    await cluster.add_agent()
    await cluster.until(lambda: len(cluster.running("web")) == 1, what="placed after node joined")


async def test_resource_exhaustion_is_explained(cluster: Cluster) -> None:
    await cluster.add_agent()
    node = cluster.store.nodes()[0]
    free = node.capacity().memory
    await cluster.run(mock_job(memory=free + 1))
    ev = await cluster.until(
        lambda: [e for e in cluster.store.evaluations() if e.failed_tg_allocs], what="metrics"
    )
    assert ev[0].failed_tg_allocs["g"].describe() == (
        f"1 node evaluated: 1 exhausted memory; asked {free + 1:,} MB memory; largest free on "
        f"an eligible node: {free:,} MB"
    )


async def test_batch_job_completes_and_is_not_replaced(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(mock_job(count=2, job_type="batch", run_for="20ms"))
    await cluster.until(
        lambda: (
            len([a for a in cluster.allocs("web") if a.client_status == ClientStatus.COMPLETE]) == 2
        ),
        what="2 complete",
    )
    await cluster.settled("web")
    assert len(cluster.allocs("web")) == 2


async def test_stop_and_purge(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(mock_job(count=2))
    await cluster.until(lambda: len(cluster.running("web")) == 2, what="2 running")
    await cluster.client.stop_job("web", purge=True)
    await cluster.until(lambda: cluster.store.job("web") is None, what="purged")
    await cluster.until(
        lambda: all(a.client_status == ClientStatus.COMPLETE for a in cluster.allocs("web")),
        what="stopped",
    )
    assert cluster.server.gc() >= 2
    assert cluster.allocs("web") == []


async def test_in_place_update_keeps_allocations(cluster: Cluster) -> None:
    await cluster.add_agent()
    spec = mock_job(count=2)
    await cluster.run(spec)
    before = await cluster.until(
        lambda: len(cluster.running("web")) == 2 and {a.id for a in cluster.running("web")},
        what="2 running",
    )
    spec["meta"] = {"owner": "team-a"}  # not a task change: update in place
    await cluster.run(spec)
    await cluster.until(
        lambda: (
            all(a.job_version == 1 for a in cluster.running("web"))
            and len(cluster.running("web")) == 2
        ),
        what="in-place update",
    )
    assert {a.id for a in cluster.running("web")} == before
    spec["groups"]["g"]["tasks"]["t"]["config"]["run_for"] = "2h"  # a task change: replace
    await cluster.run(spec)
    await cluster.until(
        lambda: (
            len(cluster.running("web")) == 2
            and all(a.job_version == 2 for a in cluster.running("web"))
        ),
        what="destructive update",
    )
    assert not ({a.id for a in cluster.running("web")} & before)


async def test_drain_moves_service_allocs_one_at_a_time(cluster: Cluster) -> None:
    a0 = await cluster.add_agent()
    await cluster.run(mock_job(count=3))
    await cluster.until(lambda: len(cluster.running("web")) == 3, what="3 running")
    await cluster.add_agent()
    cluster.server.config.drain_interval = 0.05
    await cluster.client.drain_node(a0.node_id, deadline="1m")
    max_migrating = 0

    def migrating() -> int:
        return len(
            [
                a
                for a in cluster.allocs("web")
                if a.node_id == a0.node_id
                and a.desired_description.startswith("node drain")
                and not a.client_status.terminal
            ]
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        max_migrating = max(max_migrating, migrating())
        node = cluster.store.node(a0.node_id)
        assert node is not None
        if not node.drain and len(cluster.running("web")) == 3:
            break
        await asyncio.sleep(0.01)
    node = cluster.store.node(a0.node_id)
    assert node is not None and not node.drain
    assert node.eligibility == "ineligible"
    assert all(a.node_id != a0.node_id for a in cluster.running("web"))
    assert len(cluster.running("web")) == 3
    assert max_migrating <= 1  # migrate.max_parallel defaults to 1


async def test_drain_deadline_stops_batch_work(cluster: Cluster) -> None:
    a0 = await cluster.add_agent()
    await cluster.run(mock_job("crunch", count=1, job_type="batch", run_for="1h"))
    await cluster.until(lambda: len(cluster.running("crunch")) == 1, what="batch running")
    cluster.server.config.drain_interval = 0.05
    await cluster.client.drain_node(a0.node_id, deadline="1s")
    # batch work may finish until the deadline
    assert len(cluster.running("crunch")) == 1
    assert cluster.allocs("crunch")[0].desired_status == "run"
    await cluster.until(
        lambda: not cluster.store.node(a0.node_id).drain,  # type: ignore[union-attr]
        what="drain done",
    )
    stopped = cluster.allocs("crunch")[0]
    assert stopped.desired_description == "node drain: deadline reached"


async def test_allocation_stopped_before_its_agent_saw_it_is_freed(cluster: Cluster) -> None:
    agent = await cluster.add_agent()
    # the agent is slow to sync (busy, or briefly cut off): pause its sync loop
    sync = next(t for t in agent._tasks if t.get_name() == "agent-sync")
    sync.cancel()
    await cluster.run(mock_job("early", count=1))
    await cluster.until(lambda: cluster.allocs("early"), what="placed")
    await cluster.client.stop_job("early")
    await cluster.until(
        lambda: cluster.allocs("early")[0].desired_status == DesiredStatus.STOP, what="stopped"
    )
    agent._tasks.append(asyncio.create_task(agent._sync_loop()))
    await cluster.until(
        lambda: cluster.allocs("early")[0].client_status == ClientStatus.COMPLETE,
        what="the agent to report the never-started allocation done",
    )
    assert not cluster.allocs("early")[0].uses_resources()
    assert "early" not in {r.alloc.job_id for r in agent.runners.values()}


async def test_system_job_runs_on_every_node_including_later_ones(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.add_agent()
    spec = mock_job("logs", job_type="system")
    await cluster.run(spec)
    await cluster.until(lambda: len(cluster.running("logs")) == 2, what="one per node")
    late = await cluster.add_agent()
    await cluster.until(
        lambda: (
            len(cluster.running("logs")) == 3
            and any(a.node_id == late.node_id for a in cluster.running("logs"))
        ),
        what="the late node to get one",
    )
    assert len({a.node_id for a in cluster.running("logs")}) == 3


async def test_old_stopped_allocations_are_collected_and_forgotten(cluster: Cluster) -> None:
    agent = await cluster.add_agent()
    await cluster.run(mock_job(count=2))
    await cluster.until(lambda: len(cluster.running("web")) == 2, what="2 running")
    await cluster.client.scale_job("web", "g", 1)
    await cluster.until(
        lambda: any(a.client_status == ClientStatus.COMPLETE for a in cluster.allocs("web")),
        what="one stopped",
    )
    cluster.server.config.alloc_gc_age = 0.0
    assert cluster.server.gc() >= 1
    assert len(cluster.allocs("web")) == 1
    await cluster.until(lambda: len(agent.runners) == 1, what="the agent to forget it")
