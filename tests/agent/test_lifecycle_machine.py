"""Lifecycle hooks (prestart, poststart, poststop, sidecars) as transitions of the pure
allocation state machine: events in, instructions out, no processes and no sleeps.

Each scenario is a table: the events fed in order, and after each, the tasks the machine
asks to start and to kill and the allocation's client status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from podium.agent.allocrunner import (
    POSTSTOP_DEADLINE,
    AllocStateMachine,
    AllocUpdated,
    Cleanup,
    Event,
    Instruction,
    KillTask,
    Phase,
    Report,
    RestartRequested,
    SetTimer,
    StartTask,
    TaskExited,
    TaskStarted,
    TaskStartFailed,
    TimerFired,
)
from podium.errors import SpecError
from podium.models import ClientStatus, DesiredStatus, JobSpec
from podium.spec import parse_job_text

from .conftest import make_alloc

PRE = {"hook": "prestart"}
SIDE = {"hook": "prestart", "sidecar": True}
POST = {"hook": "poststart"}
STOP = {"hook": "poststop"}


def machine(
    tasks: dict[str, dict[str, Any] | None], job_type: str = "service", attempts: int = 1
) -> AllocStateMachine:
    spec = JobSpec.model_validate(
        {
            "job": "j",
            "type": job_type,
            "groups": {
                "g": {
                    "restart": {
                        "attempts": attempts,
                        "interval": "1m",
                        "delay": "1s",
                        "mode": "fail",
                    },
                    "tasks": {
                        name: {"driver": "mock", **({"lifecycle": lc} if lc else {})}
                        for name, lc in tasks.items()
                    },
                }
            },
        }
    )
    return AllocStateMachine(make_alloc("a1", "j"), spec)


def stop_event(m: AllocStateMachine, time: float) -> AllocUpdated:
    stopped = m.alloc.model_copy(
        update={"desired_status": DesiredStatus.STOP, "desired_description": "job stopped"}
    )
    return AllocUpdated(time, stopped, m.spec)


@dataclass
class Step:
    event: Event | str
    """An event, or "start" (the allocation arrives), or "stop" (the server stops it)."""
    starts: set[str] = field(default_factory=set)
    kills: set[str] = field(default_factory=set)
    status: ClientStatus | None = None
    cleanup: bool = False


def run(m: AllocStateMachine, steps: list[Step]) -> list[list[Instruction]]:
    outs = []
    for i, step in enumerate(steps):
        if step.event == "start":
            out = m.start(0.0)
        elif step.event == "stop":
            out = m.handle(stop_event(m, 50.0 + i))
        else:
            assert isinstance(step.event, Event)
            out = m.handle(step.event)
        starts = {x.task for x in out if isinstance(x, StartTask)}
        kills = {x.task for x in out if isinstance(x, KillTask)}
        assert starts == step.starts, f"step {i} ({step.event}): started {starts}"
        assert kills == step.kills, f"step {i} ({step.event}): killed {kills}"
        if step.status is not None:
            assert m.client_status() == step.status, f"step {i} ({step.event})"
        assert (Cleanup() in out) == step.cleanup, f"step {i} ({step.event}): {out}"
        assert sum(isinstance(x, Cleanup) for x in out) <= 1
        outs.append(out)
    return outs


P, R, C, F = ClientStatus.PENDING, ClientStatus.RUNNING, ClientStatus.COMPLETE, ClientStatus.FAILED

SCENARIOS: dict[str, tuple[dict[str, dict[str, Any] | None], str, list[Step]]] = {
    "prestart runs to completion before main": (
        {"init": PRE, "main": None},
        "service",
        [
            Step("start", starts={"init"}),
            Step(TaskStarted(1, "init"), status=P),  # only a hook runs: pending
            Step(TaskExited(2, "init", exit_code=0), starts={"main"}, status=P),
            Step(TaskStarted(3, "main"), status=R),
        ],
    ),
    "a failing prestart is retried and blocks main": (
        {"init": PRE, "main": None},
        "service",
        [
            Step("start", starts={"init"}),
            Step(TaskStarted(1, "init")),
            Step(TaskExited(2, "init", exit_code=1), status=P),  # restart timer, no main
            Step(TimerFired(3, "init", 1), starts={"init"}),
            Step(TaskStarted(3, "init")),
            Step(TaskExited(4, "init", exit_code=0), starts={"main"}),
        ],
    ),
    "a prestart out of attempts fails the allocation; main never runs": (
        {"init": PRE, "main": None},
        "batch",
        [
            Step("start", starts={"init"}),
            Step(TaskStarted(1, "init")),
            Step(TaskExited(2, "init", exit_code=1)),
            Step(TimerFired(3, "init", 1), starts={"init"}),
            Step(TaskStarted(3, "init")),
            Step(TaskExited(4, "init", exit_code=1), status=F, cleanup=True),
        ],
    ),
    "an unrecoverable prestart start error fails the allocation": (
        {"init": PRE, "main": None},
        "service",
        [
            Step("start", starts={"init"}),
            Step(TaskStartFailed(1, "init", "no such command"), status=F, cleanup=True),
        ],
    ),
    "a prestart sidecar starts first, runs beside main, is stopped after it": (
        {"proxy": SIDE, "main": None},
        "batch",
        [
            Step("start", starts={"proxy"}),
            Step(TaskStarted(1, "proxy"), starts={"main"}, status=P),
            Step(TaskStarted(2, "main"), status=R),
            Step(TaskExited(3, "main", exit_code=0), kills={"proxy"}, status=R),
            Step(TaskExited(4, "proxy", signal=15), status=C, cleanup=True),
        ],
    ),
    "a sidecar that exits is restarted, even in a batch job": (
        {"proxy": SIDE, "main": None},
        "batch",
        [
            Step("start", starts={"proxy"}),
            Step(TaskStarted(1, "proxy"), starts={"main"}),
            Step(TaskStarted(2, "main")),
            Step(TaskExited(3, "proxy", exit_code=0), status=R),
            Step(TimerFired(4, "proxy", 1), starts={"proxy"}),
        ],
    ),
    "poststart starts once every main task runs": (
        {"a": None, "b": None, "after": POST},
        "service",
        [
            Step("start", starts={"a", "b"}),
            Step(TaskStarted(1, "a")),
            Step(TaskStarted(2, "b"), starts={"after"}),
            Step(TaskStarted(3, "after"), status=R),
            Step(TaskExited(4, "after", exit_code=0), status=R),  # done, main runs on
        ],
    ),
    "poststop runs after a batch main completes; complete only after it": (
        {"main": None, "last": STOP},
        "batch",
        [
            Step("start", starts={"main"}),
            Step(TaskStarted(1, "main")),
            Step(TaskExited(2, "main", exit_code=0), starts={"last"}, status=R),
            Step(TaskStarted(3, "last"), status=R),
            Step(TaskExited(4, "last", exit_code=0), status=C, cleanup=True),
        ],
    ),
    "a job stop kills main, then runs poststop, then stops the sidecar": (
        {"proxy": SIDE, "main": None, "last": STOP},
        "service",
        [
            Step("start", starts={"proxy"}),
            Step(TaskStarted(1, "proxy"), starts={"main"}),
            Step(TaskStarted(2, "main")),
            Step("stop", kills={"main"}, status=R),  # the sidecar keeps running
            Step(TaskExited(5, "main", signal=15), starts={"last"}, kills={"proxy"}),
            Step(TaskStarted(6, "last")),
            Step(TaskExited(7, "proxy", signal=15), status=R),  # poststop still runs
            Step(TaskExited(8, "last", exit_code=0), status=C, cleanup=True),
        ],
    ),
    "a stop during prestart skips main and poststart, runs poststop": (
        {"init": PRE, "main": None, "after": POST, "last": STOP},
        "service",
        [
            Step("start", starts={"init"}),
            Step(TaskStarted(1, "init")),
            Step("stop", kills={"init"}, starts={"last"}),
            Step(TaskExited(4, "init", signal=15)),
            Step(TaskStarted(5, "last")),
            Step(TaskExited(6, "last", exit_code=0), status=C, cleanup=True),
        ],
    ),
    "a failed main task still gets its poststop; the allocation fails": (
        {"main": None, "last": STOP},
        "batch",
        [
            Step("start", starts={"main"}),
            Step(TaskStarted(1, "main")),
            Step(TaskExited(2, "main", exit_code=3)),
            Step(TimerFired(3, "main", 1), starts={"main"}),
            Step(TaskStarted(3, "main")),
            Step(TaskExited(4, "main", exit_code=3), starts={"last"}, status=R),
            Step(TaskStarted(5, "last")),
            Step(TaskExited(6, "last", exit_code=0), status=F, cleanup=True),
        ],
    ),
    "a stop before anything started runs nothing": (
        {"init": PRE, "main": None, "last": STOP},
        "service",
        [
            Step("start", starts={"init"}),
            Step("stop", kills={"init"}),
            Step(TaskStartFailed(3, "init", "stopped", recoverable=True), cleanup=True),
        ],
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_lifecycle_scenarios(name: str) -> None:
    tasks, job_type, steps = SCENARIOS[name]
    run(machine(tasks, job_type), steps)


def test_a_main_restart_does_not_rerun_prestart_or_poststart() -> None:
    m = machine({"init": PRE, "main": None, "after": POST})
    m.start(0.0)
    m.handle(TaskStarted(1, "init"))
    m.handle(TaskExited(2, "init", exit_code=0))
    m.handle(TaskStarted(3, "main"))
    m.handle(TaskStarted(4, "after"))
    m.handle(TaskExited(5, "after", exit_code=0))
    out = m.handle(RestartRequested(6, "main", "check failed", counts=True))
    assert next(x for x in out if isinstance(x, KillTask)).task == "main"
    m.handle(TaskExited(7, "main", signal=15))
    out = m.handle(TimerFired(8, "main", m.tasks["main"].timer_token))
    assert {x.task for x in out if isinstance(x, StartTask)} == {"main"}
    assert m.tasks["init"].phase == Phase.DEAD and m.tasks["after"].phase == Phase.DEAD
    assert m.tasks["init"].state.restarts == 0


def test_a_poststop_task_past_its_deadline_is_killed() -> None:
    m = machine({"main": None, "last": STOP}, "batch")
    m.start(0.0)
    m.handle(TaskStarted(1, "main"))
    out = m.handle(TaskExited(2, "main", exit_code=0))
    timer = next(x for x in out if isinstance(x, SetTimer))
    assert timer.task == "last" and timer.delay == POSTSTOP_DEADLINE
    m.handle(TaskStarted(3, "last"))
    out = m.handle(TimerFired(3 + POSTSTOP_DEADLINE, "last", timer.token))
    assert [x.task for x in out if isinstance(x, KillTask)] == ["last"]
    out = m.handle(TaskExited(4 + POSTSTOP_DEADLINE, "last", signal=15))
    assert Cleanup() in out and m.client_status() == ClientStatus.COMPLETE


def test_a_poststop_deadline_is_ignored_once_it_exited() -> None:
    m = machine({"main": None, "last": STOP}, "batch")
    m.start(0.0)
    m.handle(TaskStarted(1, "main"))
    out = m.handle(TaskExited(2, "main", exit_code=0))
    timer = next(x for x in out if isinstance(x, SetTimer))
    m.handle(TaskStarted(3, "last"))
    m.handle(TaskExited(4, "last", exit_code=0))
    assert m.handle(TimerFired(62, "last", timer.token)) == []


def test_health_ignores_hooks_that_run_to_completion() -> None:
    m = machine({"init": PRE, "proxy": SIDE, "main": None, "last": STOP})
    assert set(m.health_task_states()) == {"proxy", "main"}
    plain = machine({"main": None})
    assert set(plain.health_task_states()) == {"main"}


def test_without_hooks_start_is_unchanged() -> None:
    m = machine({"a": None, "b": None})
    out = m.start(0.0)
    assert [x for x in out if isinstance(x, StartTask)] == [StartTask("a"), StartTask("b")]
    assert Report() not in out
    assert not m.hooks


def test_hooks_survive_persistence() -> None:
    m = machine({"init": PRE, "main": None})
    m.start(0.0)
    m.handle(TaskStarted(1, "init"))
    m.handle(TaskExited(2, "init", exit_code=0))
    again = machine({"init": PRE, "main": None})
    again.restore(m.to_dict())
    again.started = True
    assert again.tasks["init"].phase == Phase.DEAD
    assert again.tasks["main"].phase == Phase.STARTING


BAD = [
    (
        {"a": {"driver": "mock", "lifecycle": {"hook": "poststop", "sidecar": True}}, "m": {}},
        "a poststop task cannot be a sidecar",
    ),
    ({"a": {"driver": "mock", "lifecycle": {"hook": "prestop"}}, "m": {}}, "expected 'prestart'"),
    ({"a": {"driver": "mock", "lifecycle": PRE}}, "at least one main task"),
    (
        {"a": {"driver": "mock", "lifecycle": {"hook": "prestart", "x": 1}}, "m": {}},
        "unknown field 'x'",
    ),
]


@pytest.mark.parametrize(("tasks", "message"), BAD)
def test_bad_lifecycles_are_refused_saying_where(tasks: dict[str, Any], message: str) -> None:
    import json

    for task in tasks.values():
        task.setdefault("driver", "mock")
    text = json.dumps({"job": "j", "groups": {"g": {"tasks": tasks}}})
    with pytest.raises(SpecError) as err:
        parse_job_text(text, "job.json")
    assert message in str(err.value)
    assert "groups.g.tasks" in str(err.value)
