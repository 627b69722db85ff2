"""What an agent keeps per allocation: the allocations it holds share their equal parts."""

from __future__ import annotations

from pathlib import Path

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.drivers.mock import MockDriver
from podium.models import Allocation, JobSpec, Resources

from .conftest import make_alloc


def test_the_allocations_runners_hold_share_their_field_sets_and_resources(
    tmp_path: Path,
) -> None:
    agent = Agent(
        AgentSettings(data_dir=str(tmp_path / "agent"), servers=[]),
        client=None,  # type: ignore[arg-type]  # never started: no server needed
        drivers={"mock": MockDriver()},
    )
    spec = JobSpec.model_validate(
        {"job": "web", "groups": {"g": {"tasks": {"t": {"driver": "mock", "config": {}}}}}}
    )
    # as a sync answer parses them: each with its own set and resources
    # stopped before they started: held by no runner, but compacted as they arrive
    allocs = [
        Allocation.model_validate_json(
            make_alloc(
                f"a{i}", resources=Resources(cpu=100, memory=64), desired_status="stop"
            ).model_dump_json()
        )
        for i in range(3)
    ]
    assert allocs[0].__pydantic_fields_set__ is not allocs[1].__pydantic_fields_set__
    agent.apply_sync(allocs, {"web@0": spec})
    a, b, c = allocs
    assert a.__pydantic_fields_set__ is b.__pydantic_fields_set__ is c.__pydantic_fields_set__
    assert a.resources is b.resources is c.resources
    assert a.model_dump() == {**b.model_dump(), "id": "a0"}  # nothing else changed
    agent.state.close()
