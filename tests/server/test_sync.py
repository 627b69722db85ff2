"""Agents' delta syncs and the group commit of their reports.

- A sync with ``since`` answers in full only the allocations changed past it (the
  agent's own reports are no change it must hear of), every id with its index, and
  only the job specs not named in ``have``; ``since=0`` (a restarted agent) or an
  index from another history answers everything.
- Reports arriving together are committed in one transaction, answered only after it.
- Reports may ride on a sync (``POST`` on the sync path): committed before it is answered;
  an agent's reports are taken in the order it made them (an older request that
  arrives late is refused, not written over a newer state).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.client import AsyncClient
from podium.drivers.mock import MockDriver
from podium.errors import APIError, Conflict
from podium.models import (
    Allocation,
    AllocClientUpdate,
    ClientStatus,
    DriverInfo,
    JobSpec,
    Node,
    NodeResources,
    TaskState,
    TaskStateName,
)
from podium.models.acl import NODE_SECRET_HEADER
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import SqliteBackend, StateStore

from .conftest import Cluster, mock_job, place


def node_secret(node_id: str) -> str:
    """The secret the node :func:`add_node` registers proves itself with."""
    return f"secret-of-{node_id}"


class EveryNode(dict[str, str]):
    """A client's ``node_secrets`` that knows every :func:`add_node` node's secret."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return node_secret(key)


def add_node(server: Server, name: str = "n1") -> Node:
    node = Node(
        id=f"node-{name}",
        name=name,
        resources=NodeResources(cpu=8000, memory=8192),
        drivers={"mock": DriverInfo(detected=True, healthy=True)},
    )
    server.register_node(node, server.trust.node_secret_record(node.id, node_secret(node.id), 0))
    return node


def status_of(server: Server, alloc_id: str) -> ClientStatus | None:
    alloc = server.store.alloc(alloc_id)
    return alloc.client_status if alloc is not None else None


def running(alloc: Allocation) -> AllocClientUpdate:
    return AllocClientUpdate(
        id=alloc.id,
        client_status=ClientStatus.RUNNING,
        task_states={"t": TaskState(state=TaskStateName.RUNNING)},
    )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Server, AsyncClient]]:
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    server = Server(store, ServerConfig(heartbeat_ttl=10, heartbeat_grace=10))
    client = AsyncClient(
        "http://podium", transport=httpx.ASGITransport(app=create_app(server)), timeout=10
    )
    client.node_secrets = EveryNode()
    try:
        yield server, client
    finally:
        await client.aclose()
        await server.stop()
        store.close()


async def test_delta_sync_answers_only_what_changed(api: tuple[Server, AsyncClient]) -> None:
    server, client = api
    node = add_node(server)
    allocs = place(server, mock_job("web", count=2))
    ids = {a.id for a in allocs}

    full = await client.node_sync(node.id, since=0)
    assert {a.id for a in full.allocations} == ids
    assert full.alloc_indexes is not None and set(full.alloc_indexes) == ids
    assert set(full.jobs) == {"web@0"}
    # without since: the whole list, as before
    legacy = await client.node_sync(node.id)
    assert legacy.alloc_indexes is None and {a.id for a in legacy.allocations} == ids

    # the agent's own reports are no news to it
    await client.update_allocs(node.id, [running(a) for a in allocs])
    same = await client.node_sync(node.id, since=full.index)
    assert same.allocations == [] and same.jobs == {}
    # nothing left the node: the ids that stayed are not listed again, only counted
    assert same.alloc_indexes == {} and same.alloc_count == 2

    # new allocations come alone, without the spec the agent holds
    new = {a.id for a in place(server, mock_job("api", count=2))}
    api_index = server.store.job_versions("api")[0].modify_index
    web_index = full.job_indexes["web@0"]
    have = [f"web@0@{web_index}", f"api@0@{api_index}"]
    delta = await client.node_sync(
        node.id, index=full.index, wait="1s", since=full.index, have=have
    )
    assert delta.index > full.index
    assert {a.id for a in delta.allocations} == new
    assert delta.jobs == {}  # the agent said it has that spec
    # a spec held from a purged job of the same id and version is no match: sent again
    stale = await client.node_sync(
        node.id, since=full.index, have=[f"web@0@{web_index}", "api@0@1"]
    )
    assert set(stale.jobs) == {"api@0"} and stale.job_indexes == {"api@0": api_index}
    assert delta.alloc_indexes is not None and set(delta.alloc_indexes) == new
    assert delta.alloc_count == 4
    # asked without `have`, only the spec of what changed comes along
    again = await client.node_sync(node.id, since=full.index, have=[f"web@0@{web_index}"])
    assert set(again.jobs) == {"api@0"}

    # an index from another history (ahead of this store's) answers everything
    reset = await client.node_sync(node.id, since=delta.index + 1000)
    assert {a.id for a in reset.allocations} == ids | new

    # once an allocation left the node, every id is listed again (so the removal shows)
    gone = next(iter(ids))
    txn = server.store.txn()
    txn.delete_alloc(gone)
    server.store.commit(txn)
    after = await client.node_sync(node.id, since=delta.index)
    assert after.alloc_count is None and after.alloc_indexes is not None
    assert set(after.alloc_indexes) == (ids | new) - {gone}
    assert after.allocations == []


