"""Reconciliation: scaling, stopping, updates, lost nodes and batch completion."""

from __future__ import annotations

from podium.models import (
    ClientStatus,
    DesiredStatus,
    EvalStatus,
    JobType,
    NodeStatus,
    TriggeredBy,
)
from podium.scheduler.harness import Harness, make_alloc, make_group, make_job, make_node
from podium.scheduler.reconcile import (
    DUPLICATE,
    GROUP_REMOVED,
    JOB_PURGED,
    JOB_STOPPED,
    NODE_LOST,
    SCALED_DOWN,
    UPDATED,
)


def running_cluster(nodes: int = 3, count: int = 3, **job_kwargs: object) -> Harness:
    h = Harness()
    h.add_nodes(nodes)
    h.register(make_job("web", count=count, **job_kwargs))  # type: ignore[arg-type]
    h.converge("web")
    return h


def indexes(h: Harness, job_id: str = "web") -> list[int]:
    return [a.index for a in h.live(job_id)]


def test_scale_up_takes_the_lowest_free_indexes() -> None:
    h = running_cluster(count=3)
    existing = {a.id for a in h.live("web")}
    h.register(make_job("web", count=5))

    result = h.evaluate("web")

    updated = [a for a in result.plan.placements if a.id in existing]
    new = [a for a in result.plan.placements if a.id not in existing]
    assert sorted(a.index for a in updated) == [0, 1, 2]
    assert [a.name for a in new] == ["web.web[3]", "web.web[4]"]
    ch = result.plan.changes["web"]
    assert (ch.place, ch.in_place_update, ch.stop) == (2, 3, 0)
    assert indexes(h) == [0, 1, 2, 3, 4]


def test_scale_down_stops_the_highest_indexes() -> None:
    h = running_cluster(nodes=5, count=5)
    h.register(make_job("web", count=2))

    result = h.evaluate("web")

    by_id = {a.id: a for a in h.allocs()}
    stopped = sorted(by_id[s.alloc_id].index for s in result.plan.stops)
    assert stopped == [2, 3, 4]
    assert {s.description for s in result.plan.stops} == {SCALED_DOWN}
    assert all(s.client_status is None for s in result.plan.stops)
    # The two kept ones move to the new version in place (only the count changed).
    assert sorted(a.index for a in result.plan.placements) == [0, 1]
    ch = result.plan.changes["web"]
    assert (ch.stop, ch.in_place_update, ch.place) == (3, 2, 0)
    assert indexes(h) == [0, 1]


def test_gaps_are_filled_and_extra_high_indexes_stopped() -> None:
    h = Harness()
    node = h.add_node(make_node("a"))
    job = h.register(make_job("web", count=3))
    for i in (0, 1, 5, 7):
        h.put_alloc(make_alloc(job, "web", i, node, alloc_id=f"a{i}"))
    result = h.evaluate("web")
    assert [s.alloc_id for s in result.plan.stops] == ["a7"]
    assert result.plan.placements == []
    assert indexes(h) == [0, 1, 5]


def test_duplicate_index_is_stopped() -> None:
    h = Harness()
    node = h.add_node(make_node("a"))
    job = h.register(make_job("web", count=2))
    h.put_alloc(make_alloc(job, "web", 0, node, alloc_id="first", time=1.0))
    h.put_alloc(make_alloc(job, "web", 0, node, alloc_id="second", time=2.0))
    result = h.evaluate("web")
    assert [(s.alloc_id, s.description) for s in result.plan.stops] == [("second", DUPLICATE)]
    assert [a.index for a in result.plan.placements] == [1]


def test_job_stop_stops_everything_and_then_nothing_more() -> None:
    h = running_cluster(count=3)
    h.stop_job("web")

    result = h.evaluate("web", triggered_by=TriggeredBy.JOB_DEREGISTER)

    assert len(result.plan.stops) == 3
    assert {s.description for s in result.plan.stops} == {JOB_STOPPED}
    assert result.plan.placements == []
    assert result.plan.changes["web"].stop == 3
    assert result.eval_update.status == EvalStatus.COMPLETE
    assert result.eval_update.queued_allocations == {}
    assert h.live("web") == []
    assert h.evaluate("web").plan.empty()


