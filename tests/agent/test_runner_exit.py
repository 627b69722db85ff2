"""How an allocation runner learns that a task exited: a done callback on the driver's
exit future (no task per running task), and nothing reported once it lets go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from podium.agent.allocrunner import Phase
from podium.agent.checks import AllocChecks
from podium.agent.runner import NO_CHECKS, AllocRunner
from podium.drivers.base import Driver, ExitResult, TaskHandle
from podium.drivers.mock import MockDriver
from podium.errors import DriverError
from podium.models import JobSpec, TaskEvent

from .conftest import OfflineRunner, make_alloc, until

MakeRunner = Callable[..., AllocRunner]


def job(config: dict[str, Any], **group: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job": "web",
            "groups": {
                "g": {
                    "restart": {"attempts": 3, "interval": "1h", "delay": "0s"},
                    "tasks": {"t": {"driver": "mock", "config": config}},
                    **group,
                }
            },
        }
    )


ALLOC = make_alloc()


@pytest.fixture
def make_runner(offline_runner: OfflineRunner) -> MakeRunner:
    def make(
        driver: Driver,
        config: dict[str, Any] | None = None,
        *,
        start: bool = True,
        **group: Any,
    ) -> AllocRunner:
        runner = offline_runner(ALLOC, job(config or {"run_for": "1h"}, **group), driver)
        if start:
            runner.start()
        return runner

    return make


def exits(runner: AllocRunner) -> list[TaskEvent]:
    return [e for e in runner.machine.tasks["t"].state.events if e.type == "Terminated"]


def running(runner: AllocRunner) -> bool:
    return runner.machine.tasks["t"].phase == Phase.RUNNING


class WaitOnly(MockDriver):
    """A driver with ``wait`` only: the interface's default exit future (a task)."""

    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        return Driver.exit_future(self, handle)


class RaisingExitFuture(MockDriver):
    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        raise DriverError("the shim vanished")


class FailingExitFuture(MockDriver):
    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        future: asyncio.Future[ExitResult] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.02, future.set_exception, OSError("pidfd gone"))
        return future


class FailingWait(WaitOnly):
    async def wait(self, handle: TaskHandle) -> ExitResult:
        raise DriverError("no such container")


@pytest.mark.parametrize("driver_type", [MockDriver, WaitOnly])
async def test_an_exit_is_reported_with_its_fields(
    make_runner: MakeRunner, driver_type: type[MockDriver]
) -> None:
    runner = make_runner(driver_type(), {"run_for": "50ms", "exit_code": 3})
    (event, *_) = await until(lambda: exits(runner), "the exit")
    assert (event.exit_code, event.signal, event.oom_killed) == (3, None, False)
    assert event.message == "task exited with code 3"
    # restarted (delay 0s), and watched again: one future, for the new run
    await until(lambda: len(exits(runner)) >= 2, "the restarted run's exit")
    assert len(runner._waiters) <= 1


async def test_a_stop_is_reported_with_its_signal(make_runner: MakeRunner) -> None:
    runner = make_runner(MockDriver())
    await until(lambda: running(runner), "the start")
    stopped = runner.alloc.model_copy(update={"desired_status": "stop"})
    runner.update(stopped, runner.machine.spec)
    await until(lambda: runner.machine.terminal(), "the stop")
    (event,) = exits(runner)
    assert (event.exit_code, event.signal) == (143, 15)
    assert runner._waiters == {}


async def test_close_stops_reporting_without_cancelling_the_drivers_future(
    make_runner: MakeRunner,
) -> None:
    runner = make_runner(MockDriver(), {"run_for": "100ms"})
    await until(lambda: running(runner), "the start")
    future = runner._waiters["t"]
    runner.close()
    assert runner._waiters == {} and not future.cancelled()
    assert future.remove_done_callback(runner._exited) == 0  # ours was removed
    await until(future.done, "the task to end on its own")
    await asyncio.sleep(0.05)
    assert exits(runner) == [] and running(runner)