async def test_delta_sync_after_server_restart(tmp_path: Path) -> None:
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    server = Server(store, ServerConfig())
    node = add_node(server)
    allocs = place(server, mock_job("web", count=2))
    before = store.node_alloc_index(node.id)
    server.client_update(node.id, [running(allocs[0])])
    store.close()

    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    try:
        # a restarted store counts every node as changed at its last index, and an
        # allocation's stored modify index (a report's included) as its sync index
        assert store.node_alloc_index(node.id) == store.index > before
        assert store.alloc_sync_index(allocs[0].id) == store.index
        assert store.alloc_sync_index(allocs[1].id) == allocs[1].modify_index <= before
    finally:
        store.close()


async def test_reports_are_committed_together(api: tuple[Server, AsyncClient]) -> None:
    server, client = api
    n1, n2 = add_node(server, "n1"), add_node(server, "n2")
    allocs = place(server, mock_job("web", count=4))
    commits = []
    original = server.store.commit

    def commit(txn: Any) -> int:
        index = original(txn)
        commits.append(index)
        return index

    server.store.commit = commit  # type: ignore[method-assign]
    by_node = {n1.id: [a for a in allocs if a.node_id == n1.id], n2.id: []}
    by_node[n2.id] = [a for a in allocs if a.node_id == n2.id]
    *answers, other = await asyncio.gather(
        *(client.update_allocs(nid, [running(a) for a in mine]) for nid, mine in by_node.items()),
        # a report about an allocation of another node is refused (issue 13), alone
        client.update_allocs(n1.id, [running(a) for a in by_node[n2.id]]),
        return_exceptions=True,
    )
    assert isinstance(other, APIError) and other.status == 403
    assert len(commits) == 1 and set(answers) == {commits[0]}
    assert all(server.store.alloc(a.id).client_status == ClientStatus.RUNNING for a in allocs)  # type: ignore[union-attr]


