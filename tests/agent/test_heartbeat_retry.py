"""An agent whose heartbeat goes unanswered sends it again after TTL/2, not after its
client's whole timeout (issue 18: a heartbeat stuck behind a server's backlog or on a dead
connection must not cost the node its TTL + grace).

A real server app (in-process, ASGI) whose heartbeat route holds the first two requests
forever; the agent's client would wait 60 s for each.  With a TTL of 2 s (and a grace of
8 s, room for a busy machine) the node stays ready: the agent drops each held heartbeat after
1 s and the third is answered about 3 s after registration, where waiting on the first
would have let the node go down after 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.agent.agent import Agent, heartbeat_deadline
from podium.agent.config import AgentSettings
from podium.client import AsyncClient
from podium.drivers.mock import MockDriver
from podium.models import NodeStatus
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore

TTL = 2.0
GRACE = 8.0


class HoldHeartbeats:
    """The app, but the first ``hold`` heartbeat requests never get an answer."""

    def __init__(self, app: Any, hold: int) -> None:
        self.app = app
        self.hold = hold
        self.seen = 0
        self.held = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/heartbeat"):
            self.seen += 1
            if self.held < self.hold:
                self.held += 1
                await asyncio.Event().wait()  # until the client gives up (cancelled)
        await self.app(scope, receive, send)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server(StateStore(), ServerConfig(heartbeat_ttl=TTL, heartbeat_grace=GRACE))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_an_unanswered_heartbeat_is_sent_again_after_ttl_over_two(
    server: Server, tmp_path: Path
) -> None:
    assert heartbeat_deadline(TTL) == 1.0 and heartbeat_deadline(100.0) == 10.0
    app = HoldHeartbeats(create_app(server), hold=2)
    client = AsyncClient("http://podium", transport=httpx.ASGITransport(app=app), timeout=60)
    agent = Agent(
        AgentSettings(data_dir=str(tmp_path / "agent"), servers=["http://podium"], name="n0"),
        client,
        drivers={"mock": MockDriver()},
    )
    await agent.start(http_addr="")
    try:
        await asyncio.wait_for(agent.registered.wait(), 10)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        # the held two, then one answered (a third request reaching the app)
        while app.seen < 3 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert app.held == 2 and app.seen >= 3, (app.held, app.seen)
        assert agent.metrics.heartbeat_retries == 2
        # the answered heartbeat is timed from its first send: both held tries count
        histogram = agent.metrics.heartbeat_histogram().samples
        counts = {s.labels.get("le"): s.value for s in histogram if s.name.endswith("_bucket")}
        assert counts["+Inf"] - counts["1.0"] >= 1, counts  # one took over 2 s
        # every heartbeat check so far found the node heard within TTL + grace
        assert server.nodes.missed_heartbeats == 0
        (node,) = server.store.nodes()
        assert node.status == NodeStatus.READY
    finally:
        with contextlib.suppress(Exception):
            await agent.stop()
        await client.aclose()
