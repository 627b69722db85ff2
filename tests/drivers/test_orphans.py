"""``reap_orphans`` of the process drivers: shims an agent on a data dir started, for
allocations it does not own, are stopped (SIGTERM, SIGKILL after the grace) with their
cgroups; owned tasks and another data dir's are left alone.  Real shims and processes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from podium.drivers.base import TaskContext
from podium.drivers.raw_exec import RawExecDriver
from podium.errors import DriverError
from podium.models import Resources
from tests.drivers.conftest import MakeCtx
from tests.drivers.helpers import alive, has_text, until

TRAP = "trap '' TERM; echo ready; while :; do sleep 0.1; done"


def in_data_dir(ctx: TaskContext, data_dir: Path, alloc_id: str) -> TaskContext:
    task_dir = data_dir / "allocs" / alloc_id / ctx.task_name
    task_dir.mkdir(parents=True)
    return dataclasses.replace(
        ctx,
        env={**ctx.env, "PODIUM_TASK_DIR": str(task_dir)},  # as the agent gives every task
        alloc_id=alloc_id,
        alloc_dir=str(task_dir.parent / "alloc"),
        task_dir=str(task_dir),
        stdout_path=str(task_dir / "stdout.log"),
        stderr_path=str(task_dir / "stderr.log"),
        data_dir=str(data_dir),
    )


async def test_only_this_data_dirs_unowned_shims_are_stopped(
    make_ctx: MakeCtx, base_dir: Path
) -> None:
    mine, theirs = base_dir / "mine", base_dir / "theirs"
    driver = RawExecDriver()
    owned = await driver.start(in_data_dir(make_ctx("/bin/sh", ["-c", TRAP]), mine, "a1"))
    lost_ctx = in_data_dir(make_ctx("/bin/sh", ["-c", TRAP]), mine, "a2")
    lost = await driver.start(lost_ctx)
    other = await driver.start(in_data_dir(make_ctx("/bin/sh", ["-c", TRAP]), theirs, "a2"))
    await until(has_text(lost_ctx.stdout_path, "ready"), timeout=10)
    handles = (owned, lost, other)
    pids = [int(h.state["task_pid"] or 0) or h.pid or 0 for h in handles]
    shims = [int(h.state["shim_pid"]) for h in handles]
    try:
        fresh = RawExecDriver()  # a new agent's driver: it knows none of them
        reaped = await fresh.reap_orphans(str(mine), {"a1"}, grace=0.3)
        assert [(o.driver, o.alloc_id, o.task) for o in reaped] == [
            ("raw_exec", "a2", lost_ctx.task_name)
        ]
        assert f"shim pid {shims[1]} (SIGKILL)" in str(reaped[0])  # it trapped SIGTERM
        await until(lambda: not alive(shims[1]) and not alive(pids[1]), timeout=10)
        assert alive(shims[0]) and alive(shims[2])
        assert await fresh.reap_orphans(str(mine), {"a1"}, grace=0.3) == []
    finally:
        for h in handles:
            await driver.destroy(h)


async def test_an_orphans_cgroup_is_removed(make_ctx: MakeCtx, base_dir: Path) -> None:
    driver = RawExecDriver()
    ctx = dataclasses.replace(
        in_data_dir(make_ctx("/bin/sh", ["-c", "echo ready; exec sleep 600"]), base_dir, "a9"),
        resources=Resources(cpu=100, memory=64, memory_max=64),
    )
    try:
        handle = await driver.start(ctx)
    except DriverError as exc:
        pytest.skip(f"no cgroups for raw_exec limits here: {exc}")
    dirs = list(handle.state["cgroups"])
    assert dirs and all(os.path.isdir(d) for d in dirs)
    try:
        reaped = await RawExecDriver().reap_orphans(str(base_dir), set(), grace=5)
        assert [o.alloc_id for o in reaped] == ["a9"] and "(SIGTERM)" in reaped[0].ref
        assert not any(os.path.exists(d) for d in dirs)
    finally:
        await driver.destroy(handle)


async def test_tasks_that_outlived_their_shim_are_stopped(
    make_ctx: MakeCtx, base_dir: Path
) -> None:
    """The shim died with the agent's state (or the task left its process group, as a
    daemon does): the task is found by its PODIUM_TASK_DIR, and only an unowned one."""
    driver = RawExecDriver()
    daemon = 'setsid sh -c "$0" & echo started; exec sleep 600'
    lost_ctx = in_data_dir(make_ctx("/bin/sh", ["-c", daemon, TRAP]), base_dir, "b1")
    kept_ctx = in_data_dir(make_ctx("/bin/sh", ["-c", TRAP]), base_dir, "b2")
    lost, kept = await driver.start(lost_ctx), await driver.start(kept_ctx)
    handles = (lost, kept)
    try:
        await until(has_text(lost_ctx.stdout_path, "ready"), timeout=10)
        await until(has_text(kept_ctx.stdout_path, "ready"), timeout=10)
        task_dir = lost_ctx.task_dir.encode()

        def lost_pids() -> list[int]:
            return [
                int(p)
                for p in os.listdir("/proc")
                if p.isdigit() and _environ_has(int(p), b"PODIUM_TASK_DIR=" + task_dir)
            ]

        before = lost_pids()
        os.kill(int(lost.state["shim_pid"]), 9)  # the shim is gone; its tasks are not
        await until(lambda: not alive(int(lost.state["shim_pid"])), timeout=10)
        assert lost_pids() and set(lost_pids()) <= set(before)
        kept_pid = int(kept.state["task_pid"] or 0) or kept.pid or 0

        reaped = await RawExecDriver().reap_orphans(str(base_dir), {"b2"}, grace=0.3)
        assert {(o.alloc_id, o.task) for o in reaped} == {("b1", lost_ctx.task_name)}
        assert "without its shim" in str(reaped[0]) and "(SIGKILL)" in str(reaped[0])
        await until(lambda: not lost_pids(), timeout=10)
        assert alive(int(kept.state["shim_pid"])) and alive(kept_pid)
    finally:
        for h in handles:
            await driver.destroy(h)


def _environ_has(pid: int, var: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return var in f.read().split(b"\0")
    except OSError:
        return False
