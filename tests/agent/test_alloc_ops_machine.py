"""An operator's restart and signal in the allocation state machine (issue 16): events
in, instructions out, as tests/agent/test_allocrunner.py drives it."""

from __future__ import annotations

from podium.agent.allocrunner import (
    AllocStateMachine,
    Instruction,
    KillTask,
    Persist,
    Report,
    RestartRequested,
    SetTimer,
    StartTask,
    TaskExited,
    TaskSignaled,
    TaskStarted,
    TimerFired,
)
from podium.models import ClientStatus

from .test_allocrunner import make

NO_ATTEMPTS = {"attempts": 0, "interval": "1m", "delay": "5s", "mode": "fail"}


def operator_restart(m: AllocStateMachine, time: float) -> list[Instruction]:
    return m.handle(
        RestartRequested(time, "web", "restart requested by an operator", operator=True)
    )


def test_an_operator_restart_counts_nowhere() -> None:
    m = make(restart=NO_ATTEMPTS)
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web", pid=10))
    for n in range(3):  # with no attempts at all: a counted restart would fail it
        t = 2.0 + n
        out = operator_restart(m, t)
        assert KillTask("web", "SIGTERM", 3.0, "restart requested by an operator") in out
        out = m.handle(TaskExited(t + 0.1, "web", signal=15))
        timer = next(i for i in out if isinstance(i, SetTimer))
        assert timer.delay == 0.0, "at once: no restart delay"
        assert m.handle(TimerFired(t + 0.1, "web", timer.token)) == [StartTask("web"), Persist()]
        m.handle(TaskStarted(t + 0.2, "web", pid=11 + n))
    track = m.tasks["web"]
    assert track.state.restarts == 0 and track.window_restarts == 0
    assert m.client_status() == ClientStatus.RUNNING
    types = [e.type for e in track.state.events]  # the recent ones (the list is bounded)
    assert types[-4:] == ["Restart Signaled", "Terminated", "Restarting", "Started"]
    # a crash afterwards is the policy's again: no attempts, so the allocation fails
    m.handle(TaskExited(9.0, "web", exit_code=1))
    assert m.client_status() == ClientStatus.FAILED


def test_a_template_restart_still_counts_in_restarts() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    m.handle(RestartRequested(2.0, "web", "template local/app.conf changed"))
    timer = next(i for i in m.handle(TaskExited(3.0, "web", signal=15)) if isinstance(i, SetTimer))
    m.handle(TimerFired(3.0, "web", timer.token))
    assert m.tasks["web"].state.restarts == 1


def test_an_operator_restart_survives_an_agent_restart_between_kill_and_start() -> None:
    m = make(restart=NO_ATTEMPTS)
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    operator_restart(m, 2.0)
    out = m.handle(TaskExited(2.1, "web", signal=15))
    timer = next(i for i in out if isinstance(i, SetTimer))
    restored = make(restart=NO_ATTEMPTS)
    restored.restore(m.to_dict())  # the agent persisted, died and came back
    assert restored.handle(TimerFired(2.2, "web", timer.token)) == [StartTask("web"), Persist()]
    assert restored.tasks["web"].state.restarts == 0


def test_a_signal_is_recorded_and_changes_nothing_else() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web", pid=7))
    assert m.handle(TaskSignaled(2.0, "web", "SIGUSR1")) == [Report(), Persist()]
    event = m.tasks["web"].state.events[-1]
    assert (event.type, event.message) == ("Signaling", "SIGUSR1 sent by an operator")
    assert m.tasks["web"].state.pid == 7 and m.client_status() == ClientStatus.RUNNING
    assert m.handle(TaskSignaled(3.0, "nope", "SIGUSR1")) == []