def test_job_purge_stops_everything() -> None:
    h = running_cluster(count=2)
    h.purge_job("web")

    result = h.evaluate("web", triggered_by=TriggeredBy.JOB_DEREGISTER)

    assert {s.description for s in result.plan.stops} == {JOB_PURGED}
    assert len(result.plan.stops) == 2
    assert result.plan.job_version is None
    assert h.evaluate("web").plan.empty()


def test_stopped_job_on_a_down_node_is_marked_lost() -> None:
    h = running_cluster(nodes=1, count=1)
    h.set_node("node-n0", status=NodeStatus.DOWN)
    h.stop_job("web")
    (stop,) = h.evaluate("web").plan.stops
    assert stop.client_status == ClientStatus.LOST
    assert stop.description == JOB_STOPPED


def test_group_removed_from_job_is_stopped() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("web", groups={"api": make_group(2), "worker": make_group(1)}))
    h.converge("web")
    h.register(make_job("web", groups={"api": make_group(2)}))

    result = h.evaluate("web")

    (stop,) = result.plan.stops
    assert stop.description == GROUP_REMOVED
    assert result.plan.changes["worker"].stop == 1
    assert {a.group for a in h.live("web")} == {"api"}


def test_in_place_update_keeps_id_and_node() -> None:
    h = running_cluster(count=2)
    before = {a.id: a.node_id for a in h.live("web")}
    group = make_group(2, meta={"team": "blue"})
    group.tasks["task"].meta["owner"] = "ops"  # task meta does not need a restart either
    h.register(make_job("web", groups={"web": group}))

    result = h.evaluate("web", now=2000.0)

    assert result.plan.stops == []
    assert {a.id: a.node_id for a in result.plan.placements} == before
    assert {a.job_version for a in result.plan.placements} == {1}
    assert {a.modify_time for a in result.plan.placements} == {2000.0}
    assert {a.eval_id for a in result.plan.placements} == {result.eval_update.id}
    assert result.plan.changes["web"].in_place_update == 2
    assert h.evaluate("web").plan.empty()


def test_destructive_update_replaces_at_the_same_index() -> None:
    h = running_cluster(count=2)
    old = {a.index: a.id for a in h.live("web")}
    h.register(make_job("web", count=2, config={"command": "v2"}))

    result = h.evaluate("web")

    assert sorted(s.alloc_id for s in result.plan.stops) == sorted(old.values())
    assert {s.description for s in result.plan.stops} == {UPDATED}
    placed = {a.index: a for a in result.plan.placements}
    assert sorted(placed) == [0, 1]
    for index, alloc in placed.items():
        assert alloc.previous_allocation == old[index]
        assert alloc.id != old[index]
        assert alloc.job_version == 1
    ch = result.plan.changes["web"]
    assert (ch.destructive_update, ch.place, ch.stop) == (2, 0, 0)
    h.run_pending()
    assert h.alloc(old[0]).next_allocation == placed[0].id
    assert h.evaluate("web").plan.empty()


def test_resource_change_is_destructive() -> None:
    h = running_cluster(count=1)
    h.register(make_job("web", count=1, memory=256))
    result = h.evaluate("web")
    assert result.plan.changes["web"].destructive_update == 1
    assert result.plan.placements[0].resources.memory == 256


def test_destructive_update_keeps_the_old_version_when_the_new_cannot_be_placed() -> None:
    h = Harness()
    h.add_node(make_node("a", memory=1000))
    h.register(make_job("web", count=1, memory=600))
    h.converge("web")
    (old,) = h.live("web")
    h.register(make_job("web", count=1, memory=700))

    result = h.evaluate("web")

    assert result.plan.stops == []
    assert result.plan.placements == []
    assert result.eval_update.queued_allocations == {"web": 1}
    assert len(result.new_evals) == 1
    assert h.live("web") == [h.alloc(old.id)]


def test_lost_allocations_on_a_down_node_are_replaced_elsewhere() -> None:
    h = running_cluster(nodes=3, count=3)
    victim = next(a for a in h.live("web") if a.node_id == "node-n0")
    h.set_node("node-n0", status=NodeStatus.DOWN)

    result = h.evaluate("web", triggered_by=TriggeredBy.NODE_UPDATE, node_id="node-n0")

    (stop,) = result.plan.stops
    assert (stop.alloc_id, stop.client_status, stop.description) == (
        victim.id,
        ClientStatus.LOST,
        NODE_LOST,
    )
    (replacement,) = result.plan.placements
    assert replacement.index == victim.index
    assert replacement.node_id != "node-n0"
    assert replacement.previous_allocation == victim.id
    ch = result.plan.changes["web"]
    assert (ch.lost, ch.place, ch.ignore) == (1, 1, 2)
    assert h.alloc(victim.id).client_status == ClientStatus.LOST
    assert h.evaluate("web").plan.empty()


