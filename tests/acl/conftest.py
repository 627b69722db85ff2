"""A server with ACLs on, in process: requests go through the real app (edge included)
over httpx's ASGI transport; agents reach it through the SDK, as across machines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.client import AsyncClient
from podium.drivers.mock import MockDriver
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore
from tests.agent.conftest import until as poll_until

JOB: dict[str, Any] = {
    "job": "web",
    "groups": {"g": {"count": 1, "tasks": {"t": {"driver": "mock", "config": {"run_for": "1h"}}}}},
}


@dataclass
class Secure:
    server: Server
    store: StateStore
    app: Any
    tmp: Path
    transport: httpx.ASGITransport
    management: str = ""
    agents: list[Agent] = field(default_factory=list)
    _open: list[Any] = field(default_factory=list)

    def http(self, token: str | None = None, **headers: str) -> httpx.AsyncClient:
        """A raw HTTP client (its status codes are what the tests read)."""
        if token:
            headers["X-Podium-Token"] = token
        client = httpx.AsyncClient(
            transport=self.transport, base_url="http://podium", headers=headers, timeout=30
        )
        self._open.append(client)
        return client

    def sdk(self, token: str | None = None) -> AsyncClient:
        client = AsyncClient("http://podium", transport=self.transport, timeout=30, token=token)
        self._open.append(client)
        return client

    async def token(self, rules: str, name: str = "t") -> str:
        """A client token holding one new policy with ``rules``; its secret."""
        admin = self.http(self.management)
        r = await admin.put(f"/v1/acl/policy/{name}", json={"rules": rules})
        assert r.status_code == 200, r.text
        r = await admin.post("/v1/acl/token", json={"name": name, "policies": [name]})
        assert r.status_code == 200, r.text
        return str(r.json()["secret_id"])

    async def add_agent(self, token: str | None, name: str = "node0") -> Agent:
        n = len(self.agents)
        agent = Agent(
            AgentSettings(
                data_dir=str(self.tmp / f"agent{n}"),
                servers=["http://podium"],
                name=name,
                sync_wait=5.0,
            ),
            self.sdk(token),
            drivers={"mock": MockDriver()},
        )
        await agent.start(http_addr="")
        self.agents.append(agent)
        await asyncio.wait_for(agent.registered.wait(), 10)
        return agent

    async def until(self, cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        return await poll_until(cond, what or str(cond), timeout)

    async def close(self) -> None:
        for agent in self.agents:
            with contextlib.suppress(Exception):
                await agent.stop()
        for client in self._open:
            with contextlib.suppress(Exception):
                await client.aclose()


async def _secure(tmp_path: Path, acl: bool) -> AsyncIterator[Secure]:
    store = StateStore()
    server = Server(
        store,
        ServerConfig(heartbeat_ttl=2.0, heartbeat_grace=2.0, acl=acl, data_dir=str(tmp_path)),
    )
    await server.start()
    app = create_app(server)
    s = Secure(server, store, app, tmp_path, httpx.ASGITransport(app=app))
    try:
        yield s
    finally:
        await s.close()
        await server.stop()


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[Secure]:
    """ACLs on and bootstrapped: ``secure.management`` is the management token."""
    async for s in _secure(tmp_path, acl=True):
        r = await s.http().post("/v1/acl/bootstrap")
        assert r.status_code == 200, r.text
        s.management = r.json()["secret_id"]
        yield s


@pytest.fixture
async def open_server(tmp_path: Path) -> AsyncIterator[Secure]:
    """ACLs off (the default): node identity is still checked."""
    async for s in _secure(tmp_path, acl=False):
        yield s
