"""The allocation state machine, driven by events alone: no processes, no sleeps."""

from __future__ import annotations

from typing import Any

from podium.agent.allocrunner import (
    AllocStateMachine,
    AllocUpdated,
    Cleanup,
    KillTask,
    Persist,
    Phase,
    Report,
    RestartRequested,
    SetTimer,
    StartTask,
    TaskExited,
    TaskRecovered,
    TaskStarted,
    TaskStartFailed,
    TimerFired,
)
from podium.models import ClientStatus, DesiredStatus, JobSpec

from .conftest import make_alloc


def make(
    job_type: str = "service",
    restart: dict[str, Any] | None = None,
    tasks: tuple[str, ...] = ("web",),
) -> AllocStateMachine:
    spec = JobSpec.model_validate(
        {
            "job": "j",
            "type": job_type,
            "groups": {
                "g": {
                    "restart": restart
                    or {"attempts": 2, "interval": "1m", "delay": "1s", "mode": "fail"},
                    "tasks": {t: {"driver": "mock", "kill_timeout": "3s"} for t in tasks},
                }
            },
        }
    )
    alloc = make_alloc("a1", "j", node_id="n1")
    return AllocStateMachine(alloc, spec)


def test_start_emits_start_for_every_task() -> None:
    m = make(tasks=("a", "b"))
    out = m.start(0.0)
    assert [i for i in out if isinstance(i, StartTask)] == [StartTask("a"), StartTask("b")]
    assert Report() not in out and Persist() in out  # the server already knows "pending"
    assert m.client_status() == ClientStatus.PENDING


def test_started_task_makes_alloc_running() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web", pid=42))
    assert m.client_status() == ClientStatus.RUNNING
    assert m.tasks["web"].state.pid == 42
    assert m.tasks["web"].state.events[-1].type == "Started"


def test_service_exit_restarts_after_delay_then_fails_when_attempts_run_out() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    out = m.handle(TaskExited(2.0, "web", exit_code=1))
    timers = [i for i in out if isinstance(i, SetTimer)]
    assert timers == [SetTimer("web", 1.0, m.tasks["web"].timer_token)]
    assert m.tasks["web"].phase == Phase.WAITING_RESTART
    assert m.client_status() == ClientStatus.RUNNING
    out = m.handle(TimerFired(3.0, "web", timers[0].token))
    assert StartTask("web") in out
    assert m.tasks["web"].state.restarts == 1
    m.handle(TaskStarted(3.1, "web"))
    out = m.handle(TaskExited(4.0, "web", exit_code=1))
    token = next(i for i in out if isinstance(i, SetTimer)).token
    m.handle(TimerFired(5.0, "web", token))
    m.handle(TaskStarted(5.1, "web"))
    out = m.handle(TaskExited(6.0, "web", exit_code=1))
    assert m.client_status() == ClientStatus.FAILED
    assert "exceeded its restart policy" in m.client_description()
    assert Cleanup() in out
    assert m.tasks["web"].state.failed
    assert m.tasks["web"].state.restarts == 2


def test_stale_timer_is_ignored() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    m.handle(TaskExited(2.0, "web", exit_code=1))
    assert m.handle(TimerFired(3.0, "web", token=999)) == []


def test_restart_window_resets_after_interval() -> None:
    m = make(restart={"attempts": 1, "interval": "10s", "delay": "0s", "mode": "fail"})
    m.start(0.0)
    m.handle(TaskStarted(0.0, "web"))
    out = m.handle(TaskExited(1.0, "web", exit_code=1))
    m.handle(TimerFired(1.0, "web", next(i for i in out if isinstance(i, SetTimer)).token))
    m.handle(TaskStarted(1.0, "web"))
    # 20 s later: a new interval, so one more restart is allowed
    out = m.handle(TaskExited(21.0, "web", exit_code=1))
    assert any(isinstance(i, SetTimer) for i in out)
    assert m.client_status() == ClientStatus.RUNNING