def test_allocations_on_a_vanished_node_are_lost_too() -> None:
    h = running_cluster(nodes=2, count=2)
    h.remove_node("node-n1")
    result = h.evaluate("web", triggered_by=TriggeredBy.NODE_UPDATE, node_id="node-n1")
    assert [s.client_status for s in result.plan.stops] == [ClientStatus.LOST]
    assert [a.node_id for a in result.plan.placements] == ["node-n0"]


def test_down_node_without_room_elsewhere_still_marks_lost_and_blocks() -> None:
    h = Harness()
    h.add_node(make_node("a", memory=1000))
    h.add_node(make_node("b", memory=1000))
    h.register(make_job("web", count=2, memory=800))
    h.converge("web")
    h.set_node("node-a", status=NodeStatus.DOWN)
    result = h.evaluate("web", triggered_by=TriggeredBy.NODE_UPDATE, node_id="node-a")
    assert [s.client_status for s in result.plan.stops] == [ClientStatus.LOST]
    assert result.plan.placements == []
    assert result.eval_update.queued_allocations == {"web": 1}


def test_draining_node_allocations_are_left_alone_for_now() -> None:
    h = running_cluster(nodes=2, count=2)
    h.set_node("node-n0", drain=True)
    assert h.evaluate("web", triggered_by=TriggeredBy.NODE_UPDATE).plan.empty()


def test_batch_complete_allocations_are_not_replaced() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("etl", type=JobType.BATCH, count=3))
    h.converge("etl")
    for alloc in h.live("etl"):
        h.client_update(alloc.id, ClientStatus.COMPLETE)

    result = h.evaluate("etl")

    assert result.plan.empty()
    assert result.plan.changes["etl"].ignore == 3
    assert result.eval_update.queued_allocations == {"etl": 0}


def test_batch_complete_counts_toward_the_count_on_update_and_scale_up() -> None:
    h = Harness()
    h.add_nodes(2)
    h.register(make_job("etl", type=JobType.BATCH, count=2))
    h.converge("etl")
    done, running = h.live("etl")
    h.client_update(done.id, ClientStatus.COMPLETE)
    h.register(make_job("etl", type=JobType.BATCH, count=3, config={"v": 2}))

    result = h.evaluate("etl")

    # The finished one stays done; the running one is replaced; one is new.
    assert [s.alloc_id for s in result.plan.stops] == [running.id]
    assert sorted(a.index for a in result.plan.placements) == [running.index, 2]
    ch = result.plan.changes["etl"]
    assert (ch.ignore, ch.destructive_update, ch.place) == (1, 1, 1)


def test_service_allocation_that_exited_is_replaced() -> None:
    h = running_cluster(nodes=1, count=1)
    (alloc,) = h.live("web")
    h.client_update(alloc.id, ClientStatus.COMPLETE)

    result = h.evaluate("web")

    (new,) = result.plan.placements
    assert new.index == alloc.index
    assert new.previous_allocation == alloc.id
    assert result.plan.stops == []
    assert h.evaluate("web").plan.empty()


def test_terminal_allocations_are_ignored() -> None:
    h = Harness()
    node = h.add_node(make_node("a"))
    job = h.register(make_job("web", count=1))
    h.put_alloc(make_alloc(job, "web", 0, node, alloc_id="old", desired_status=DesiredStatus.STOP))
    result = h.evaluate("web")
    assert result.plan.stops == []
    assert [a.index for a in result.plan.placements] == [0]


def test_older_version_spec_missing_means_destructive() -> None:
    h = Harness()
    node = h.add_node(make_node("a"))
    job = h.register(make_job("web", count=1))
    h.put_alloc(make_alloc(job, "web", 0, node, alloc_id="ancient", job_version=-1))
    result = h.evaluate("web")
    assert result.plan.changes["web"].destructive_update == 1
    assert [s.alloc_id for s in result.plan.stops] == ["ancient"]
