"""The heartbeat lane (issue 18, podium.server.lane): heartbeats answered on a listener and
a thread of their own while the server's event loop is held; everything else the lane
cannot answer goes to the API's app on the loop; agents follow the lane and fall back.

A real server (memory store), its API on a real socket and the lane on another, in this
test's event loop.  The loop is held the way a long evaluation holds it: by blocking it
(here, until the lane has answered, so the test cannot pass by waiting it out)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from podium.client import AsyncClient, Client
from podium.client._http import HeartbeatLane as LaneChoice
from podium.client._http import ServerUnreachable
from podium.errors import APIError, NotFound
from podium.models import Node, NodeStatus
from podium.models.acl import NODE_SECRET_HEADER
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.server.lane import HeartbeatLane
from podium.state import StateStore

HELD = 30.0
"""The longest the tests hold the loop waiting for the lane (reached only on failure)."""


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def make_http(app: Any) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))


@dataclass
class Served:
    server: Server
    url: str
    lane: HeartbeatLane


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    server = Server(StateStore(), ServerConfig(heartbeat_ttl=30, heartbeat_grace=30))
    await server.start()
    app = create_app(server)
    sock = listener()
    http = make_http(app)
    task = asyncio.create_task(http.serve(sockets=[sock]))
    lane = HeartbeatLane(server, app, listener(), make_http)
    await lane.start()
    try:
        yield Served(server, f"http://127.0.0.1:{sock.getsockname()[1]}", lane)
    finally:
        await lane.stop()
        http.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await server.stop()


def node(name: str) -> Node:
    return Node.model_validate(
        {"id": name, "name": name, "resources": {"cpu": 1000, "memory": 1000}}
    )


async def test_a_heartbeat_is_heard_on_the_lane_while_the_event_loop_is_held(
    served: Served,
) -> None:
    client = Client(served.url, timeout=HELD)
    try:
        answer = await asyncio.to_thread(client.register_node, node("n1"))
        assert answer["heartbeat_url"] == served.lane.url  # the agent is told where
        lane_answered = threading.Event()
        route_answered = threading.Event()

        def beat_on_the_lane() -> None:
            client.heartbeat("n1")
            lane_answered.set()

        def beat_on_the_api_route() -> None:
            with httpx.Client(base_url=served.url, timeout=HELD) as plain:
                plain.put("/v1/node/n1/heartbeat", headers={NODE_SECRET_HEADER: secret})
            route_answered.set()

        secret = client.node_secrets["n1"]
        before = served.server.nodes.last_heard["n1"]
        route = threading.Thread(target=beat_on_the_api_route)
        route.start()
        threading.Thread(target=beat_on_the_lane).start()
        # The loop is held from here until the lane answered (or HELD passed: a failure).
        heard = lane_answered.wait(HELD)
        route_during_hold = route_answered.is_set()
        assert heard, "the lane did not answer while the event loop was held"
        assert not route_during_hold  # the API's own route waited for the loop meanwhile
        assert served.server.lane_counts["heard"] == 1
        assert served.server.nodes.last_heard["n1"] >= before
        await asyncio.to_thread(route.join, HELD)
        assert route_answered.is_set()  # and answered once the loop ran again
    finally:
        await asyncio.to_thread(client.close)


async def test_what_the_lane_cannot_answer_is_answered_as_the_api_answers_it(
    served: Served,
) -> None:
    server = served.server
    client = Client(served.url, timeout=HELD)
    try:
        await asyncio.to_thread(client.register_node, node("n1"))
        secret = client.node_secrets["n1"]
        with httpx.Client(base_url=served.lane.url, timeout=HELD) as lane:
            unknown = await asyncio.to_thread(
                lane.put, "/v1/node/ghost/heartbeat", headers={NODE_SECRET_HEADER: secret}
            )
            assert unknown.status_code == 404 and "not registered" in unknown.text
            wrong = await asyncio.to_thread(
                lane.put, "/v1/node/n1/heartbeat", headers={NODE_SECRET_HEADER: "x" * 32}
            )
            assert wrong.status_code == 403 and "secret" in wrong.text
            other = await asyncio.to_thread(lane.get, "/v1/jobs")
            assert other.status_code == 404 and "heartbeats only" in other.text
        assert server.lane_counts == {"heard": 0, "handed": 2}
        # a node declared down comes back through the loop (a write), as on the API
        txn = server.store.txn()
        down = server.store.node("n1")
        assert down is not None
        txn.put_node(down.model_copy(update={"status": NodeStatus.DOWN}))
        server.store.commit(txn)
        await asyncio.to_thread(client.heartbeat, "n1")
        back = server.store.node("n1")
        assert back is not None and back.status == NodeStatus.READY
        assert back.status_description == "heartbeat resumed"
        assert server.lane_counts == {"heard": 0, "handed": 3}
        await asyncio.to_thread(client.heartbeat, "n1")
        assert server.lane_counts == {"heard": 1, "handed": 3}
        with pytest.raises(NotFound):
            await asyncio.to_thread(client.heartbeat, "ghost")
    finally:
        await asyncio.to_thread(client.close)


async def test_a_server_that_does_not_lead_hands_every_heartbeat_to_its_loop(
    served: Served,
) -> None:
    client = Client(served.url, timeout=HELD)
    try:
        await asyncio.to_thread(client.register_node, node("n1"))
        await served.server.leader.stop()  # as a follower: its API forwards heartbeats
        await asyncio.to_thread(client.heartbeat, "n1")
        assert served.server.lane_counts == {"heard": 0, "handed": 1}
    finally:
        await asyncio.to_thread(client.close)


async def test_on_a_secure_server_the_lane_wants_the_agents_certificate() -> None:
    server = Server(StateStore(), ServerConfig())
    await server.start()
    lane = HeartbeatLane(server, create_app(server), listener(), make_http, tls=True)
    await lane.start()
    try:
        assert lane.url.startswith("https://")
        # served without TLS here: the guard sees no certificate, as for a caller with none
        plain = lane.url.replace("https://", "http://")
        async with httpx.AsyncClient(base_url=plain, timeout=HELD) as http:
            answer = await http.put("/v1/node/n1/heartbeat")
        assert answer.status_code == 401
        assert "client certificate" in answer.text
    finally:
        await lane.stop()
        await server.stop()


async def test_an_agent_sends_heartbeats_to_the_lane_and_falls_back_when_it_is_gone(
    served: Served,
) -> None:
    client = AsyncClient(served.url, timeout=HELD)
    try:
        await client.register_node(node("n1"))
        assert client.lane.url == served.lane.url
        await client.heartbeat("n1")
        assert served.server.lane_counts["heard"] == 1
        await served.lane.stop()  # the lane's port closes: connections are refused
        answer = await client.heartbeat("n1")  # sent again on the API's route at once
        assert answer["heartbeat_ttl"] == 30
        assert "heartbeat_url" not in answer  # the server no longer names one
        assert client.lane.url is None
        assert served.server.lane_counts["heard"] == 1
    finally:
        await client.aclose()


def test_a_lane_that_could_not_be_reached_is_passed_over_for_a_while() -> None:
    now = [100.0]
    lane = LaneChoice(clock=lambda: now[0])
    lane.learn({"heartbeat_url": "http://s:4647"})
    assert lane.url == "http://s:4647"
    lane.failed(ServerUnreachable("lost", "http://s:4647", "lost"))
    assert lane.url == "http://s:4647"  # a dropped keep-alive is not held against it
    lane.failed(ServerUnreachable("refused", "http://s:4647", "connect"))
    assert lane.url is None
    lane.learn({"heartbeat_url": "http://s:4647"})
    assert lane.url is None  # paused
    lane.learn({"heartbeat_url": "http://s:5000"})
    assert lane.url == "http://s:5000"  # another lane (a restarted server's) at once
    now[0] += 61
    lane.learn({"heartbeat_url": "http://s:4647"})
    assert lane.url == "http://s:4647"
    lane.learn({"index": 3})
    assert lane.url is None  # a server without a lane (any more)


async def test_an_api_error_from_the_lane_is_raised_as_the_apis_would_be(
    served: Served,
) -> None:
    client = AsyncClient(served.url, timeout=HELD)
    try:
        await client.register_node(node("n1"))
        client.node_secrets["n1"] = "y" * 32
        with pytest.raises(APIError) as refused:
            await client.heartbeat("n1")
        assert refused.value.status == 403
        assert client.lane.url == served.lane.url  # an answer: the lane stays
    finally:
        await client.aclose()
