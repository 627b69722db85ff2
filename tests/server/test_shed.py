"""Load shedding (issue 18): while the server's event loop runs behind, agents' syncs and
API reads are answered 429 with Retry-After, and heartbeats, registrations and writes are
served; the SDK waits as asked and sends the request again.

The loop is slowed in a controlled way: the test blocks it (``time.sleep``, the very
thing a long commit or a storm of requests does to it) before each request, so the
shedder's lag timer is overdue by more than the limit when the request arrives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.client import AsyncClient, Client
from podium.client import endpoints as ep
from podium.drivers.mock import MockDriver
from podium.errors import Overloaded
from podium.models import ClientStatus, JobSpec, NodeStatus
from podium.models.acl import NODE_SECRET_HEADER
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.server.shed import LoadShedder, kind
from podium.state import StateStore

NODE = {"id": "n1", "name": "n1", "resources": {"cpu": 1000, "memory": 1000}}
LIMIT = 0.2
"""The test server's --shed-lag: a blocked loop of 0.5 s is past it."""


def test_what_may_be_shed() -> None:
    assert kind("GET", "/v1/client/node/n1/allocations") == "sync"
    assert kind("POST", "/v1/client/node/n1/allocations") == "sync"  # reports riding on it
    assert kind("GET", "/v1/jobs") == "read"
    assert kind("GET", "/v1/job/web/allocations") == "read"
    for method, path in [
        ("PUT", "/v1/node/n1/heartbeat"),
        ("POST", "/v1/node/register"),
        ("POST", "/v1/client/allocations"),  # reports on their own
        ("POST", "/v1/jobs"),
        ("DELETE", "/v1/job/web"),
        ("GET", "/v1/status/leader"),
        ("GET", "/v1/metrics"),
        ("GET", "/v1/event/stream"),
        ("GET", "/v1/client/fs/logs/a1"),
        ("GET", "/v1/agent/monitor"),
    ]:
        assert kind(method, path) is None, (method, path)


def test_retry_after_is_the_lag_in_whole_seconds_jittered_up_to_twice_it() -> None:
    shedder = LoadShedder(LIMIT, seed=1)
    for lag, low, high in [(0.3, 1, 2), (2.5, 3, 6), (100.0, 30, 30)]:
        values = {shedder.retry_after(lag) for _ in range(200)}
        assert min(values) >= low and max(values) <= high, (lag, values)
        assert len(values) > 1 or low == high  # spread: agents do not all come back at once


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    server = Server(StateStore(), ServerConfig(shed_lag=LIMIT))
    await server.start()
    app = create_app(server)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://podium")
    try:
        yield server, http
    finally:
        await http.aclose()
        await server.stop()


def stall() -> None:
    """Hold the event loop, as a long commit would (the fault this test injects)."""
    time.sleep(LIMIT * 2.5)


