"""What the agent tests share: runners on an agent that never talks to a server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.agent.runner import AllocRunner
from podium.drivers.base import Driver
from podium.models import Allocation, JobSpec, Resources

OfflineRunner = Callable[[Allocation, JobSpec, Driver], AllocRunner]


def make_alloc(alloc_id: str = "alloc-1", job_id: str = "web", **fields: Any) -> Allocation:
    """Instance 0 of group ``g`` of ``job_id`` (version 0 unless ``fields`` say otherwise)."""
    values: dict[str, Any] = {
        "id": alloc_id,
        "eval_id": "e",
        "name": f"{job_id}.g[0]",
        "job_id": job_id,
        "job_version": 0,
        "group": "g",
        "index": 0,
        "node_id": "n",
        "resources": Resources(),
    }
    return Allocation(**{**values, **fields})


@pytest.fixture
def offline_runner(tmp_path: Path) -> Iterator[OfflineRunner]:
    """An AllocRunner for ``alloc`` on an agent of its own (never started, no server), not
    yet started; closed with its agent after the test."""
    made: list[tuple[Agent, AllocRunner]] = []

    def make(alloc: Allocation, spec: JobSpec, driver: Driver) -> AllocRunner:
        agent = Agent(
            AgentSettings(
                data_dir=str(tmp_path / f"agent{len(made)}"),
                servers=[],
                workload_identity=False,  # no server to issue tokens
            ),
            client=None,  # type: ignore[arg-type]  # never started: no server needed
            drivers={"mock": driver},
        )
        runner = AllocRunner(agent, alloc, spec)
        agent.runners[alloc.id] = runner
        made.append((agent, runner))
        return runner

    yield make
    for agent, runner in made:
        runner.close()
        agent.state.close()


async def until(cond: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll ``cond`` until it is truthy; fail saying ``what`` was awaited."""
    try:
        async with asyncio.timeout(timeout):
            while not (value := cond()):
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
    return value
