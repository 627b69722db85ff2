"""What saving runners to the local state costs: a spec they share is dumped once per flush."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podium.agent.agent import Agent
from podium.agent.localstate import CACHE_KIB, LocalState
from podium.agent.runner import AllocRunner
from podium.drivers.mock import MockDriver
from podium.models import Allocation, JobSpec

from .conftest import OfflineRunner, make_alloc

SPEC = JobSpec.model_validate(
    {"job": "web", "groups": {"g": {"tasks": {"t": {"driver": "mock", "config": {}}}}}}
)


def counting(monkeypatch: pytest.MonkeyPatch, cls: type[Any]) -> list[int]:
    calls: list[int] = []
    dump = cls.model_dump_json

    def wrapper(self: Any, **kw: Any) -> str:
        calls.append(1)
        return str(dump(self, **kw))

    monkeypatch.setattr(cls, "model_dump_json", wrapper)
    return calls


async def test_a_flush_dumps_a_shared_spec_once(
    offline_runner: OfflineRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = offline_runner(make_alloc("a1"), SPEC, MockDriver())
    agent = first.host
    assert isinstance(agent, Agent)
    second = AllocRunner(agent, make_alloc("a2"), SPEC)
    agent.runners["a2"] = second
    specs = counting(monkeypatch, JobSpec)
    allocs = counting(monkeypatch, Allocation)

    agent._persist = {"a1", "a2"}
    agent._flush_persist()
    assert (len(specs), len(allocs)) == (1, 2)
    agent._persist = {"a1", "a2"}
    agent._flush_persist()
    assert (len(specs), len(allocs)) == (2, 4)

    newer = make_alloc("a1", client_description="changed", modify_index=7)
    first.update(newer, SPEC)
    agent._persist = {"a1"}
    agent._flush_persist()
    assert len(allocs) == 5
    stored = {s.id: s for s in agent.state.load()}
    assert json.loads(stored["a1"].alloc)["modify_index"] == 7
    assert json.loads(stored["a2"].spec) == json.loads(stored["a1"].spec)
    second.close()


def test_the_local_state_keeps_a_small_page_cache(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "state.db")
    try:
        (size,) = state._db.execute("PRAGMA cache_size").fetchone()
        assert size == -CACHE_KIB and CACHE_KIB < 2000  # SQLite's default: -2000
    finally:
        state.close()
