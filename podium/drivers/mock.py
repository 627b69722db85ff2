"""``mock``: tasks that only pretend, for unit tests and simulations.

No process is started: a task "runs" for ``run_for`` (an asyncio timer, so a
test loop with a virtual clock drives it) and then "exits" with ``exit_code``.
The planned end is stored as wall-clock time in the handle, so ``recover`` in
a new agent process picks the task up where it was, like the real drivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict
from typing import Any

from podium.drivers.base import Driver, ExitResult, TaskContext, TaskHandle, TaskStats
from podium.drivers.procfs import parse_signal
from podium.errors import DriverError
from podium.models import DriverInfo, MockConfig


class _Run:
    def __init__(self, handle: TaskHandle, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = handle
        self.loop = loop
        self.future: asyncio.Future[ExitResult] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None

    def finish(self, result: ExitResult) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.future.done():
            self.handle.state["result"] = asdict(result)
            self.future.set_result(result)


class MockDriver(Driver):
    name = "mock"

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self.signals: list[tuple[str, str]] = []
        """(task id, signal) for every ``signal`` call, in order."""

    def fingerprint(self) -> DriverInfo:
        return DriverInfo(detected=True, healthy=True, description="simulated tasks, no processes")

    async def start(self, ctx: TaskContext) -> TaskHandle:
        cfg = ctx.config if isinstance(ctx.config, MockConfig) else _config(ctx.config.model_dump())
        if cfg.start_error:
            raise DriverError(cfg.start_error, recoverable=cfg.start_error_recoverable)
        for path, text in ((ctx.stdout_path, cfg.stdout), (ctx.stderr_path, cfg.stderr)):
            if text:
                with open(path, "a") as f:
                    f.write(text)
        now = time.time()
        handle = TaskHandle(
            driver=self.name,
            task_id=ctx.task_id,
            started_at=now,
            state={
                "deadline": now + cfg.run_for,
                "exit_code": cfg.exit_code,
                "kill_after": cfg.kill_after,
            },
        )
        self._arm(handle, cfg.run_for)
        return handle

    async def wait(self, handle: TaskHandle) -> ExitResult:
        return await asyncio.shield(self._run(handle).future)

    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        """The run's own future: no task and no shield per watched task (callers only
        remove their callbacks from it, see :meth:`Driver.exit_future`)."""
        return self._run(handle).future

    async def recover(self, handle: TaskHandle) -> bool:
        return not self._run(handle).future.done()

    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        try:
            sig = parse_signal(signal)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc
        run = self._run(handle)
        if run.future.done():
            return
        kill_after = float(handle.state.get("kill_after") or 0.0)
        if kill_after <= timeout:
            # The task honours the signal, kill_after seconds later.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.future), kill_after)
            run.finish(ExitResult(exit_code=128 + sig, signal=int(sig)))
        else:  # it would take longer than the kill timeout: SIGKILL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.future), timeout)
            run.finish(ExitResult(exit_code=128 + 9, signal=9))

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """Record the signal (``signals``); the pretend task ignores it."""
        try:
            parse_signal(signal)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc
        if self._run(handle).future.done():
            raise DriverError(f"task {handle.task_id} is not running")
        self.signals.append((handle.task_id, signal))

    async def stats(self, handle: TaskHandle) -> TaskStats:
        self._run(handle)
        return TaskStats(timestamp=time.time())

    async def destroy(self, handle: TaskHandle) -> None:
        run = self._runs.pop(handle.task_id, None)
        if run is not None and run.timer is not None:
            run.timer.cancel()

    # ----------------------------------------------------------- internals
    def _arm(self, handle: TaskHandle, delay: float) -> _Run:
        run = _Run(handle, asyncio.get_running_loop())
        exit_code = int(handle.state.get("exit_code", 0))
        run.timer = run.loop.call_later(
            max(0.0, delay), run.finish, ExitResult(exit_code=exit_code)
        )
        old = self._runs.get(handle.task_id)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        self._runs[handle.task_id] = run
        return run

    def _run(self, handle: TaskHandle) -> _Run:
        """The run behind ``handle``: this process's, or one rebuilt from the handle."""
        run = self._runs.get(handle.task_id)
        if run is not None and (run.handle is handle or run.handle.started_at == handle.started_at):
            return run
        if handle.driver != self.name:
            raise DriverError(f"a {handle.driver!r} task handle was given to {self.name!r}")
        recorded: dict[str, Any] | None = handle.state.get("result")
        if recorded is not None:  # it had already ended
            run = _Run(handle, asyncio.get_running_loop())
            run.future.set_result(ExitResult(**recorded))
            self._runs[handle.task_id] = run
            return run
        remaining = float(handle.state.get("deadline", 0.0)) - time.time()
        run = self._arm(handle, remaining)
        if remaining <= 0:  # it ended while the agent was down
            run.finish(ExitResult(exit_code=int(handle.state.get("exit_code", 0))))
        return run


def _config(raw: dict[str, Any]) -> MockConfig:
    try:
        return MockConfig.model_validate(raw)
    except Exception as exc:
        raise DriverError(f"invalid mock config: {exc}") from exc