async def test_a_storm_of_reports_is_committed_in_bounded_transactions(
    api: tuple[Server, AsyncClient],
) -> None:
    """At most ``report_batch_max`` allocations a transaction (issue 18: one transaction of
    a whole storm held the event loop for seconds); every report is still committed and
    each request answered with the index of the transaction that took it."""
    server, client = api
    server.config.report_batch_max = 2
    node = add_node(server)
    allocs = place(server, mock_job("web", count=5))
    sizes: list[int] = []
    inner = server.client_update_many

    def counted(reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
        sizes.append(sum(len(updates) for _n, updates in reports))
        return inner(reports)

    server.client_update_many = counted  # type: ignore[method-assign]
    indexes = await asyncio.gather(
        *(client.update_allocs(node.id, [running(a)]) for a in allocs[:4]),
        client.update_allocs(node.id, [running(allocs[4]), running(allocs[4])]),
    )
    assert sizes == [2, 2, 2], sizes  # a request of two goes alone, never split
    assert indexes[0] == indexes[1] < indexes[2] == indexes[3] < indexes[4]
    assert all(server.store.alloc(a.id).client_status == ClientStatus.RUNNING for a in allocs)  # type: ignore[union-attr]


async def test_a_bad_report_fails_alone(api: tuple[Server, AsyncClient]) -> None:
    server, client = api
    node = add_node(server)
    allocs = place(server, mock_job("web", count=2))
    inner = server.client_update_many

    def flaky(reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
        if any(u.id == allocs[1].id for _n, updates in reports for u in updates):
            raise RuntimeError("boom")
        return inner(reports)

    server.client_update_many = flaky  # type: ignore[method-assign]
    good, bad = await asyncio.gather(
        client.update_allocs(node.id, [running(allocs[0])]),
        client.update_allocs(node.id, [running(allocs[1])]),
        return_exceptions=True,
    )
    assert isinstance(good, int) and isinstance(bad, Exception)
    assert server.store.alloc(allocs[0].id).client_status == ClientStatus.RUNNING  # type: ignore[union-attr]
    assert server.store.alloc(allocs[1].id).client_status == ClientStatus.PENDING  # type: ignore[union-attr]


async def test_a_sync_carries_reports(api: tuple[Server, AsyncClient]) -> None:
    server, client = api
    node = add_node(server)
    allocs = place(server, mock_job("web", count=2))
    full = await client.node_sync(node.id, since=0)
    web = f"web@0@{full.job_indexes['web@0']}"

    # the reports are committed, and (being the agent's own) wake nobody: the blocking
    # sync waits its time out and answers nothing new, its `have` taken from the body
    started = time.monotonic()
    same = await client.node_sync(
        node.id,
        index=full.index,
        wait="300ms",
        since=full.index,
        have=[web],
        updates=[running(a) for a in allocs],
        order=("run-1", 1),
    )
    assert time.monotonic() - started >= 0.25
    assert same.index == full.index and same.allocations == [] and same.jobs == {}
    assert all(status_of(server, a.id) == ClientStatus.RUNNING for a in allocs)

    # a change to the node still answers a carrying sync at once; the spec the body's
    # `have` names is left out, and sent when `have` does not name it
    txn = server.store.txn()
    changed = server.store.alloc(allocs[0].id)
    assert changed is not None
    txn.put_alloc(
        changed.model_copy(update={"desired_description": "x", "modify_index": txn.index})
    )
    server.store.commit(txn)
    new = {a.id for a in place(server, mock_job("api", count=1))}
    delta = await client.node_sync(
        node.id, index=full.index, wait="5s", since=full.index, have=[web],
        updates=[running(allocs[1])], order=("run-1", 2),
    )  # fmt: skip
    assert {a.id for a in delta.allocations} == new | {allocs[0].id}
    assert set(delta.jobs) == {"api@0"}
    bare = await client.node_sync(
        node.id, since=full.index, updates=[running(allocs[1])], order=("run-1", 3)
    )
    assert set(bare.jobs) == {"api@0", "web@0"}


async def test_reports_taken_out_of_order_are_refused(api: tuple[Server, AsyncClient]) -> None:
    server, client = api
    node = add_node(server)
    (alloc,) = place(server, mock_job("web", count=1))
    dead = AllocClientUpdate(
        id=alloc.id,
        client_status=ClientStatus.FAILED,
        task_states={"t": TaskState(state=TaskStateName.DEAD, failed=True)},
    )
    await client.update_allocs(node.id, [dead], ("run-1", 5))
    # request 4 of the same run arrives late (a retry after a timeout, or a sync that
    # carried reports and a report racing): refused whole, the newer state stays
    with pytest.raises(Conflict, match="arrived after report 5"):
        await client.update_allocs(node.id, [running(alloc)], ("run-1", 4))
    with pytest.raises(Conflict):
        await client.node_sync(node.id, since=0, updates=[running(alloc)], order=("run-1", 5))
    assert status_of(server, alloc.id) == ClientStatus.FAILED
    # a new run of the agent (restarted) starts its own count; unordered reports (no
    # run given: a hand-made request) are always taken
    await client.update_allocs(node.id, [running(alloc)], ("run-2", 1))
    assert status_of(server, alloc.id) == ClientStatus.RUNNING
    await client.update_allocs(node.id, [dead])
    assert status_of(server, alloc.id) == ClientStatus.FAILED
    # the order is per node: another node's run is no older or newer than this one's
    other = add_node(server, "n2")
    await client.update_allocs(other.id, [], ("run-1", 1))


class Recorder:
    """An ASGI app that notes each request's method and path before passing it on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class OneNode:
    """A started server (SQLite store) and one started agent, over the ASGI transport."""

    server: Server
    store: StateStore
    client: AsyncClient
    agent: Agent
    recorder: Recorder

    def running(self, job: str) -> list[Allocation]:
        return [a for a in self.store.allocs_by_job(job) if a.client_status == "running"]


async def shut_down(agent: Agent, client: AsyncClient, server: Server, store: StateStore) -> None:
    """Stop what a test started: the agent's tasks and loops, the client, the server."""
    await agent.stop_all_tasks(timeout=1)
    await agent.stop()
    await client.aclose()
    store.release_waiters()
    await server.stop()
    store.close()


@contextlib.asynccontextmanager
async def one_node(tmp_path: Path, driver: MockDriver | None = None) -> AsyncIterator[OneNode]:
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    server = Server(store, ServerConfig(heartbeat_ttl=60, heartbeat_grace=60))
    await server.start()
    recorder = Recorder(create_app(server))
    client = AsyncClient("http://podium", transport=httpx.ASGITransport(app=recorder), timeout=5)
    settings = AgentSettings(
        data_dir=str(tmp_path / "agent"), servers=["http://podium"], name="n1", sync_wait=30
    )
    agent = Agent(settings, client, drivers={"mock": driver or MockDriver()})
    await agent.start(http_addr="")
    try:
        async with asyncio.timeout(5):
            await agent.registered.wait()
        yield OneNode(server, store, client, agent, recorder)
    finally:
        await shut_down(agent, client, server, store)


async def test_an_agent_reports_what_a_sync_started_on_its_next_sync(tmp_path: Path) -> None:
    """The runners a sync started report on the agent's next sync (one request per change
    of the node's allocations, not a sync and a report)."""
    async with one_node(tmp_path) as c:
        await c.client.register_job(JobSpec.model_validate(mock_job("web", count=3)))
        await _until(lambda: len(c.running("web")) == 3, what="3 running")
        sync_path = f"/v1/client/node/{c.agent.node_id}/allocations"
        assert ("POST", sync_path) in c.recorder.requests
        assert ("POST", "/v1/client/allocations") not in c.recorder.requests


class GatedDriver(MockDriver):
    """The mock driver, whose starts wait for ``gate``: a task slow to start."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def start(self, ctx: Any) -> Any:
        await self.gate.wait()
        return await super().start(ctx)


async def test_a_task_slow_to_start_reports_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync loop waits only so long for the first states of what it started: a task
    still starting after that is reported by the report loop while the sync is parked."""
    from podium.agent import agent as agent_mod

    monkeypatch.setattr(agent_mod, "FIRST_REPORT_WAIT", 0.2)
    driver = GatedDriver()
    async with one_node(tmp_path, driver) as c:
        try:
            sync_path = f"/v1/client/node/{c.agent.node_id}/allocations"

            def syncs() -> int:
                return sum(path == sync_path for _method, path in c.recorder.requests)

            await c.client.register_job(JobSpec.model_validate(mock_job("web", count=1)))
            await _until(lambda: c.agent.runners, what="a runner")
            before = syncs()
            # past FIRST_REPORT_WAIT, the next sync goes out (and is parked) without the state
            await _until(lambda: syncs() > before, what="the next sync")
            assert not c.agent._gathering
            driver.gate.set()
            await _until(lambda: c.running("web"), what="running")
            assert ("POST", "/v1/client/allocations") in c.recorder.requests
        finally:
            driver.gate.set()


async def test_a_report_the_server_keeps_refusing_does_not_stop_syncs(tmp_path: Path) -> None:
    """One allocation's report fails on the server every time: the node still hears of new
    allocations (the sync carries reports once, not on its retries) and runs them."""
    bad: set[str] = set()
    refused: list[set[str]] = []  # the allocations of each refused report
    async with one_node(tmp_path) as c:
        inner = c.server.client_update_many

        def refusing(reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
            ids = {u.id for _node, updates in reports for u in updates}
            if ids & bad:
                refused.append(ids)
                raise RuntimeError("this report cannot be written")
            return inner(reports)

        c.server.client_update_many = refusing  # type: ignore[method-assign]
        agent = c.agent
        await c.client.register_job(JobSpec.model_validate(mock_job("web", count=1)))
        (first,) = await _until(lambda: list(agent.runners), what="web's runner")
        bad.add(first)
        agent.mark_dirty(agent.runners[first])  # its report is refused from now on
        await c.client.register_job(JobSpec.model_validate(mock_job("api", count=1)))
        await _until(lambda: len(agent.runners) == 2, what="api's allocation on the node")
        (api,) = set(agent.runners) - {first}
        await _until(
            lambda: any(api in ids for ids in refused),
            what="a refused report carrying api's first state",
        )
        await c.client.register_job(JobSpec.model_validate(mock_job("db", count=1)))
        await _until(lambda: len(agent.runners) == 3, what="db's allocation on the node")
        bad.clear()


async def test_restarted_agent_learns_everything(cluster: Cluster) -> None:
    agent = await cluster.add_agent()
    await cluster.run(mock_job(count=3))
    await cluster.until(lambda: len(cluster.running("web")) == 3, what="3 running")
    await cluster.until(lambda: len(agent.runners) == 3, what="3 runners")
    # the agent holds each spec once, shared by its runners
    specs = {id(r.machine.spec) for r in agent.runners.values()}
    assert len(specs) == 1
    # scale down: the delta names the stopped ones; then their removal shows in the ids
    await cluster.client.scale_job("web", "g", 1)
    await cluster.until(lambda: len(cluster.running("web")) == 1, what="scaled to 1")
    await agent.stop()
    cluster.agents.remove(agent)
    again = await cluster.add_agent()  # a fresh agent state: since=0 hears of everything
    await cluster.add_agent()
    await cluster.run(mock_job("api", count=2))
    await cluster.until(lambda: len(cluster.running("api")) == 2, what="api running")
    assert again.synced_index > 0


async def test_a_job_purged_and_registered_again_runs_its_new_spec(cluster: Cluster) -> None:
    agent = await cluster.add_agent()
    first = mock_job(count=1)
    first["groups"]["g"]["tasks"]["t"]["env"] = {"V": "old"}
    await cluster.run(first)
    await cluster.until(lambda: len(cluster.running("web")) == 1, what="the first job running")
    await cluster.client.stop_job("web", purge=True)
    await cluster.until(
        lambda: not agent.runners or all(r.machine.terminal() for r in agent.runners.values()),
        what="stopped",
    )
    second = mock_job(count=1)
    second["groups"]["g"]["tasks"]["t"]["env"] = {"V": "new"}
    await cluster.run(second)  # version 0 again, another spec
    (alloc,) = await cluster.until(lambda: cluster.running("web"), what="the second job running")
    runner = agent.runners[alloc.id]
    assert runner.machine.spec.groups["g"].tasks["t"].env == {"V": "new"}


async def test_agent_fast_routes_answer_as_the_fastapi_ones(tmp_path: Path) -> None:
    """The plain routes for agents' syncs and reports answer what the FastAPI routes would,
    and hand what they do not parse plainly to them (same errors as before)."""
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    server = Server(store, ServerConfig(heartbeat_ttl=10, heartbeat_grace=10))
    app = create_app(server)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://podium",
        headers={NODE_SECRET_HEADER: node_secret("node-n1")},
    )
    try:
        node = add_node(server)
        allocs = place(server, mock_job("web", count=2))
        url = f"/v1/client/node/{node.id}/allocations"
        fast = await http.get(url, params={"since": "0"})
        assert fast.status_code == 200 and fast.headers["X-Podium-Index"]
        assert set(fast.json()["alloc_indexes"]) == {a.id for a in allocs}
        for odd in ("index=abc", "index=1&wait=bogus", "since=-1", "wait=bogus"):
            res = await http.get(f"{url}?{odd}")
            assert res.status_code == 400, (odd, res.text)
        for handed_on in ("since=9&since=0",):  # FastAPI's reading: the last one
            res = await http.get(f"{url}?{handed_on}")
            assert res.status_code == 200 and len(res.json()["allocations"]) == 2, handed_on
        body = {"node_id": node.id, "updates": [running(allocs[0]).model_dump(mode="json")]}
        ok = await http.post("/v1/client/allocations", json=body)
        assert ok.status_code == 200 and ok.json()["index"] > 0
        assert store.alloc(allocs[0].id).client_status == "running"  # type: ignore[union-attr]
        bad = await http.post("/v1/client/allocations", json={"node_id": node.id})
        assert bad.status_code == 400 and "updates" in bad.json()["error"]
        # the sync carrying reports: same answer as the GET, reports written; a body it
        # cannot read goes to FastAPI (its 400), and nothing is written
        carried = {"updates": [running(allocs[1]).model_dump(mode="json")], "have": []}
        both = await http.post(url, params={"since": "0"}, json=carried)
        assert (
            both.status_code == 200 and both.json()["alloc_indexes"] == fast.json()["alloc_indexes"]
        )
        assert store.alloc(allocs[1].id).client_status == "running"  # type: ignore[union-attr]
        before = store.index
        wrong = {"updates": [{"id": allocs[0].id, "client_status": "bogus"}]}
        refused = await http.post(url, json=wrong)
        assert refused.status_code == 400 and "client_status" in refused.json()["error"]
        odd_index = await http.post(f"{url}?index=abc", json=carried)
        assert odd_index.status_code == 400
        for query in ("index=1&wait=bogus", "index=1&index=2&wait=bogus"):  # fast, FastAPI
            late = {**carried, "updates": [running(allocs[0]).model_dump(mode="json")]}
            bogus = await http.post(f"{url}?{query}", json=late)
            assert bogus.status_code == 400 and "bogus" in bogus.json()["error"], query
        unordered = await http.post(url, json={**carried, "session": "run-1"})
        assert unordered.status_code == 400 and "seq" in unordered.json()["error"]
        assert store.index == before  # nothing written by any of them
        paths = app.openapi()["paths"]
        assert "/v1/client/allocations" in paths and url.replace(node.id, "{node_id}") in paths
    finally:
        await http.aclose()
        await server.stop()
        store.close()


# -- a node whose allocations were all collected while its agent was away ------------------


class Switch:
    """An ASGI app that can be swapped (server restart) or cut off (agent away)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.down = False
        self.in_flight = 0
        """Requests let through and not answered yet (a parked blocking query)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.down and scope["type"] == "http":
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"away"})
            return
        self.in_flight += scope["type"] == "http"
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= scope["type"] == "http"


