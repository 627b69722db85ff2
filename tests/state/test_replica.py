"""Followers: a StateStore kept current from the etcd log by a Replica (podium.state.replica),
against real etcd members on loopback.

A leader StateStore on an EtcdBackend commits a mix of writes; a follower's store, fed by
a Replica, must end with what the leader holds: the same tables, derived indexes, table
indexes and per-node change logs (its own commits and the log applied run one code path),
and wake the same blocking queries.  Compactions past a follower, and an etcd member down.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podium.models import (
    Allocation,
    ClientStatus,
    Deployment,
    DesiredStatus,
    Evaluation,
    Job,
    JobVersion,
    Node,
    NodeResources,
    Resources,
    ServiceRegistration,
    TriggeredBy,
)
from podium.models.namespace import Namespace
from podium.state import ALLOCS, JOBS, StateStore
from podium.state.etcd import EtcdBackend
from podium.state.etcd_member import EtcdCluster
from podium.state.replica import Replica
from tests.state.etcd_support import need_etcd
from tests.state.test_store import spec


async def until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``cond`` while the loop runs (the replica applies on this loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Following:
    """Follower stores and their replicas, stopped at the end of a test."""

    def __init__(self) -> None:
        self.replicas: list[Replica] = []
        self.backends: list[EtcdBackend] = []

    def backend(self, endpoints: list[str], name: str, **kw: Any) -> EtcdBackend:
        backend = EtcdBackend(endpoints, cluster=name, **kw)
        self.backends.append(backend)
        return backend

    async def follow(self, store: StateStore, backend: EtcdBackend, **kw: Any) -> Replica:
        replica = Replica(store, backend, **kw)
        await replica.start()
        self.replicas.append(replica)
        return replica

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.stop()
        for backend in self.backends:
            backend.close()


@pytest.fixture
async def following() -> AsyncIterator[Following]:
    f = Following()
    yield f
    await f.close()


# -- a leader's writes
NODES = ("n1", "n2", "n3")


def alloc(i: int, node: str, job: str) -> Allocation:
    return Allocation(
        id=f"a{i}",
        eval_id="e",
        name=f"{job}.g[{i}]",
        job_id=job,
        job_version=0,
        group="g",
        index=i,
        node_id=node,
        resources=Resources(cpu=10 + i % 7, memory=20 + i % 5),
    )


def write(store: StateStore, rng: random.Random, step: int) -> None:
    """One random transaction of the kinds a server commits: jobs registered and purged,
    nodes, placements, agents' reports (client updates), stops, moves, deletions,
    evaluations, deployments, services, namespaces."""
    txn = store.txn()
    i = txn.index
    live = sorted(a.id for a in store.allocs())
    roll = rng.random()
    if roll < 0.08 or not store.jobs():
        job = rng.choice(["web", "api", "db"])
        txn.put_job(Job(id=job, spec=spec(job), modify_index=i, create_index=i))
        txn.put_version(
            JobVersion(job_id=job, version=i, spec=spec(job), submit_time=0.0, modify_index=i)
        )
        for node_id in NODES:
            if store.node(node_id) is None:
                txn.put_node(
                    Node(id=node_id, name=node_id, resources=NodeResources(cpu=1000, memory=1000))
                )
    elif roll < 0.35 or not live:  # a plan: a few placements and their evaluation
        for n in range(rng.randrange(1, 6)):
            job = rng.choice(["web", "api", "db"])
            a = alloc(step * 10 + n, rng.choice(NODES), job).model_copy(
                update={"create_index": i, "modify_index": i}
            )
            txn.put_alloc(a)
        txn.put_eval(
            Evaluation(
                id=f"e{i}", job_id=job, triggered_by=TriggeredBy.JOB_REGISTER, modify_index=i
            )
        )
    elif roll < 0.6:  # a batch of agents' reports
        txn.client_update = True
        for alloc_id in rng.sample(live, min(len(live), rng.randrange(1, 4))):
            old = store.alloc(alloc_id)
            assert old is not None
            txn.put_alloc(
                old.model_copy(
                    update={"client_status": rng.choice(list(ClientStatus)), "modify_index": i}
                )
            )
    elif roll < 0.72:  # stopped, or moved to another node
        old = store.alloc(rng.choice(live))
        assert old is not None
        update: dict[str, Any] = {"desired_status": DesiredStatus.STOP, "modify_index": i}
        if rng.random() < 0.5:
            update = {"node_id": rng.choice(NODES), "modify_index": i}
        txn.put_alloc(old.model_copy(update=update))
    elif roll < 0.8:  # garbage collected: allocations and evaluations
        for alloc_id in rng.sample(live, min(len(live), 3)):
            txn.delete_alloc(alloc_id)
        evals = sorted(e.id for e in store.evaluations())
        if evals:
            txn.delete_eval(rng.choice(evals))
    elif roll < 0.85:  # a job purged
        job = rng.choice(store.jobs())
        txn.delete_job(job.namespace, job.id, [v.version for v in store.job_versions(job.id)])
    elif roll < 0.92:  # a deployment, and a service of a live allocation
        job = rng.choice(store.jobs())
        txn.put_deployment(
            Deployment(
                id=f"d-{job.id}-{i % 2}",
                job_id=job.id,
                job_version=0,
                create_index=i,
                modify_index=i,
            )
        )
        a = store.alloc(rng.choice(live))
        assert a is not None
        txn.put_service(
            ServiceRegistration(
                id=f"{a.id}/http",
                service_name="http",
                job_id=a.job_id,
                group=a.group,
                alloc_id=a.id,
                node_id=a.node_id,
                address="10.0.0.1",
            )
        )
    else:  # namespaces come and go; a deployment or a service goes
        if rng.random() < 0.5:
            txn.put_namespace(Namespace(name=f"ns{i % 3}", create_index=i, modify_index=i))
        else:
            txn.delete_namespace(f"ns{rng.randrange(3)}")
        deployments = sorted(d.id for d in store.deployments())
        if deployments:
            txn.delete_deployment(rng.choice(deployments))
        services = sorted(s.id for s in store.service_registrations())
        if services:
            txn.delete_service(rng.choice(services))
    if txn.empty():
        txn.put_eval(Evaluation(id=f"e{i}", job_id="web", triggered_by=TriggeredBy.MANUAL))
    store.commit(txn)


# -- what two stores are compared by
def _rows(table: dict[Any, Any]) -> dict[str, str]:
    return {str(k): v.model_dump_json() for k, v in table.items()}


def contents(store: StateStore) -> dict[str, Any]:
    """Everything a store derives from its rows alone: equal between any two stores that
    hold the same rows, however they got there (a reload included)."""
    t = store._t
    return {
        "index": store.index,
        "jobs": _rows(t.jobs),
        "versions": {str(k): _rows(v) for k, v in t.versions.items()},
        "allocs": _rows(t.allocs),
        "nodes": _rows(t.nodes),
        "evals": _rows(t.evals),
        "deployments": _rows(t.deployments),
        "services": _rows(t.services),
        "variables": _rows(t.variables),
        "namespaces": _rows(t.namespaces),
        "acl": {k: _rows(v) for k, v in t.acl.items()},
        "allocs_by_job": t.allocs_by_job,
        "allocs_by_node": t.allocs_by_node,
        "evals_by_job": t.evals_by_job,
        "usage": {k: v for k, v in t.usage.items() if v != (0, 0)},
        "deployments_by_job": t.deployments_by_job,
        "services_by_name": t.services_by_name,
        "services_by_alloc": t.services_by_alloc,
        "by_secret": t.by_secret,
        "job_counts": store._job_counts,
    }


def history(store: StateStore) -> dict[str, Any]:
    """What a store derives from the order of its commits (a reload derives it from the
    rows' stamps instead): equal between a leader and a follower that applied the same
    commits."""
    return {
        "table_index": store._table_index,
        "node_alloc_index": store._node_alloc_index,
        "alloc_sync_index": store._alloc_sync_index,
        "node_removal_index": store._node_removal_index,
        "node_changes": store._node_changes,
    }


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key


# -- the tests
async def test_a_follower_ends_with_what_the_leader_holds(
    etcd: EtcdCluster, name: str, following: Following
) -> None:
    leader = StateStore(following.backend(etcd.endpoints, name))
    rng = random.Random(15)
    for step in range(40):
        write(leader, rng, step)
    # a follower started part-way: loads snapshot + log, then follows the rest live
    follower = StateStore(following.backend(etcd.endpoints, name))
    assert follower.index == leader.index == 40
    fresh = StateStore()  # a memory store fed from index 0 by its replica
    replica = await following.follow(follower, following.backend(etcd.endpoints, name))
    from_zero = await following.follow(fresh, following.backend(etcd.endpoints, name))
    for step in range(40, 250):
        write(leader, rng, step)
        if step % 25 == 0:
            await asyncio.sleep(0)  # let the replicas apply while the leader writes
    await until(lambda: follower.index == fresh.index == leader.index, what="followers at 250")
    assert replica.applied_index == from_zero.applied_index == 250
    assert {a.client_status for a in leader.allocs()} > {ClientStatus.PENDING}, "no reports"

    reloaded = StateStore(following.backend(etcd.endpoints, name))
    assert_same(contents(follower), contents(leader))
    assert_same(contents(follower), contents(reloaded))
    assert_same(contents(fresh), contents(leader))
    # every commit applied in order from the first: the same history as the leader's
    # own commits (agents' reports included, which do not count as changes to sync)
    assert_same(history(fresh), history(leader))
    for node_id in NODES:
        for since in (0, 45, 100, 200):
            assert follower.changed_alloc_ids(node_id, since) == leader.changed_alloc_ids(
                node_id, since
            )
            assert sorted(fresh.changed_alloc_ids(node_id, since)) == sorted(
                leader.changed_alloc_ids(node_id, since)
            )
    # past what it loaded (every table counts as changed at 40), the same table indexes
    assert follower._table_index == {t: max(i, 40) for t, i in leader._table_index.items()}
    # and the same event stream, line for line (a follower serves it from its replica)
    assert event_lines(follower, 40) == event_lines(leader, 40)
    assert event_lines(fresh, 0) == event_lines(leader, 0)
    assert len(event_lines(leader, 0)) >= 250


def event_lines(store: StateStore, since: int) -> list[bytes]:
    return [e.line for commit in store.events.since(since) for e in commit.events()]


async def test_a_blocking_query_on_a_follower_wakes_for_its_table_only(
    etcd: EtcdCluster, name: str, following: Following
) -> None:
    leader = StateStore(following.backend(etcd.endpoints, name))
    rng = random.Random(3)
    for step in range(5):
        write(leader, rng, step)
    follower = StateStore(following.backend(etcd.endpoints, name))
    await following.follow(follower, following.backend(etcd.endpoints, name))
    at = follower.index
    allocs = asyncio.create_task(follower.wait_for(at, 60.0, tables=(ALLOCS,)))
    on_n2 = asyncio.create_task(follower.wait_for(at, 60.0, node_allocs="n2"))
    jobs = asyncio.create_task(follower.wait_for(at, 60.0, tables=(JOBS,)))

    txn = leader.txn()
    txn.put_job(Job(id="other", spec=spec("other"), modify_index=txn.index))
    leader.commit(txn)
    await until(lambda: follower.index == at + 1, what="the job on the follower")
    assert await asyncio.wait_for(jobs, 10.0) == at + 1
    for _ in range(10):  # what the commit woke has run by now
        await asyncio.sleep(0)
    assert not allocs.done()
    assert not on_n2.done()

    txn = leader.txn()
    txn.put_alloc(alloc(900, "n1", "other").model_copy(update={"modify_index": txn.index}))
    leader.commit(txn)
    assert await asyncio.wait_for(allocs, 10.0) == at + 2
    for _ in range(10):
        await asyncio.sleep(0)
    assert not on_n2.done(), "an allocation on n1 woke n2's agent"

    txn = leader.txn()
    txn.put_alloc(alloc(901, "n2", "other").model_copy(update={"modify_index": txn.index}))
    leader.commit(txn)
    assert await asyncio.wait_for(on_n2, 10.0) == at + 3
    assert follower.changed_alloc_ids("n2", at) == ["a901"]


async def test_a_follower_behind_a_compaction_reloads_and_catches_up(
    etcd: EtcdCluster, name: str, following: Following
) -> None:
    leader_backend = following.backend(etcd.endpoints, name)
    leader = StateStore(leader_backend)
    rng = random.Random(11)
    for step in range(20):
        write(leader, rng, step)
    # a follower that loaded at 20, then stopped following (partitioned, paused)
    follower = StateStore(following.backend(etcd.endpoints, name))
    for step in range(20, 60):
        write(leader, rng, step)
    assert leader_backend.compact() == 60  # the log up to 60 is gone, and etcd's history
    for step in range(60, 80):
        write(leader, rng, step)
    waiter = asyncio.create_task(follower.wait_for(20, 60.0, tables=(ALLOCS,)))
    replica = await following.follow(follower, following.backend(etcd.endpoints, name))
    await until(lambda: follower.index == 80, what="the follower at 80")
    assert replica.resets == 1
    assert await asyncio.wait_for(waiter, 10.0) > 20  # the reload woke it
    for step in range(80, 100):  # and it follows live commits after the reload
        write(leader, rng, step)
    await until(lambda: follower.index == 100, what="the follower at 100")
    reloaded = StateStore(following.backend(etcd.endpoints, name))
    assert_same(contents(follower), contents(leader))
    assert_same(contents(follower), contents(reloaded))


async def test_staleness_counts_from_the_last_time_etcd_confirmed_the_replica(
    tmp_path: Path, name: str, following: Following
) -> None:
    need_etcd()
    cluster = EtcdCluster.start(1, tmp_path / "etcd")
    try:
        now = [1000.0]
        leader = StateStore(following.backend(cluster.endpoints, name))
        write(leader, random.Random(1), 0)
        follower = StateStore(following.backend(cluster.endpoints, name))
        backend = following.backend(cluster.endpoints, name, commit_timeout=0.5)
        replica = await following.follow(
            follower, backend, probe_interval=0.02, clock=lambda: now[0]
        )
        await until(lambda: replica.staleness() == 0.0, what="a first probe")
        now[0] = 1100.0
        assert replica.staleness() == 100.0
        await until(lambda: replica.staleness() == 0.0, what="a probe at the new time")
        assert replica.last_contact() == 0.0

        cluster.stop(0)  # etcd gone: no probe answers any more
        failed = replica.probe_failures
        await until(lambda: replica.probe_failures >= failed + 2, what="failed probes")
        now[0] = 1300.0
        assert replica.staleness() == 200.0
        assert replica.last_contact() == 200.0
        await until(lambda: replica.probe_failures >= failed + 4, what="more failed probes")
        assert replica.staleness() == 200.0
    finally:
        await following.close()
        following.replicas.clear()
        following.backends.clear()
        cluster.close()


async def test_one_member_of_three_down_the_follower_keeps_applying(
    tmp_path: Path, name: str, following: Following
) -> None:
    need_etcd()
    cluster = EtcdCluster.start(3, tmp_path / "etcd")
    try:
        leader = StateStore(following.backend(cluster.endpoints, name, commit_timeout=15.0))
        rng = random.Random(5)
        for step in range(20):
            write(leader, rng, step)
        # the follower asks member 0 first (its watch is there): member 0 is the one killed
        follower = StateStore(following.backend(cluster.endpoints, name))
        replica = await following.follow(
            follower, following.backend(cluster.endpoints, name, commit_timeout=15.0)
        )
        for step in range(20, 40):
            write(leader, rng, step)
        await until(lambda: follower.index == 40, what="the follower at 40")

        cluster.stop(0)
        waiter = asyncio.create_task(follower.wait_for(40, 60.0, tables=(ALLOCS,)))
        for step in range(40, 80):
            write(leader, rng, step)
            await asyncio.sleep(0)
        await until(lambda: follower.index == 80, timeout=60.0, what="the follower at 80")
        assert await asyncio.wait_for(waiter, 10.0) > 40
        assert replica.error is None
        assert_same(contents(follower), contents(leader))
        assert follower._table_index == {t: max(i, 20) for t, i in leader._table_index.items()}
    finally:
        await following.close()
        following.replicas.clear()
        following.backends.clear()
        cluster.close()


async def test_a_replica_behind_and_not_moving_restarts_its_tail(
    etcd: EtcdCluster, name: str, following: Following
) -> None:
    """The decision only (the probes' answers given, the clock injected): a watch stuck on a
    member cut off from the others needs a network partition, the next step's tests."""
    now = [0.0]
    store = StateStore()
    backend = following.backend(etcd.endpoints, name)
    replica = Replica(store, backend, stall_after=10.0, clock=lambda: now[0])
    tail = replica._tail = backend.tail(0)
    replica._probed(0.0, 5)  # behind: etcd at 5, the store at 0
    replica._probed(6.0, 5)
    assert replica.restarts == 0
    txn = store.txn()
    txn.put_eval(Evaluation(id="e", job_id="web", triggered_by=TriggeredBy.MANUAL))
    store.commit(txn)  # progress: the clock starts again
    replica._probed(9.0, 5)
    replica._probed(18.0, 5)
    assert replica.restarts == 0
    assert replica.staleness() is None  # never known to hold etcd's head
    replica._probed(19.0, 5)  # 10 s at index 1
    assert replica.restarts == 1
    assert replica._restart_from == 1
    assert tail._closed.is_set()
    store.reset(5, [])
    replica._probed(20.0, 5)
    now[0] = 21.0
    assert replica.staleness() == 1.0
