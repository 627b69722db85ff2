"""The leader's duties apart from the API (issue 15): a server whose duties are
stopped still answers reads, blocking queries and writes, while no evaluation is
processed and no node is declared down; starting them again resumes both, with the
broker rebuilt from the store and a fresh heartbeat TTL for every node.

A real store on a real SQLite file; the server's clock is injected, so a node's
silence is a number, not a wait.  That nothing happens while the duties are stopped
is shown by blocking queries that see no write for a whole second (a running
heartbeat loop looks every 0.05 s here, and the worker takes an evaluation at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from podium.client import AsyncClient
from podium.models import DriverInfo, EvalStatus, JobSpec, Node, NodeResources, NodeStatus
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import SqliteBackend, StateStore
from tests.server.conftest import mock_job

TTL = 0.2
"""Heartbeat TTL and grace (seconds of the injected clock); the loop looks every TTL/4."""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    server: Server
    store: StateStore
    clock: Clock
    http: httpx.AsyncClient
    client: AsyncClient

    async def until(self, cond: object, what: str, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if callable(cond) and cond():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    async def index_after(self, path: str, index: int, wait: str) -> int:
        """A blocking query: the index ``path`` answers with once something it reads is
        written after ``index``, or after ``wait``."""
        response = await self.http.get(path, params={"index": index, "wait": wait})
        assert response.status_code == 200, response.text
        return int(response.headers["X-Podium-Index"])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    clock = Clock()
    server = Server(
        store,
        ServerConfig(heartbeat_ttl=TTL, heartbeat_grace=TTL, advertise_url="http://s1:7634"),
        clock=clock,
    )
    await server.start()
    transport = httpx.ASGITransport(app=create_app(server))
    http = httpx.AsyncClient(transport=transport, base_url="http://podium")
    client = AsyncClient("http://podium", transport=transport, timeout=30)
    try:
        yield Rig(server, store, clock, http, client)
    finally:
        await client.aclose()
        await http.aclose()
        await server.stop()
        store.close()


def add_node(server: Server) -> Node:
    node = Node(
        id="node-n1",
        name="n1",
        http_addr="http://10.0.0.5:4646",
        resources=NodeResources(cpu=4000, memory=4096),
        drivers={"mock": DriverInfo(detected=True, healthy=True)},
    )
    server.register_node(node)
    return node


def status(store: StateStore, node: Node) -> NodeStatus:
    stored = store.node(node.id)
    assert stored is not None
    return stored.status


async def test_without_its_duties_a_server_serves_the_api_and_acts_on_nothing(rig: Rig) -> None:
    server, store = rig.server, rig.store
    node = add_node(server)
    await server.leader.stop()
    assert not server.leader.running and server._tasks == []

    # reads answer
    nodes = (await rig.http.get("/v1/nodes")).json()
    assert [n["id"] for n in nodes] == [node.id]
    # a blocking query wakes for a write made through the API
    before = store.index
    woken = asyncio.create_task(rig.index_after("/v1/jobs", before, "10s"))
    await asyncio.sleep(0)  # the query is waiting before the write
    result = await rig.client.register_job(JobSpec.model_validate(mock_job("web", count=2)))
    assert await woken >= result.index > before

    # the node falls silent far beyond TTL + grace, and the evaluation waits: for a whole
    # second nothing writes the nodes, the jobs or their allocations
    rig.clock.now += 100 * TTL
    paths = ["/v1/nodes", "/v1/jobs", "/v1/evaluations"]
    quiet = [int((await rig.http.get(p)).headers["X-Podium-Index"]) for p in paths]
    seen = await asyncio.gather(*(rig.index_after(p, store.index, "1s") for p in paths))
    assert list(seen) == quiet
    assert status(store, node) == NodeStatus.READY
    assert store.evaluation(result.eval_id).status == EvalStatus.PENDING  # type: ignore[union-attr]
    assert store.allocs_by_job("web") == []

    # the duties resume: a blocking query waiting across the restart sees the placements;
    # the node gets a fresh TTL instead of being declared down for the time unwatched
    placed = asyncio.create_task(rig.index_after("/v1/jobs", store.index, "10s"))
    await asyncio.sleep(0)
    server.leader.start()
    assert server.leader.running
    assert server.check_heartbeats() == []
    await placed
    await rig.until(
        lambda: len([a for a in store.allocs_by_job("web") if not a.terminal()]) == 2,
        "the evaluation registered while the duties were stopped to be processed",
    )
    assert store.evaluation(result.eval_id).status == EvalStatus.COMPLETE  # type: ignore[union-attr]
    assert status(store, node) == NodeStatus.READY

    # and silence is noticed again, by the heartbeat loop itself
    rig.clock.now += 100 * TTL
    await rig.until(lambda: status(store, node) == NodeStatus.DOWN, "the silent node to go down")


async def test_heartbeats_keep_a_node_up_while_the_duties_are_stopped(rig: Rig) -> None:
    """Heartbeats are API calls: they are taken (and count) while the duties are stopped."""
    node = add_node(rig.server)
    await rig.server.leader.stop()
    rig.clock.now += 100 * TTL
    rig.server.heartbeat(node.id)
    rig.server.leader.start()
    rig.clock.now += TTL  # within TTL + grace of that heartbeat and of the fresh TTL
    assert rig.server.check_heartbeats() == []
    assert status(rig.store, node) == NodeStatus.READY


async def test_starting_twice_runs_one_set_of_loops_and_stop_ends_them(rig: Rig) -> None:
    leader = rig.server.leader
    names = sorted(t.get_name() for t in leader.tasks)
    assert names == [
        "autoscaler",
        "deployments",
        "drainer",
        "gc",
        "heartbeats",
        "periodic",
        "scheduler-worker-0",
    ]
    leader.start()
    assert sorted(t.get_name() for t in leader.tasks) == names
    tasks = list(leader.tasks)
    await leader.stop()
    assert all(t.done() for t in tasks)
    assert leader.tasks == [] and not leader.running


async def test_a_server_without_its_duties_names_no_leader(rig: Rig) -> None:
    assert (await rig.client.leader()).leader == "http://s1:7634"
    await rig.server.leader.stop()
    answer = await rig.client.leader()
    assert answer.leader == "" and answer.server == "http://s1:7634"
    assert await rig.client.peers() == ["http://s1:7634"]
    rig.server.leader.start()
    assert (await rig.client.leader()).leader == "http://s1:7634"
