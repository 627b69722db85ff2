"""What saving runners to the local state costs: a shared spec dumped once per flush, an
allocation only when the server sent a new one."""

from __future__ import annotations

import json
from typing import Any

import pytest

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


async def test_a_flush_dumps_a_shared_spec_once_and_an_allocation_only_when_new(
    offline_runner: OfflineRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = offline_runner(make_alloc("a1"), SPEC, MockDriver())
    agent = first.agent
    second = AllocRunner(agent, make_alloc("a2"), SPEC)
    agent.runners["a2"] = second
    specs = counting(monkeypatch, JobSpec)
    allocs = counting(monkeypatch, Allocation)

    agent._persist = {"a1", "a2"}
    agent._flush_persist()
    assert (len(specs), len(allocs)) == (1, 2)
    agent._persist = {"a1", "a2"}
    agent._flush_persist()
    assert (len(specs), len(allocs)) == (2, 2)  # the allocations did not change

    newer = make_alloc("a1", client_description="changed", modify_index=7)
    first.update(newer, SPEC)
    agent._persist = {"a1"}
    agent._flush_persist()
    assert len(allocs) == 3
    stored = {s.id: s for s in agent.state.load()}
    assert json.loads(stored["a1"].alloc)["modify_index"] == 7
    assert json.loads(stored["a2"].spec) == json.loads(stored["a1"].spec)
    second.close()