def test_delay_mode_waits_for_interval_instead_of_failing() -> None:
    m = make(restart={"attempts": 0, "interval": "30s", "delay": "1s", "mode": "delay"})
    m.start(0.0)
    m.handle(TaskStarted(0.0, "web"))
    out = m.handle(TaskExited(5.0, "web", exit_code=1))
    timers = [i for i in out if isinstance(i, SetTimer)]
    # the interval window opened at this first exit, so the whole interval is waited
    assert timers and timers[0].delay == 30.0
    assert m.client_status() != ClientStatus.FAILED


def test_batch_success_completes_without_restart() -> None:
    m = make(job_type="batch")
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    out = m.handle(TaskExited(2.0, "web", exit_code=0))
    assert not any(isinstance(i, SetTimer) for i in out)
    assert m.client_status() == ClientStatus.COMPLETE
    assert Cleanup() in out


def test_unrecoverable_start_error_fails_at_once() -> None:
    m = make()
    m.start(0.0)
    out = m.handle(TaskStartFailed(1.0, "web", "command 'nope' not found", recoverable=False))
    assert m.client_status() == ClientStatus.FAILED
    assert "could not start" in m.client_description()
    assert not any(isinstance(i, SetTimer) for i in out)


def test_recoverable_start_error_is_retried() -> None:
    m = make()
    m.start(0.0)
    out = m.handle(TaskStartFailed(1.0, "web", "engine busy", recoverable=True))
    assert any(isinstance(i, SetTimer) for i in out)


def test_one_failed_task_kills_its_siblings() -> None:
    m = make(
        restart={"attempts": 0, "interval": "1m", "delay": "0s", "mode": "fail"}, tasks=("a", "b")
    )
    m.start(0.0)
    m.handle(TaskStarted(1.0, "a"))
    m.handle(TaskStarted(1.0, "b"))
    out = m.handle(TaskExited(2.0, "a", exit_code=2))
    kills = [i for i in out if isinstance(i, KillTask)]
    assert [k.task for k in kills] == ["b"]
    assert m.client_status() == ClientStatus.RUNNING  # b still shutting down
    out = m.handle(TaskExited(3.0, "b", signal=15))
    assert m.client_status() == ClientStatus.FAILED
    assert Cleanup() in out
    assert not m.tasks["b"].state.failed


def test_stop_kills_with_the_tasks_signal_and_timeout_and_completes() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    stopped = m.alloc.model_copy(update={"desired_status": DesiredStatus.STOP})
    out = m.handle(AllocUpdated(2.0, stopped, m.spec))
    assert KillTask("web", "SIGTERM", 3.0, "allocation stopped") in out
    out = m.handle(TaskExited(2.5, "web", signal=15))
    assert m.client_status() == ClientStatus.COMPLETE
    assert Cleanup() in out
    assert not any(isinstance(i, SetTimer) for i in out)


def test_stop_while_waiting_to_restart_cancels_restart() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    out = m.handle(TaskExited(2.0, "web", exit_code=1))
    token = next(i for i in out if isinstance(i, SetTimer)).token
    stopped = m.alloc.model_copy(update={"desired_status": DesiredStatus.STOP})
    out = m.handle(AllocUpdated(2.5, stopped, m.spec))
    assert not any(isinstance(i, KillTask) for i in out)
    assert m.terminal()
    assert m.handle(TimerFired(3.0, "web", token)) == []


def test_oom_is_reported_as_such() -> None:
    m = make(restart={"attempts": 0, "interval": "1m", "delay": "0s", "mode": "fail"})
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    m.handle(TaskExited(2.0, "web", exit_code=137, signal=9, oom_killed=True))
    state = m.tasks["web"].state
    assert state.oom_killed
    assert any(e.type == "OOM Killed" and "memory limit" in e.message for e in state.events)


def test_state_round_trips_for_agent_restart() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web", pid=7))
    data = m.to_dict()
    m2 = make()
    m2.restore(data)
    assert m2.tasks["web"].phase == Phase.RUNNING
    out = m2.handle(TaskRecovered(5.0, "web", pid=7))
    assert m2.client_status() == ClientStatus.RUNNING
    assert m2.tasks["web"].state.events[-1].type == "Reattached"
    assert not any(isinstance(i, StartTask) for i in out)


