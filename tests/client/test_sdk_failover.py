"""AsyncClient with several servers (``fallbacks``), as an agent of a cluster holds them: a
server that cannot be connected to is passed over at once, the request is never lost or
sent twice, and a server that dropped a request is passed over for the next one."""

from __future__ import annotations

import httpx
import pytest

from podium.client import AsyncClient, ServerUnreachable
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore

from ..server.conftest import mock_job
from ..serving import start_uvicorn as _serve

_DOWN = "http://127.0.0.1:1"  # nothing listens on port 1 here: the connection is refused


async def test_a_server_that_refuses_connections_is_passed_over_at_once() -> None:
    """Through aiohttp and real sockets, the agent's path."""
    server = Server(StateStore(), ServerConfig())
    await server.start()
    http, task, live = await _serve(create_app(server))
    try:
        async with AsyncClient(_DOWN, fallbacks=[live]) as client:
            assert client.servers == [_DOWN, live]
            result = await client.register_job(mock_job("web"))
            assert client.address == live
            assert result.eval_id
            assert [j.id for j in await client.jobs()] == ["web"]  # registered once
            assert len(server.store.job_versions("web", "default")) == 1
    finally:
        http.should_exit = True
        await task
        await server.stop()


async def test_without_fallbacks_the_error_is_the_servers() -> None:
    async with AsyncClient(_DOWN) as client:
        with pytest.raises(ServerUnreachable) as caught:
            await client.status()
        assert caught.value.kind == "connect" and client.address == _DOWN


async def test_a_dropped_request_is_raised_and_the_next_goes_elsewhere() -> None:
    """A timeout or a dropped connection may have reached the server: the request is
    not repeated on another one (a write could land twice); the next request moves on."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "a.test":
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json={"version": "0", "index": 3, "nodes": 0, "jobs": 0})

    client = AsyncClient(
        "http://a.test", fallbacks=["http://b.test"], transport=httpx.MockTransport(answer)
    )
    async with client:
        with pytest.raises(ServerUnreachable) as caught:
            await client.status()
        assert caught.value.kind == "lost"
        assert asked == ["a.test"] and client.address == "http://b.test"
        await client.status()
        assert asked == ["a.test", "b.test"]