async def test_close_cancels_the_wrapper_task_of_a_driver_with_wait_only(
    make_runner: MakeRunner,
) -> None:
    driver = WaitOnly()
    runner = make_runner(driver, {"run_for": "100ms"})
    await until(lambda: running(runner), "the start")
    wrapper = runner._waiters["t"]
    assert isinstance(wrapper, asyncio.Task)
    runner.close()
    await asyncio.sleep(0)
    assert wrapper.cancelled() and await driver.recover(runner.handles["t"])
    await asyncio.sleep(0.2)
    assert exits(runner) == [] and running(runner)


async def test_an_exit_already_due_when_closed_is_not_reported(make_runner: MakeRunner) -> None:
    driver = MockDriver()
    runner = make_runner(driver)
    await until(lambda: running(runner), "the start")
    future = runner._waiters["t"]
    await driver.stop(runner.handles["t"], "SIGTERM", 1)  # its callback is now scheduled
    assert future.done()
    runner.close()
    await asyncio.sleep(0.05)
    assert exits(runner) == []


@pytest.mark.parametrize(
    ("driver_type", "message"),
    [
        (RaisingExitFuture, "the shim vanished"),
        (FailingExitFuture, "pidfd gone"),
        (FailingWait, "no such container"),
    ],
)
async def test_a_failed_exit_future_means_lost_track_of_the_task(
    make_runner: MakeRunner,
    driver_type: type[MockDriver],
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="podium.agent"):
        runner = make_runner(driver_type(), restart={"attempts": 0, "mode": "fail"})
        (event,) = await until(lambda: exits(runner), "the lost task")
    assert event.message == f"lost track of task: {message}"
    assert "wait failed" in caplog.text
    events = [e.type for e in runner.machine.tasks["t"].state.events]
    assert events[:3] == ["Received", "Started", "Terminated"]  # after the start, not in it


async def test_nothing_is_reported_after_kill_and_forget(make_runner: MakeRunner) -> None:
    runner = make_runner(MockDriver())
    await until(lambda: running(runner), "the start")
    await runner.kill_and_forget()
    seen = len(runner.machine.tasks["t"].state.events)
    assert runner._waiters == {}
    await asyncio.sleep(0.05)
    assert len(runner.machine.tasks["t"].state.events) == seen


async def test_a_recovered_task_is_watched_by_the_new_runner(make_runner: MakeRunner) -> None:
    first = make_runner(MockDriver(), {"run_for": "300ms", "exit_code": 4})
    await until(lambda: running(first), "the start")
    first.close()  # the agent stops; the task runs on

    second = make_runner(MockDriver(), {"run_for": "300ms", "exit_code": 4}, start=False)
    second.machine.restore(first.machine.to_dict())
    second.restore_handles(first.handles_dict())
    await second.recover()
    assert running(second) and "t" in second._waiters
    (event, *_) = await until(lambda: exits(second), "the exit, seen by the new runner")
    assert event.exit_code == 4 and exits(first) == []


async def test_no_template_manager_or_check_loops_unless_the_group_has_some(
    make_runner: MakeRunner,
) -> None:
    runner = make_runner(MockDriver())
    await until(lambda: running(runner), "the start")
    assert runner.checks is NO_CHECKS and runner._templates is None
    assert runner.checks.running == [] and runner.checks.report() is None

    # an in-place update that adds a check gives the runner its check loops
    check = {"name": "ok", "type": "tcp", "port": "http", "interval": "1h"}
    spec = job(
        {"run_for": "1h"},
        network={"ports": {"http": {}}},
        services=[{"name": "web", "port": "http", "checks": [check]}],
    )
    runner.update(runner.alloc, spec)
    assert isinstance(runner.checks, AllocChecks)
    await until(lambda: runner.checks.running == ["ok"], "the check loop")
