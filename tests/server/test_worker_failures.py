"""The scheduling worker under failure: a poison evaluation is retried with backoff and
then parked as failed with its reason while the others go on; a store that cannot
write answers 507 with the cause, the worker survives it, and what failed on it is
retried once writes succeed (podium.server.retry)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.client import AsyncClient
from podium.drivers.mock import MockDriver
from podium.models import EvalStatus, JobSpec
from podium.server import core
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.server.retry import RetryPolicy
from podium.state import SqliteBackend, StateStore
from podium.state.backend import Row
from podium.state.errors import StoreFull
from tests.server.conftest import mock_job

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)


class FillableDisk:
    """A real SQLite backend whose disk can be made "full" (unit tests only: the real
    full disk is tests/server/test_store_process.py's tmpfs)."""

    def __init__(self, path: Path) -> None:
        self.real = SqliteBackend(path)
        self.full = False

    def load(self) -> tuple[int, Iterable[Row]]:
        return self.real.load()

    def commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        if self.full:
            raise StoreFull("writing state.db failed: database or disk is full")
        self.real.commit(index, puts, deletes)

    def close(self) -> None:
        self.real.close()

    def cluster_id(self) -> str | None:
        return None

    def set_cluster_id(self, cluster_id: str) -> None:
        return None

    def snapshot(self, dest: str | os.PathLike[str]) -> None:
        self.real.snapshot(dest)


@dataclass
class Rig:
    server: Server
    store: StateStore
    disk: FillableDisk
    http: httpx.AsyncClient
    agent: Agent

    async def until(self, cond: Any, timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def placed(self, job: str) -> int:
        return len([a for a in self.store.allocs_by_job(job) if not a.terminal()])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    disk = FillableDisk(tmp_path / "state.db")
    store = StateStore(disk)
    server = Server(store, ServerConfig(heartbeat_ttl=5, heartbeat_grace=5))
    server.eval_retry = FAST
    await server.start()
    transport = httpx.ASGITransport(app=create_app(server))
    http = httpx.AsyncClient(transport=transport, base_url="http://podium")
    agent = Agent(
        AgentSettings(data_dir=str(tmp_path / "agent"), servers=["http://podium"], name="n0"),
        AsyncClient("http://podium", transport=transport, timeout=30),
        drivers={"mock": MockDriver()},
    )
    await agent.start(http_addr="")
    await asyncio.wait_for(agent.registered.wait(), 10)
    try:
        yield Rig(server, store, disk, http, agent)
    finally:
        disk.full = False
        await agent.stop()
        await http.aclose()
        await server.stop()
        store.close()


async def test_a_poison_evaluation_is_retried_with_backoff_then_parked(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries: list[float] = []
    real = core.schedule

    def choking(snap: Any, ev: Any, now: float, **kw: Any) -> Any:
        if ev.job_id == "poison":
            tries.append(time.monotonic())
            raise KeyError("the scheduler chokes on this job")
        return real(snap, ev, now, **kw)

    monkeypatch.setattr(core, "schedule", choking)
    poison = rig.server.register_job(JobSpec.model_validate(mock_job("poison"))).eval_id
    good = rig.server.register_job(JobSpec.model_validate(mock_job("good", 2))).eval_id

    parked = await rig.until(
        lambda: (e := rig.store.evaluation(poison)) and e.status == EvalStatus.FAILED and e,
        what="the poison evaluation to be parked",
    )
    assert len(tries) == FAST.attempts
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[0] >= FAST.delay(1) * 0.9 and gaps[1] >= FAST.delay(2) * 0.9, gaps
    assert "failed 3 times" in parked.status_description
    assert "the scheduler chokes on this job" in parked.status_description
    # the others were processed meanwhile, and are still
    good_ev = rig.store.evaluation(good)
    assert good_ev is not None and good_ev.status == EvalStatus.COMPLETE
    assert rig.placed("good") == 2
    rig.server.register_job(JobSpec.model_validate(mock_job("after", 1)))
    await rig.until(lambda: rig.placed("after") == 1, what="a later job to be placed")


async def test_a_full_disk_answers_507_and_failed_evaluations_run_once_it_writes(
    rig: Rig,
) -> None:
    # the registration is stored; the disk fills before the worker commits its plan
    first = rig.server.register_job(JobSpec.model_validate(mock_job("first", 1))).eval_id
    rig.disk.full = True
    await asyncio.sleep(0)  # the worker's turn: its plan commit fails

    answer = await rig.http.post("/v1/jobs", json={"job": mock_job("second", 1)})
    assert answer.status_code == 507, answer.text
    body = answer.json()
    assert "database or disk is full" in body["error"] and "nothing changed" in body["error"]
    assert rig.store.job("second") is None
    # the worker is alive and keeps retrying; nothing is placed while the disk is full
    await rig.until(
        lambda: rig.server._eval_failures.get(first) and rig.server._eval_failures[first].store,
        what="the evaluation to fail on the store",
    )
    assert all(not t.done() for t in rig.server._tasks), "a background loop died"
    assert rig.placed("first") == 0

    rig.disk.full = False
    answer = await rig.http.post("/v1/jobs", json={"job": mock_job("second", 1)})
    assert answer.status_code == 200, answer.text
    await rig.until(lambda: rig.placed("second") == 1, what="the new job to be placed")
    await rig.until(lambda: rig.placed("first") == 1, what="the failed evaluation's retry")
    ev = rig.store.evaluation(first)
    assert ev is not None and ev.status == EvalStatus.COMPLETE


async def test_a_server_restarted_with_a_poison_evaluation_starts_and_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    store = StateStore(SqliteBackend(path))
    ev_id = Server(store).register_job(JobSpec.model_validate(mock_job("poison"))).eval_id
    store.close()

    def choking(*_: Any, **__: Any) -> Any:
        raise RuntimeError("poison")

    monkeypatch.setattr(core, "schedule", choking)
    store = StateStore(SqliteBackend(path))
    server = Server(store)
    server.eval_retry = FAST
    await asyncio.wait_for(server.start(), 5)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(server)), base_url="http://podium"
    )
    try:
        answer = await http.get("/v1/status")
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ev = store.evaluation(ev_id)
            if ev is not None and ev.status == EvalStatus.FAILED:
                break
            assert (await http.get("/v1/jobs")).status_code == 200
            await asyncio.sleep(0.02)
        ev = store.evaluation(ev_id)
        assert ev is not None and ev.status == EvalStatus.FAILED, ev
        assert "poison" in ev.status_description
    finally:
        await http.aclose()
        await server.stop()
        store.close()
