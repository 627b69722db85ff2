"""The mock driver: timers instead of processes, recoverable from its handle."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from podium.drivers.base import Driver, ExitResult, TaskHandle
from podium.drivers.mock import MockDriver
from podium.errors import DriverError

from .conftest import MakeCtx, read


async def test_run_for_zero_exits_at_once(make_ctx: MakeCtx) -> None:
    driver = MockDriver()
    assert driver.fingerprint().healthy
    handle = await driver.start(make_ctx(mock={}))
    result = await asyncio.wait_for(driver.wait(handle), 0.5)
    assert result.exit_code == 0 and result.successful
    assert not await driver.recover(handle)


async def test_runs_for_then_exits_with_code(make_ctx: MakeCtx) -> None:
    driver = MockDriver()
    started = time.monotonic()
    handle = await driver.start(make_ctx(mock={"run_for": "150ms", "exit_code": 3}))
    assert await driver.recover(handle)
    result = await asyncio.wait_for(driver.wait(handle), 2)
    assert result.exit_code == 3
    assert time.monotonic() - started >= 0.14


async def test_start_error(make_ctx: MakeCtx) -> None:
    driver = MockDriver()
    with pytest.raises(DriverError, match="boom") as err:
        await driver.start(make_ctx(mock={"start_error": "boom"}))
    assert not err.value.recoverable
    with pytest.raises(DriverError) as err:
        await driver.start(make_ctx(mock={"start_error": "x", "start_error_recoverable": True}))
    assert err.value.recoverable


async def test_writes_logs(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(mock={"stdout": "hello\n", "stderr": "oops\n"})
    await MockDriver().start(ctx)
    assert (read(ctx.stdout_path), read(ctx.stderr_path)) == ("hello\n", "oops\n")


async def test_stop_honoured_after_kill_after(make_ctx: MakeCtx) -> None:
    driver = MockDriver()
    handle = await driver.start(make_ctx(mock={"run_for": "1h", "kill_after": "100ms"}))
    started = time.monotonic()
    await driver.stop(handle, "SIGINT", 5)
    assert 0.09 <= time.monotonic() - started < 1
    result = await driver.wait(handle)
    assert (result.exit_code, result.signal) == (130, 2)
    await driver.stop(handle, "SIGINT", 5)  # idempotent


async def test_stop_escalates_when_kill_after_exceeds_timeout(make_ctx: MakeCtx) -> None:
    driver = MockDriver()
    handle = await driver.start(make_ctx(mock={"run_for": "1h", "kill_after": "10s"}))
    started = time.monotonic()
    await driver.stop(handle, "SIGTERM", 0.1)
    assert time.monotonic() - started < 1
    assert (await driver.wait(handle)).signal == 9


async def test_recover_from_handle(make_ctx: MakeCtx) -> None:
    first = MockDriver()
    handle = await first.start(make_ctx(mock={"run_for": "200ms", "exit_code": 4}))
    saved = TaskHandle.from_dict(json.loads(json.dumps(handle.to_dict())))
    await first.destroy(handle)

    second = MockDriver()
    assert await second.recover(saved)
    assert (await asyncio.wait_for(second.wait(saved), 2)).exit_code == 4

    saved.state.pop("result")
    saved.state["deadline"] = time.time() - 1  # it ended while the agent was down
    assert not await MockDriver().recover(saved)


async def test_recover_a_stopped_task(make_ctx: MakeCtx) -> None:
    driver = MockDriver()
    handle = await driver.start(make_ctx(mock={"run_for": "1h"}))
    await driver.stop(handle, "SIGTERM", 5)
    saved = TaskHandle.from_dict(json.loads(json.dumps(handle.to_dict())))
    again = MockDriver()
    assert not await again.recover(saved)
    assert (await again.wait(saved)).signal == 15
    assert (await again.stats(saved)).memory_rss_bytes == 0


async def test_exit_future_is_the_runs_own_future(make_ctx: MakeCtx) -> None:
    driver = MockDriver()
    handle = await driver.start(make_ctx(mock={"run_for": "50ms", "exit_code": 2}))
    future = driver.exit_future(handle)
    assert not isinstance(future, asyncio.Task)  # the driver's own: callers never cancel it
    assert driver.exit_future(handle) is future
    async with asyncio.timeout(2):
        result = await asyncio.shield(future)
    assert result.exit_code == 2 and (await driver.wait(handle)).exit_code == 2


async def test_exit_future_of_a_recovered_handle(make_ctx: MakeCtx) -> None:
    handle = await MockDriver().start(make_ctx(mock={"run_for": "1h"}))
    saved = TaskHandle.from_dict(json.loads(json.dumps(handle.to_dict())))
    again = MockDriver()
    future = again.exit_future(saved)
    assert not future.done()
    await again.stop(saved, "SIGTERM", 5)
    assert future.result().signal == 15


class WaitOnly(MockDriver):
    """A driver with ``wait`` only: the interface's default exit future."""

    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        return Driver.exit_future(self, handle)


async def test_default_exit_future_wraps_wait_in_a_task(make_ctx: MakeCtx) -> None:
    driver = WaitOnly()
    handle = await driver.start(make_ctx(mock={"run_for": "50ms", "exit_code": 5}))
    future = driver.exit_future(handle)
    assert isinstance(future, asyncio.Task)
    async with asyncio.timeout(2):
        assert (await future).exit_code == 5

    handle = await driver.start(make_ctx(mock={"run_for": "1h"}))
    wrapper = driver.exit_future(handle)
    await asyncio.sleep(0)
    wrapper.cancel()  # cancelling the wrapper stops that wait only, not the task
    await asyncio.sleep(0)
    assert wrapper.cancelled() and await driver.recover(handle)