async def test_a_loop_behind_sheds_syncs_and_reads_and_serves_heartbeats_and_writes(
    served: tuple[Server, httpx.AsyncClient],
) -> None:
    server, http = served
    r = await http.put("/v1/node/register", json=NODE)
    assert r.status_code == 200, r.text
    secret = {NODE_SECRET_HEADER: r.json()["node_secret"]}
    assert (await http.get("/v1/jobs")).status_code == 200  # on time: served

    stall()
    r = await http.get("/v1/jobs")
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "overloaded" and "event loop" in r.json()["error"]
    assert 1 <= int(r.headers["retry-after"]) <= 30
    stall()
    assert (await http.get("/v1/client/node/n1/allocations", headers=secret)).status_code == 429

    # what must never wait: a heartbeat, a registration, a write, the status
    stall()
    assert (await http.put("/v1/node/n1/heartbeat", headers=secret)).status_code == 200
    stall()
    r = await http.put("/v1/node/register", json={**NODE, "id": "n2", "name": "n2"})
    assert r.status_code == 200, r.text
    stall()
    job = {"job": "web", "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}}}
    assert (await http.post("/v1/jobs", json={"job": job})).status_code == 200
    stall()
    assert (await http.get("/v1/status/leader")).status_code == 200
    stall()
    metrics = (await http.get("/v1/metrics")).text
    assert 'podium_http_shed_total{kind="read"} 1.0' in metrics, metrics
    assert 'podium_http_shed_total{kind="sync"} 1.0' in metrics
    assert server.store.job("web") is not None

    # caught up (the lag seen drops out of the window): served again
    deadline = time.monotonic() + 30
    while (await http.get("/v1/jobs")).status_code == 429:
        assert time.monotonic() < deadline, "still shedding long after the loop caught up"
        await asyncio.sleep(0.05)
    assert server.shedder.shed["sync"] == 1  # the polls above were shed until then


async def test_shedding_off_serves_everything(served: tuple[Server, httpx.AsyncClient]) -> None:
    server, http = served
    server.shedder.lag_limit = 0  # --shed-lag 0
    stall()
    assert (await http.get("/v1/jobs")).status_code == 200


class ShedTwice:
    """A server that sheds the first two requests (Retry-After: 1), then answers."""

    def __init__(self, retry_after: str = "1") -> None:
        self.calls: list[float] = []
        self.retry_after = retry_after

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(time.monotonic())
        if len(self.calls) <= 2:
            body = {"error": "the server is overloaded", "code": "overloaded"}
            return httpx.Response(429, json=body, headers={"Retry-After": self.retry_after})
        return httpx.Response(200, json=[], headers={"X-Podium-Index": "7"})


async def test_the_async_sdk_waits_as_told_and_sends_again() -> None:
    server = ShedTwice()
    client = AsyncClient("http://podium", transport=httpx.MockTransport(server))
    try:
        result = await client.query(ep.jobs())
        assert result.value == [] and len(server.calls) == 3
        # each wait was the Retry-After, jittered down by at most a tenth
        gaps = [b - a for a, b in zip(server.calls, server.calls[1:], strict=False)]
        assert all(g >= 0.9 for g in gaps), gaps

        server.calls.clear()
        client.overload_budget = 0  # a caller that would rather know at once
        with pytest.raises(Overloaded) as caught:
            await client.query(ep.jobs())
        assert caught.value.status == 429 and caught.value.retry_after == 1.0
        assert len(server.calls) == 1
    finally:
        await client.aclose()


def test_the_sync_sdk_waits_as_told_and_sends_again() -> None:
    server = ShedTwice()
    with Client("http://podium", transport=httpx.MockTransport(server)) as client:
        assert client.query(ep.jobs()).value == []
        assert len(server.calls) == 3


def test_a_429_that_is_not_a_shed_is_not_sent_again() -> None:
    """The log relay's 429 (too many streams) is the caller's to handle: raised at once."""
    calls = []

    def relay_full(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = json.dumps({"error": "too many log streams at once"})
        return httpx.Response(429, content=body, headers={"Retry-After": "1"})

    with Client("http://podium", transport=httpx.MockTransport(relay_full)) as client:
        with pytest.raises(Exception) as caught:
            client.query(ep.jobs())
        assert not isinstance(caught.value, Overloaded) and len(calls) == 1


async def test_an_agent_shed_waits_and_syncs_later_and_its_heartbeats_go_on(
    tmp_path: Path,
) -> None:
    """An agent whose syncs are shed keeps its node alive (heartbeats are never shed),
    waits as told, and runs its allocation once the server has caught up."""
    server = Server(StateStore(), ServerConfig(shed_lag=LIMIT, heartbeat_ttl=1.0))
    await server.start()
    transport = httpx.ASGITransport(app=create_app(server))
    client = AsyncClient("http://podium", transport=transport, timeout=30)
    agent = Agent(
        AgentSettings(
            data_dir=str(tmp_path / "agent"),
            servers=["http://podium"],
            name="n0",
            sync_wait=1.0,
        ),
        AsyncClient("http://podium", transport=transport, timeout=30),
        drivers={"mock": MockDriver()},
    )
    overloaded = {"now": True}
    real = server.shedder.overloaded
    server.shedder.overloaded = lambda: 1.5 if overloaded["now"] else real()  # type: ignore[method-assign]
    try:
        await agent.start(http_addr="")
        await asyncio.wait_for(agent.registered.wait(), 10)
        await client.register_job(
            JobSpec.model_validate(
                {"job": "web", "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}}}
            )
        )
        heard: set[float] = set()  # the distinct times the server heard the node

        def heartbeats() -> int:
            heard.update(server.nodes.last_heard.values())
            return len(heard)

        deadline = time.monotonic() + 30
        while server.shedder.shed["sync"] < 2 or heartbeats() < 3:
            assert time.monotonic() < deadline, (server.shedder.shed, heard)
            await asyncio.sleep(0.05)
        # shed syncs, heard heartbeats: the node is up, its allocation not yet started
        (node,) = server.store.nodes()
        assert node.status == NodeStatus.READY
        web = server.store.allocs_by_job("web")
        assert web and all(a.client_status == ClientStatus.PENDING for a in web)
        overloaded["now"] = False
        while not any(
            a.client_status == ClientStatus.RUNNING for a in server.store.allocs_by_job("web")
        ):
            assert time.monotonic() < deadline, "the allocation never ran once the server caught up"
            await asyncio.sleep(0.05)
        assert server.nodes.missed_heartbeats == 0
    finally:
        with contextlib.suppress(Exception):
            await agent.stop()
        await agent.client.aclose()
        await client.aclose()
        await server.stop()
