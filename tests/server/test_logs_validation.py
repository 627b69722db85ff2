"""The server's logs proxy passes on only a task of the allocation's job and a sane
offset: ``task=../../x`` is a 404 naming the tasks, a negative offset a 400, and neither
reaches the agent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from podium.models import Node, NodeResources, NodeStatus
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore

from .conftest import mock_job, place


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Server]]:
    server = Server(StateStore())
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client, server


async def test_logs_task_and_offset_are_checked_before_the_agent_is_asked(
    api: tuple[httpx.AsyncClient, Server],
) -> None:
    client, server = api
    server.register_node(
        Node(
            id="n1",
            name="n1",
            status=NodeStatus.READY,
            http_addr="http://127.0.0.1:1",  # nothing listens: a request that got there is a 502
            resources=NodeResources(cpu=4000, memory=4000),
            drivers={"mock": {"detected": True, "healthy": True}},
        )
    )
    (alloc,) = place(server, mock_job())
    url = f"/v1/allocation/{alloc.id}/logs"
    r = await client.get(url, params={"task": "../../../../etc/shadow"})
    assert r.status_code == 404, r.text
    assert "has no task '../../../../etc/shadow' (tasks: t)" in r.json()["error"]
    for offset in ("-1", "abc"):
        r = await client.get(url, params={"task": "t", "offset": offset})
        assert r.status_code == 400, r.text
    r = await client.get(url, params={"task": "t"})
    assert r.status_code == 502  # a good request does go to the agent
