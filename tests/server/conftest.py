"""The in-process cluster: a server and N agents (mock driver) in one event loop.

Agents reach the server through httpx's ASGI transport (no sockets), through
the same SDK and the same routes as across machines.  After every test the
cluster's invariants are checked (after dask's ``gen_cluster``).
"""

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
from podium.models import Allocation, ClientStatus, EvalStatus, JobSpec
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore


@dataclass
class Cluster:
    server: Server
    store: StateStore
    client: AsyncClient
    tmp: Path
    agents: list[Agent] = field(default_factory=list)
    _transport: httpx.ASGITransport | None = None

    async def add_agent(self, name: str | None = None, **settings: Any) -> Agent:
        n = len(self.agents)
        client = AsyncClient("http://podium", transport=self._transport, timeout=30)
        agent = Agent(
            AgentSettings(
                data_dir=str(self.tmp / f"agent{n}"),
                servers=["http://podium"],
                name=name or f"node{n}",
                sync_wait=5.0,
                **settings,
            ),
            client,
            drivers={"mock": MockDriver()},
        )
        await agent.start(http_addr="")
        await asyncio.wait_for(agent.registered.wait(), 5)
        self.agents.append(agent)
        return agent

    async def run(self, spec: dict[str, Any]) -> str:
        result = await self.client.register_job(JobSpec.model_validate(spec))
        return result.eval_id

    async def until(self, cond: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            value = cond()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or cond}")

    async def settled(self, job: str) -> None:
        """Wait until none of the job's evaluations is pending: what the scheduler will do
        about what has happened so far, it has done."""
        await self.until(
            lambda: all(e.status != EvalStatus.PENDING for e in self.store.evals_by_job(job)),
            what=f"{job}'s evaluations to be processed",
        )

    def allocs(self, job: str) -> list[Allocation]:
        return self.store.allocs_by_job(job)

    def running(self, job: str) -> list[Allocation]:
        return [
            a
            for a in self.allocs(job)
            if a.client_status == ClientStatus.RUNNING and a.desired_status == "run"
        ]

    def _canary(self, alloc: Allocation) -> bool:
        ds = alloc.deployment_status
        if ds is None or not ds.canary or alloc.deployment_id is None:
            return False
        dep = self.store.deployment(alloc.deployment_id)
        group = dep.groups.get(alloc.group) if dep is not None else None
        return group is not None and not group.promoted

    def check_invariants(self) -> None:
        for node in self.store.nodes():
            cap = node.capacity()
            live = [a for a in self.store.allocs_by_node(node.id) if a.uses_resources()]
            assert sum(a.resources.cpu for a in live) <= cap.cpu, f"{node.name} cpu over-committed"
            assert sum(a.resources.memory for a in live) <= cap.memory, (
                f"{node.name} memory over-committed"
            )
        for job in self.store.jobs():
            # an instance is a name, and for system jobs (one per node) a name on a node
            # (a canary of an unpromoted deployment runs beside the instance it may replace)
            names = [
                (a.name, a.node_id if job.type == "system" else "", self._canary(a))
                for a in self.store.allocs_by_job(job.id)
                if not a.terminal()
            ]
            assert len(names) == len(set(names)), f"duplicate live instances of {job.id}: {names}"
        for reg in self.store.service_registrations():
            # the catalog holds only instances that run and are wanted
            alloc = self.store.alloc(reg.alloc_id)
            assert alloc is not None and not alloc.terminal(), f"{reg.id} outlived its allocation"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    store = StateStore()
    server = Server(store, ServerConfig(heartbeat_ttl=0.5, heartbeat_grace=0.5))
    await server.start()
    app = create_app(server)
    transport = httpx.ASGITransport(app=app)
    client = AsyncClient("http://podium", transport=transport, timeout=30)
    c = Cluster(server=server, store=store, client=client, tmp=tmp_path, _transport=transport)
    try:
        yield c
        c.check_invariants()
    finally:
        for agent in c.agents:
            with contextlib.suppress(Exception):
                await agent.stop()
        await client.aclose()
        await server.stop()


def mock_job(
    job_id: str = "web",
    count: int = 1,
    *,
    job_type: str = "service",
    run_for: str = "1h",
    exit_code: int = 0,
    cpu: int = 100,
    memory: int = 100,
    restart: dict[str, Any] | None = None,
    reschedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    group: dict[str, Any] = {
        "count": count,
        "tasks": {
            "t": {
                "driver": "mock",
                "config": {"run_for": run_for, "exit_code": exit_code},
                "resources": {"cpu": cpu, "memory": memory},
            }
        },
    }
    if restart:
        group["restart"] = restart
    if reschedule:
        group["reschedule"] = reschedule
    return {"job": job_id, "type": job_type, "groups": {"g": group}}


def place(server: Server, spec: dict[str, Any]) -> list[Allocation]:
    """Register ``spec`` and run its evaluation on a server whose loops are not started;
    the job's live allocations."""
    result = server.register_job(JobSpec.model_validate(spec))
    ev = server.store.evaluation(result.eval_id)
    assert ev is not None
    server.process_eval(ev)
    return [a for a in server.store.allocs_by_job(spec["job"]) if not a.terminal()]
