"""AsyncClient without a transport: real sockets through aiohttp, to a real uvicorn.

The other SDK tests go through httpx's mock and ASGI transports; these check the
path a real agent takes (podium.client._aio): answers, blocking queries, errors,
quoting, and the agent's sync parsed straight from its bytes with reused specs.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from podium.client import AsyncClient, ServerUnreachable, endpoints
from podium.client.results import SpecCache
from podium.errors import NotFound, SpecError
from podium.models import DriverInfo, JobSpec, Node, NodeResources
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore

from ..server.conftest import mock_job
from ..serving import start_uvicorn as _serve


@pytest.fixture
async def real() -> AsyncIterator[tuple[Server, str]]:
    server = Server(StateStore(), ServerConfig())
    await server.start()
    http, task, address = await _serve(create_app(server))
    try:
        yield server, address
    finally:
        http.should_exit = True
        await task
        await server.stop()


async def test_reads_writes_and_errors_over_real_sockets(real: tuple[Server, str]) -> None:
    _, address = real
    async with AsyncClient(address) as c:
        result = await c.register_job(JobSpec.model_validate(mock_job("web", 2)))
        assert result.eval_id
        info = await c.job("web")
        assert info.spec.id == "web" and info.spec.groups["g"].count == 2
        with pytest.raises(NotFound):
            await c.job("nope")
        with pytest.raises(SpecError) as bad:
            await c.register_job({"job": "x", "groups": {"g": {"count": -1, "tasks": {}}}})
        assert bad.value.issues
        await c.var_put("team-a/db", {"password": "s3cret"})
        got = await c.var_get("team-a/db")
        assert got.items == {"password": "s3cret"}


async def test_blocking_query_waits_for_a_change(real: tuple[Server, str]) -> None:
    _, address = real
    async with AsyncClient(address) as c, AsyncClient(address) as writer:
        first = (await c.query(endpoints.jobs())).index
        waiting = asyncio.create_task(c.jobs(index=first, wait="5s"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await writer.register_job(JobSpec.model_validate(mock_job("later")))
        async with asyncio.timeout(5):
            jobs = await waiting
        assert [j.id for j in jobs] == ["later"]


async def test_node_sync_parses_bytes_and_reuses_known_specs(real: tuple[Server, str]) -> None:
    server, address = real
    node = Node(
        id="n1",
        name="n1",
        resources=NodeResources(cpu=4000, memory=4096),
        drivers={"mock": DriverInfo(detected=True, healthy=True)},
    )
    async with AsyncClient(address) as c:
        await c.register_node(node)
        await c.register_job(JobSpec.model_validate(mock_job("web", 2)))
        async with asyncio.timeout(5):
            while len(server.store.allocs_by_node("n1")) < 2:
                await asyncio.sleep(0.02)
        cache: SpecCache = {}
        sync = await c.node_sync("n1", since=0, specs=cache)
        assert len(sync.allocations) == 2
        spec = sync.spec_for(sync.allocations[0])
        assert spec is not None and spec.id == "web"
        assert list(cache.values()) == [spec]
        again = await c.node_sync("n1", since=0, specs=cache)
        assert again.spec_for(again.allocations[0]) is spec  # taken from the cache
        fresh = await c.node_sync("n1", since=0)
        assert fresh.spec_for(fresh.allocations[0]) == spec
        assert fresh.spec_for(fresh.allocations[0]) is not spec
        result = await c.query(endpoints.jobs())
        assert result.raw[0]["id"] == "web"  # raw stays the decoded body


async def test_refused_connection_says_how_to_start_a_server() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    async with AsyncClient(f"127.0.0.1:{port}", timeout=2) as c:
        with pytest.raises(ServerUnreachable, match="podium agent --dev"):
            await c.status()


async def test_slow_answer_is_a_timeout() -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> JSONResponse:
        await release.wait()  # answers only once the test is over
        return JSONResponse({})

    http, task, address = await _serve(Starlette(routes=[Route("/v1/status", slow)]))
    try:
        async with AsyncClient(address, timeout=0.3) as c:
            with pytest.raises(ServerUnreachable, match="did not answer in time"):
                await c.status()
    finally:
        release.set()
        http.should_exit = True
        await task
