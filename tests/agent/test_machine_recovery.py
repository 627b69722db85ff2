"""Recovery, port choice and cleanup as events of the allocation state machine.

A restarted agent asks the machine what to do with each task it loaded
(:class:`RecoverTask`); the shell only carries the answer out.  No processes, no sleeps.
"""

from __future__ import annotations

import pytest

from podium.agent.allocrunner import (
    AllocStateMachine,
    CleanedUp,
    Cleanup,
    Instruction,
    Persist,
    Phase,
    PortsAssigned,
    ReattachTask,
    RecoverTask,
    RecoveryDone,
    Report,
    SetTimer,
    StartTask,
    StopUnrecorded,
)
from podium.models import AllocatedPort, JobSpec, TaskStateName

from .conftest import make_alloc


def machine(ports: bool = False) -> AllocStateMachine:
    group: dict[str, object] = {
        "restart": {"attempts": 2, "interval": "1m", "delay": "4s", "mode": "fail"},
        "tasks": {"web": {"driver": "mock"}, "side": {"driver": "mock"}},
    }
    if ports:
        group["network"] = {"ports": {"http": {}}}
    spec = JobSpec.model_validate({"job": "j", "groups": {"g": group}})
    return AllocStateMachine(make_alloc("a1", "j"), spec)


@pytest.mark.parametrize(
    ("phase", "has_handle", "expected"),
    [
        (Phase.RUNNING, True, [ReattachTask("web")]),
        (Phase.KILLING, True, [ReattachTask("web")]),
        (Phase.STARTING, True, [ReattachTask("web")]),
        (Phase.STARTING, False, [StartTask("web")]),
        (Phase.WAITING_RESTART, False, [SetTimer("web", 4.0, 7)]),
        (Phase.WAITING_RESTART, True, [SetTimer("web", 4.0, 7)]),
        (Phase.DEAD, True, []),
        (Phase.PENDING, False, []),
    ],
)
def test_what_a_restarted_agent_does_with_a_task(
    phase: Phase, has_handle: bool, expected: list[Instruction]
) -> None:
    m = machine()
    m.tasks["web"].phase = phase
    m.tasks["web"].timer_token = 7
    assert m.handle(RecoverTask(10.0, "web", has_handle=has_handle)) == expected


def test_a_task_stopped_while_starting_without_a_handle_is_stopped_and_dead() -> None:
    m = machine()
    m.tasks["web"].phase = Phase.KILLING
    m.tasks["side"].phase = Phase.DEAD
    out = m.handle(RecoverTask(10.0, "web", has_handle=False))
    assert out[0] == StopUnrecorded("web")  # before the task is declared dead
    assert m.tasks["web"].phase == Phase.DEAD
    assert m.tasks["web"].state.state == TaskStateName.DEAD
    assert not m.tasks["web"].state.failed
    assert Report() in out and Persist() in out and Cleanup() in out
    assert m.tasks["web"].state.events[-1].type == "Killed"


def test_recovery_done_cleans_up_a_dead_allocation_once() -> None:
    m = machine()
    assert m.handle(RecoveryDone(1.0)) == []  # tasks still pending: nothing to free
    for track in m.tasks.values():
        track.phase = Phase.DEAD
    assert m.handle(RecoveryDone(1.0)) == [Cleanup()]
    assert m.handle(CleanedUp(2.0)) == [Persist()]
    assert m.cleaned_up
    assert m.handle(RecoveryDone(3.0)) == []
    assert m.to_dict()["cleaned_up"] is True


def test_ports_are_chosen_once_and_reported() -> None:
    m = machine(ports=True)
    assert m.needs_ports()
    ports = {"http": AllocatedPort(value=23456, host_ip="127.0.0.1")}
    assert m.handle(PortsAssigned(1.0, ports)) == [Report()]
    assert m.ports == ports and not m.needs_ports()
    assert not machine(ports=False).needs_ports()
