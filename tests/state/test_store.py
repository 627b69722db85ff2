"""The state store: indexes, snapshots, blocking waits and SQLite durability."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from podium.models import (
    Allocation,
    ClientStatus,
    DesiredStatus,
    Evaluation,
    Job,
    JobSpec,
    Node,
    NodeResources,
    Resources,
    TriggeredBy,
)
from podium.state import SqliteBackend, StateStore


def spec(job_id: str = "web") -> JobSpec:
    return JobSpec.model_validate(
        {"job": job_id, "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}}}
    )


def alloc(i: int, node: str = "n1", job: str = "web") -> Allocation:
    return Allocation(
        id=f"a{i}",
        eval_id="e",
        name=f"{job}.g[{i}]",
        job_id=job,
        job_version=0,
        group="g",
        index=i,
        node_id=node,
        resources=Resources(),
    )


def node(node_id: str = "n1") -> Node:
    return Node(id=node_id, name=node_id, resources=NodeResources(cpu=1000, memory=1000))


def test_every_commit_bumps_the_index_and_stamps_tables() -> None:
    store = StateStore()
    assert store.index == 0
    txn = store.txn()
    txn.put_job(Job(id="web", spec=spec(), modify_index=txn.index))
    assert store.commit(txn) == 1
    txn = store.txn()
    txn.put_alloc(alloc(0))
    assert store.commit(txn) == 2
    assert store.table_index("jobs") == 1
    assert store.table_index("allocs") == 2
    assert store.node_alloc_index("n1") == 2
    assert [a.id for a in store.allocs_by_job("web")] == ["a0"]
    assert [a.id for a in store.allocs_by_node("n1")] == ["a0"]


def test_empty_transaction_is_a_no_op() -> None:
    store = StateStore()
    assert store.commit(store.txn()) == 0


def test_stale_transaction_is_refused() -> None:
    store = StateStore()
    t1 = store.txn()
    t2 = store.txn()
    t1.put_node(node())
    store.commit(t1)
    t2.put_node(node("n2"))
    with pytest.raises(RuntimeError, match="stale"):
        store.commit(t2)
    assert store.node("n2") is None


def test_snapshot_does_not_see_later_writes() -> None:
    store = StateStore()
    txn = store.txn()
    txn.put_alloc(alloc(0))
    store.commit(txn)
    snap = store.snapshot()
    txn = store.txn()
    txn.put_alloc(alloc(1))
    txn.put_alloc(alloc(0, node="n2"))
    store.commit(txn)
    assert snap.index == 1
    assert [a.id for a in snap.allocs_by_job("web")] == ["a0"]
    assert [a.node_id for a in snap.allocs_by_node("n1")] == ["n1"]
    assert sorted(a.id for a in store.allocs_by_job("web")) == ["a0", "a1"]
    assert [a.id for a in store.allocs_by_node("n2")] == ["a0"]
    assert [a.id for a in store.allocs_by_node("n1")] == ["a1"]


def test_delete_updates_secondary_indexes() -> None:
    store = StateStore()
    txn = store.txn()
    txn.put_alloc(alloc(0))
    txn.put_eval(Evaluation(id="e1", job_id="web", triggered_by=TriggeredBy.MANUAL))
    store.commit(txn)
    txn = store.txn()
    txn.delete_alloc("a0")
    txn.delete_eval("e1")
    store.commit(txn)
    assert store.allocs_by_job("web") == []
    assert store.allocs_by_node("n1") == []
    assert store.evals_by_job("web") == []


async def test_wait_for_wakes_on_a_change_of_its_table_only() -> None:
    store = StateStore()
    waiter = asyncio.create_task(store.wait_for(0, 5.0, tables=("allocs",)))
    await asyncio.sleep(0.01)
    txn = store.txn()
    txn.put_node(node())
    store.commit(txn)
    await asyncio.sleep(0.01)
    assert not waiter.done()
    txn = store.txn()
    txn.put_alloc(alloc(0))
    store.commit(txn)
    assert await asyncio.wait_for(waiter, 1.0) == 2


async def test_wait_for_times_out_with_the_current_index() -> None:
    store = StateStore()
    assert await store.wait_for(0, 0.05, tables=("allocs",)) == 0


async def test_wait_for_one_node() -> None:
    store = StateStore()
    waiter = asyncio.create_task(store.wait_for(0, 5.0, node_allocs="n2"))
    txn = store.txn()
    txn.put_alloc(alloc(0, node="n1"))
    store.commit(txn)
    await asyncio.sleep(0.01)
    assert not waiter.done()
    txn = store.txn()
    txn.put_alloc(alloc(1, node="n2"))
    store.commit(txn)
    assert await asyncio.wait_for(waiter, 1.0) == 2


def test_sqlite_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(SqliteBackend(path))
    txn = store.txn()
    txn.put_job(Job(id="web", spec=spec(), modify_index=txn.index))
    txn.put_node(node())
    for i in range(3):
        txn.put_alloc(alloc(i))
    store.commit(txn)
    txn = store.txn()
    txn.delete_alloc("a2")
    store.commit(txn)
    store.close()

    again = StateStore(SqliteBackend(path))
    assert again.index == 2
    assert again.job("web") is not None
    assert sorted(a.id for a in again.allocs_by_job("web")) == ["a0", "a1"]
    assert again.node("n1") is not None
    assert again.table_index("allocs") == 2  # every table counts as changed at the last index


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    """A child commits and prints each index; we kill -9 it mid-stream and reopen."""
    path = tmp_path / "state.db"
    script = textwrap.dedent(f"""
        import sys
        from podium.models import Node, NodeResources
        from podium.state import SqliteBackend, StateStore
        store = StateStore(SqliteBackend({str(path)!r}))
        i = 0
        while True:
            txn = store.txn()
            txn.put_node(Node(id=f"n{{i}}", name="x", resources=NodeResources(cpu=1, memory=1)))
            idx = store.commit(txn)
            print(idx, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        acked = int(line)
        if acked >= 50:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = StateStore(SqliteBackend(path))
    assert store.index >= acked
    assert all(store.node(f"n{i}") is not None for i in range(acked))


def test_node_usage_is_kept_in_step_with_the_allocations(tmp_path: Path) -> None:
    from podium.models import ClientStatus, DesiredStatus

    rng = random.Random(3)
    store = StateStore(SqliteBackend(tmp_path / "s.db"))
    for step in range(300):
        txn = store.txn()
        i = rng.randrange(40)
        existing = store.alloc(f"a{i}")
        if existing is not None and rng.random() < 0.2:
            txn.delete_alloc(existing.id)
        else:
            a = alloc(i, node=rng.choice(["n1", "n2", "n3"]))
            status = rng.choice(list(ClientStatus))
            a = a.model_copy(
                update={
                    "client_status": status,
                    "desired_status": rng.choice(list(DesiredStatus)),
                    "resources": Resources(cpu=rng.randrange(1, 500), memory=rng.randrange(1, 500)),
                }
            )
            txn.put_alloc(a)
        store.commit(txn)
        snap = store.snapshot()
        for node_id in ("n1", "n2", "n3"):
            live = [x for x in store.allocs_by_node(node_id) if x.uses_resources()]
            expected = (sum(x.resources.cpu for x in live), sum(x.resources.memory for x in live))
            assert store.node_usage(node_id) == expected, step
            assert snap.node_usage(node_id) == expected
    store.close()
    reopened = StateStore(SqliteBackend(tmp_path / "s.db"))
    for node_id in ("n1", "n2", "n3"):
        assert reopened.node_usage(node_id) == store.node_usage(node_id)


def _recount(store: StateStore, job: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for a in store.allocs_by_job(job):
        if a.client_status == "pending" and a.desired_status == "stop":
            continue
        by_status = counts.setdefault(a.group, {})
        by_status[a.client_status.value] = by_status.get(a.client_status.value, 0) + 1
    return counts


def test_changed_alloc_ids_and_job_counts_follow_every_write(tmp_path: Path) -> None:
    """The per-node change log and the per-job counts, against a recount from scratch,
    through placements, reports, moves, stops and deletions, and after a reload."""
    rng = random.Random(7)
    store = StateStore(SqliteBackend(tmp_path / "s.db"))
    live: dict[str, Allocation] = {}
    seen_at: dict[str, int] = {n: 0 for n in ("n1", "n2", "n3")}
    for step in range(400):
        txn = store.txn()
        roll = rng.random()
        if roll < 0.4 or not live:
            i = step
            a = alloc(i, node=rng.choice(list(seen_at)), job=rng.choice(["web", "api"]))
            txn.put_alloc(a)
        elif roll < 0.7:  # an agent's report: not something the agent must hear of
            a = live[rng.choice(sorted(live))].model_copy(
                update={"client_status": rng.choice(list(ClientStatus))}
            )
            txn.put_alloc(a)
            txn.client_update = True
        elif roll < 0.85:  # stopped, or moved to another node
            old = live[rng.choice(sorted(live))]
            update: dict[str, object] = {"desired_status": DesiredStatus.STOP}
            if rng.random() < 0.5:
                update = {"node_id": rng.choice(list(seen_at))}
            txn.put_alloc(old.model_copy(update=update))
        else:
            txn.delete_alloc(rng.choice(sorted(live)))
        store.commit(txn)
        live = {a.id: a for a in store.allocs()}
        for job in ("web", "api"):
            assert store.job_alloc_counts(job) == _recount(store, job)
        for node_id, since in seen_at.items():
            expected = sorted(
                a_id
                for a_id in store.alloc_ids_by_node(node_id)
                if store.alloc_sync_index(a_id) > since
            )
            assert sorted(store.changed_alloc_ids(node_id, since)) == expected
            if rng.random() < 0.3:
                seen_at[node_id] = store.index  # this agent synced
    store.close()
    again = StateStore(SqliteBackend(tmp_path / "s.db"))
    for job in ("web", "api"):
        assert again.job_alloc_counts(job) == _recount(again, job)
    for node_id in seen_at:
        for since in (-1, 0, 200):
            assert sorted(again.changed_alloc_ids(node_id, since)) == sorted(
                a_id
                for a_id in again.alloc_ids_by_node(node_id)
                if again.alloc_sync_index(a_id) > since
            )
    again.close()
