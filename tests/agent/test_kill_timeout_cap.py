"""``--max-kill-timeout``: the agent waits at most its cap between the kill signal and
SIGKILL, whatever ``kill_timeout`` a job asks for (Nomad's client ``max_kill_timeout``).

A real raw_exec process that ignores SIGTERM, a job that says ``kill_timeout: 1h``, an
agent capped at 1 s: the task is dead by SIGKILL within seconds, not an hour."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from podium.agent.agent import Agent
from podium.agent.allocrunner import Phase
from podium.agent.config import AgentSettings
from podium.agent.runner import AllocRunner
from podium.drivers.raw_exec import RawExecDriver
from podium.models import DesiredStatus, JobSpec

from .conftest import make_alloc, until

TRAPS_TERM = "trap '' TERM; echo ready; while :; do sleep 0.1; done"


def _spec(kill_timeout: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job": "web",
            "groups": {
                "g": {
                    "tasks": {
                        "t": {
                            "driver": "raw_exec",
                            "kill_timeout": kill_timeout,
                            "config": {"command": "/bin/sh", "args": ["-c", TRAPS_TERM]},
                        }
                    }
                }
            },
        }
    )


def test_settings_cap_every_kill_timeout() -> None:
    settings = AgentSettings(data_dir="/x", servers=[], max_kill_timeout=30.0)
    assert settings.kill_timeout(3600.0) == 30.0
    assert settings.kill_timeout(5.0) == 5.0
    assert AgentSettings(data_dir="/x", servers=[]).max_kill_timeout == 30.0  # Nomad's default


@pytest.mark.parametrize("kill_timeout", ["1h"])
async def test_a_task_that_traps_sigterm_is_killed_at_the_cap(
    tmp_path: Path, kill_timeout: str
) -> None:
    agent = Agent(
        AgentSettings(
            data_dir=str(tmp_path / "agent"),
            servers=[],
            workload_identity=False,
            max_kill_timeout=1.0,
        ),
        client=None,  # type: ignore[arg-type]  # never started: no server needed
        drivers={"raw_exec": RawExecDriver()},
    )
    spec = _spec(kill_timeout)
    alloc = make_alloc()
    runner = AllocRunner(agent, alloc, spec)
    agent.runners[alloc.id] = runner
    try:
        runner.start()
        track = runner.machine.tasks["t"]
        await until(lambda: track.phase == Phase.RUNNING, "the task to run", timeout=30)
        stdout = Path(runner.log_path("t", "stdout"))
        await until(
            lambda: stdout.exists() and "ready" in stdout.read_text(),
            "the task to trap SIGTERM",
            timeout=30,
        )
        asked = time.monotonic()
        runner.update(alloc.model_copy(update={"desired_status": DesiredStatus.STOP}), spec)
        # An hour's kill_timeout would outlast this; the agent's cap (1 s) does not.
        await until(lambda: track.phase == Phase.DEAD, "the task to be killed", timeout=25)
        assert time.monotonic() - asked < 25
        assert track.state.signal == 9, track.state
    finally:
        for task, handle in list(runner.handles.items()):
            await agent.drivers["raw_exec"].destroy(handle)
            del runner.handles[task]
        runner.close()
        agent.state.close()
