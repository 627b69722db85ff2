"""Re-attaching to tasks after the agent's death: no helper process, just the shim."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from podium.drivers import procfs
from podium.drivers.base import TaskHandle
from podium.drivers.process import LOST_WHILE_DOWN
from podium.drivers.raw_exec import RawExecDriver
from podium.errors import DriverError

from .conftest import MakeCtx
from .helpers import alive, until

HELPER = str(Path(__file__).with_name("detached_start.py"))
WAIT_FOR_GO = "while [ ! -e go ]; do sleep 0.02; done; exit 7"


def start_detached(
    task_dir: Path, *argv: str, driver: str = "raw_exec", cgroup_root: str = ""
) -> TaskHandle:
    """Start a task from another, short-lived Python process (a dead 'agent')."""
    task_dir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, HELPER, driver, str(task_dir), *argv],
        env={**os.environ, "PODIUM_TEST_CGROUP_ROOT": cgroup_root},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return TaskHandle.from_dict(json.loads(out.stdout))


def roundtrip(handle: TaskHandle) -> TaskHandle:
    """What the agent persisted and reads back after its restart."""
    return TaskHandle.from_dict(json.loads(json.dumps(handle.to_dict())))


async def test_recover_in_a_new_driver_instance(make_ctx: MakeCtx) -> None:
    ctx = make_ctx("sh", ["-c", WAIT_FOR_GO])
    first = RawExecDriver()
    handle = await first.start(ctx)
    await first.task_pid(handle)

    second = RawExecDriver()  # the restarted agent
    recovered = roundtrip(handle)
    assert await second.recover(recovered)
    assert recovered.pid == handle.pid
    Path(ctx.task_dir, "go").touch()
    result = await asyncio.wait_for(second.wait(recovered), 3)
    assert result.exit_code == 7
    await first.wait(handle)  # the original child is reaped too


async def test_recover_a_task_that_is_not_our_child(base_dir: Path) -> None:
    task_dir = base_dir / "orphan"
    handle = start_detached(task_dir, "sh", "-c", WAIT_FOR_GO)
    shim = handle.state["shim_pid"]
    assert procfs.read_stat(shim) is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(shim, os.WNOHANG)  # truly not ours: its parent died

    driver = RawExecDriver()
    assert await driver.recover(handle)
    assert handle.pid is not None and alive(handle.pid)
    (task_dir / "go").touch()
    result = await asyncio.wait_for(driver.wait(handle), 3)
    assert (result.exit_code, result.signal, result.error) == (7, None, None)


async def test_stop_after_recover(base_dir: Path) -> None:
    handle = start_detached(base_dir / "orphan", "sleep", "30")
    driver = RawExecDriver()
    assert await driver.recover(handle)
    await driver.stop(handle, "SIGTERM", 5)
    assert (await asyncio.wait_for(driver.wait(handle), 3)).signal == signal.SIGTERM


async def test_recover_after_the_task_exited(base_dir: Path) -> None:
    task_dir = base_dir / "done"
    handle = start_detached(task_dir, "sh", "-c", "exit 5")
    await until(lambda: (task_dir / ".podium" / "status").exists())
    driver = RawExecDriver()
    assert not await driver.recover(handle)
    result = await driver.wait(handle)
    assert (result.exit_code, result.error) == (5, None)


async def test_recover_when_the_status_was_lost(base_dir: Path) -> None:
    handle = start_detached(base_dir / "lost", "sleep", "30")
    shim, task = handle.state["shim_pid"], handle.state["task_pid"]
    os.kill(shim, signal.SIGKILL)  # the shim dies first: nobody records the exit
    await until(lambda: not alive(shim))
    os.kill(task, signal.SIGKILL)
    driver = RawExecDriver()
    assert not await driver.recover(handle)
    assert (await driver.wait(handle)).error == LOST_WHILE_DOWN


async def test_pid_reuse_guard(make_ctx: MakeCtx) -> None:
    # A live process, its own group leader, whose pid a stale handle names.
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        real_start = procfs.start_time(victim.pid)
        assert real_start is not None
        ctx = make_ctx("true")
        state_dir = os.path.join(ctx.task_dir, ".podium")
        stale = TaskHandle(
            driver="raw_exec",
            task_id="old/task",
            pid=victim.pid,
            state={
                "shim_pid": victim.pid,
                "shim_start": real_start - 1,  # another process had this pid
                "task_pid": victim.pid,
                "task_start": real_start - 1,
                "boot_id": procfs.read_boot_id(),
                "state_dir": state_dir,
                "pid_file": os.path.join(state_dir, "pid"),
                "status_file": os.path.join(state_dir, "status"),
            },
        )
        driver = RawExecDriver()
        assert not await driver.recover(stale)
        assert (await driver.wait(stale)).error == LOST_WHILE_DOWN
        await driver.stop(stale, "SIGKILL", 0)
        await driver.destroy(stale)
        assert victim.poll() is None, "a process that reused the pid was signalled"

        # Right start time, but not a shim (its command line says so).
        stale.state["shim_start"] = real_start
        assert not await RawExecDriver().recover(stale)
    finally:
        victim.kill()
        victim.wait()


async def test_recover_after_reboot(make_ctx: MakeCtx) -> None:
    driver = RawExecDriver()
    handle = await driver.start(make_ctx("sleep", ["30"]))
    old = roundtrip(handle)
    old.state["boot_id"] = "another-boot"
    try:
        assert not await RawExecDriver().recover(old)
    finally:
        await driver.stop(handle, "SIGKILL", 0)


async def test_recover_rejects_a_bad_handle() -> None:
    driver = RawExecDriver()
    with pytest.raises(DriverError, match="lacks"):
        await driver.recover(TaskHandle(driver="raw_exec", task_id="x/y", state={}))
    with pytest.raises(DriverError, match="'mock' task handle"):
        await driver.recover(TaskHandle(driver="mock", task_id="x/y", state={}))


async def test_without_pidfds_the_shim_is_polled(
    make_ctx: MakeCtx, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("podium.drivers.process.POLL_INTERVAL", 0.02)
    detached = start_detached(base_dir / "orphan", "sh", "-c", WAIT_FOR_GO)
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    driver = RawExecDriver()
    own = await driver.start(make_ctx("sh", ["-c", "exit 6"]))
    assert (await asyncio.wait_for(driver.wait(own), 3)).exit_code == 6
    assert await driver.recover(detached)
    (base_dir / "orphan" / "go").touch()
    assert (await asyncio.wait_for(driver.wait(detached), 3)).exit_code == 7


async def test_a_second_start_replaces_a_forgotten_first(base_dir: Path) -> None:
    # An agent spawned the task, then died before saving the handle; the next
    # agent starts the task again in the same task dir.
    task_dir = base_dir / "twice"
    forgotten = start_detached(task_dir, "sleep", "30")
    old_shim, old_task = forgotten.state["shim_pid"], forgotten.state["task_pid"]
    # the second runs until the test says go (a timed one may be over before it is recovered)
    again = start_detached(task_dir, "sh", "-c", WAIT_FOR_GO.replace("exit 7", "exit 3"))
    await until(lambda: not alive(old_task) and not alive(old_shim), timeout=10)
    driver = RawExecDriver()
    assert await driver.recover(again)
    (task_dir / "go").touch()
    assert (await asyncio.wait_for(driver.wait(again), 10)).exit_code == 3