def test_events_are_capped() -> None:
    m = make(restart={"attempts": 100, "interval": "1h", "delay": "0s", "mode": "fail"})
    m.start(0.0)
    for n in range(30):
        m.handle(TaskStarted(float(n), "web"))
        out = m.handle(TaskExited(float(n) + 0.5, "web", exit_code=1))
        token = next(i for i in out if isinstance(i, SetTimer)).token
        m.handle(TimerFired(float(n) + 0.6, "web", token))
    assert len(m.tasks["web"].state.events) == 10


def test_recovered_while_killing_for_a_failed_sibling_is_killed_again() -> None:
    m = make(
        restart={"attempts": 0, "interval": "1m", "delay": "0s", "mode": "fail"}, tasks=("a", "b")
    )
    m.start(0.0)
    m.handle(TaskStarted(1.0, "a"))
    m.handle(TaskStarted(1.0, "b"))
    m.handle(TaskExited(2.0, "a", exit_code=1))  # b is being killed now
    restored = make(
        restart={"attempts": 0, "interval": "1m", "delay": "0s", "mode": "fail"}, tasks=("a", "b")
    )
    restored.restore(m.to_dict())  # the agent died and came back
    out = restored.handle(TaskRecovered(3.0, "b"))
    assert any(isinstance(i, KillTask) and i.task == "b" for i in out)
    restored.handle(TaskExited(4.0, "b", signal=15))
    assert restored.client_status() == ClientStatus.FAILED


def test_requested_restart_kills_then_starts_again_without_using_the_policy() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    out = m.handle(RestartRequested(2.0, "web", "template local/app.conf changed"))
    assert KillTask("web", "SIGTERM", 3.0, "template local/app.conf changed") in out
    assert m.tasks["web"].state.events[-1].type == "Restart Signaled"
    out = m.handle(TaskExited(3.0, "web", signal=15))
    timer = next(i for i in out if isinstance(i, SetTimer))
    assert timer.delay == 0.0 and m.tasks["web"].window_restarts == 0
    assert m.handle(TimerFired(3.0, "web", timer.token)) == [StartTask("web"), Persist()]
    assert m.client_status() == ClientStatus.RUNNING


def test_counted_restart_uses_the_policy_and_can_fail_the_alloc() -> None:
    m = make(restart={"attempts": 0, "interval": "1m", "delay": "1s", "mode": "fail"})
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    m.handle(RestartRequested(2.0, "web", "check web-http-0 failed 3 times", counts=True))
    m.handle(TaskExited(3.0, "web", signal=15))
    assert m.client_status() == ClientStatus.FAILED
    assert "restart policy" in m.client_description()


def test_restart_requested_while_stopping_is_ignored() -> None:
    m = make()
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    stopped = m.alloc.model_copy(update={"desired_status": DesiredStatus.STOP})
    m.handle(AllocUpdated(2.0, stopped, m.spec))
    assert m.handle(RestartRequested(2.5, "web", "x")) == []
    m.handle(TaskExited(3.0, "web", signal=15))
    assert m.client_status() == ClientStatus.COMPLETE


def test_stop_waits_the_shutdown_delay_before_the_signal() -> None:
    m = make()
    m.spec.groups["g"].tasks["web"].shutdown_delay = 2.0
    m.start(0.0)
    m.handle(TaskStarted(1.0, "web"))
    stopped = m.alloc.model_copy(update={"desired_status": DesiredStatus.STOP})
    out = m.handle(AllocUpdated(2.0, stopped, m.spec))
    kill = next(i for i in out if isinstance(i, KillTask))
    assert kill.delay == 2.0
    # a requested restart (not a stop) signals at once
    m2 = make()
    m2.spec.groups["g"].tasks["web"].shutdown_delay = 2.0
    m2.start(0.0)
    m2.handle(TaskStarted(1.0, "web"))
    out = m2.handle(RestartRequested(2.0, "web", "x"))
    assert next(i for i in out if isinstance(i, KillTask)).delay == 0.0