async def _until(pred: Any, timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


async def test_alloc_gced_while_agent_away_then_server_restart(tmp_path: Path) -> None:
    """The node's allocations were all collected while its agent was cut off; the server
    restarts; the agent comes back.  It must stop what it still runs."""
    db = tmp_path / "state.db"
    store = StateStore(SqliteBackend(db))
    server = Server(store, ServerConfig(heartbeat_ttl=60, heartbeat_grace=60))
    await server.start()
    switch = Switch(create_app(server))
    client = AsyncClient("http://podium", transport=httpx.ASGITransport(app=switch), timeout=5)
    agent = Agent(
        AgentSettings(
            data_dir=str(tmp_path / "agent"), servers=["http://podium"], name="n1", sync_wait=0.5
        ),
        client,
        drivers={"mock": MockDriver()},
    )
    await agent.start(http_addr="")
    try:
        async with asyncio.timeout(5):
            await agent.registered.wait()
        await client.register_job(JobSpec.model_validate(mock_job("web", count=1)))
        await _until(lambda: agent.runners, what="runner")
        (alloc_id,) = list(agent.runners)
        await _until(
            lambda: (a := store.alloc(alloc_id)) is not None and a.client_status == "running",
            what="the allocation running",
        )
        # the agent is cut off; meanwhile the allocation is collected (GC of a lost /
        # stopped allocation), and the server restarts
        switch.down = True
        # the blocking query in flight ends first (else it would tell the agent at once)
        await _until(lambda: switch.in_flight == 0, what="the parked sync to end")
        txn = store.txn()
        txn.delete_alloc(alloc_id)
        store.commit(txn)
        store.release_waiters()
        await server.stop()
        store.close()
        store = StateStore(SqliteBackend(db))
        server = Server(store, ServerConfig(heartbeat_ttl=60, heartbeat_grace=60))
        await server.start()
        switch.app = create_app(server)
        switch.down = False
        # within a few sync rounds (sync_wait=0.5s), the agent lets go of it
        await _until(lambda: alloc_id not in agent.runners, what=f"the agent to drop {alloc_id}")
    finally:
        await shut_down(agent, client, server, store)


async def test_an_agent_retries_an_absent_server_at_least_as_often_as_it_heartbeats(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server back from a restart counts TTL + grace from its start: an agent whose retries
    backed off past its heartbeat interval would be marked down although it is fine."""
    store = StateStore()
    server = Server(store, ServerConfig(heartbeat_ttl=0.4, heartbeat_grace=0.4))
    await server.start()
    switch = Switch(create_app(server))
    client = AsyncClient("http://podium", transport=httpx.ASGITransport(app=switch), timeout=5)
    agent = Agent(
        AgentSettings(data_dir=str(tmp_path / "agent"), servers=["http://podium"], name="n1"),
        client,
        drivers={"mock": MockDriver()},
    )
    await agent.start(http_addr="")
    try:
        async with asyncio.timeout(5):
            await agent.registered.wait()
        caplog.set_level("WARNING", logger="podium.agent")

        def retries() -> list[float]:
            return [
                float(r.getMessage().rsplit("retrying in ", 1)[1].rstrip("s)"))
                for r in caplog.records
                if r.getMessage().startswith("cannot reach server")
            ]

        switch.down = True
        await _until(lambda: len(retries()) >= 5, what="five retries")
        assert max(retries()) <= 0.2  # the heartbeat interval: TTL / 2
    finally:
        switch.down = False
        await shut_down(agent, client, server, store)


def test_have_stays_short_enough_for_a_query_string(tmp_path: Path) -> None:
    from podium.agent import agent as agent_mod

    agent = Agent(
        AgentSettings(data_dir=str(tmp_path / "agent"), servers=["http://podium"]),
        None,  # type: ignore[arg-type]  # never started
        drivers={"mock": MockDriver()},
    )
    spec = JobSpec.model_validate(mock_job("web"))
    for i in range(100):
        agent._specs[f"job-{i}@0"] = spec
        agent._spec_indexes[f"job-{i}@0"] = 1000 + i
    assert len(agent._have()) == 100 and "job-7@0@1007" in agent._have()
    for i in range(100, 2000):
        agent._specs[f"job-with-a-long-name-{i}@0"] = spec
    assert sum(len(k) for k in agent._specs) > agent_mod.HAVE_LIMIT
    assert agent._have() == []  # the server then sends the specs of what changed
    agent.state.close()
