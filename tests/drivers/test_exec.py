"""exec: cgroups, namespaces and an unprivileged user, on this machine's kernel."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.drivers import cgroups, procfs
from podium.drivers.base import TaskHandle
from podium.drivers.exec import ExecDriver
from podium.errors import DriverError

from .conftest import MakeCtx, needs_exec, read
from .helpers import has_text, pss_kib, until
from .test_reattach import start_detached

pytestmark = needs_exec


ROOT = f"podium-test-{os.getpid()}"
"""The tests' own cgroup parent, removed afterwards."""


@pytest.fixture
async def driver() -> AsyncIterator[ExecDriver]:
    root = ROOT
    drv = ExecDriver(cgroup_root=root)
    yield drv
    layout = cgroups.detect(root=root)
    mounts = layout.mounts.values() if isinstance(layout, cgroups.CgroupV1) else [layout.mount]
    for mount in set(mounts):
        parent = os.path.join(mount, root)
        if os.path.isdir(parent):
            leftovers = [e.path for e in os.scandir(parent) if e.is_dir()]
            cgroups.kill(leftovers)
            await until(lambda ds=leftovers: cgroups.remove(ds), timeout=3)  # type: ignore[misc]
            os.rmdir(parent)


async def run(driver: ExecDriver, make_ctx: MakeCtx, script: str, **kw: object) -> str:
    ctx = make_ctx("sh", ["-c", script], **kw)
    handle = await driver.start(ctx)
    result = await asyncio.wait_for(driver.wait(handle), 5)
    assert result.exit_code == 0, read(ctx.stderr_path)
    await driver.destroy(handle)
    return read(ctx.stdout_path)


def test_fingerprint_healthy(driver: ExecDriver) -> None:
    info = driver.fingerprint()
    assert info.detected and info.healthy, info.description
    assert info.attributes["cgroup_version"] in ("1", "2")


def test_fingerprint_without_cgroups(tmp_path: Path) -> None:
    (tmp_path / "mountinfo").write_text("")
    info = ExecDriver(fs_root=str(tmp_path), mountinfo=str(tmp_path / "mountinfo")).fingerprint()
    assert not info.detected and not info.healthy
    assert "memory" in info.description


async def test_runs_as_nobody(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    assert (await run(driver, make_ctx, "id -u; id -g")).split() == ["65534", "65534"]


async def test_runs_as_the_named_user(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    assert (await run(driver, make_ctx, "id -un", user="daemon")).strip() == "daemon"
    assert (await run(driver, make_ctx, "id -un", user="1")).strip() == "daemon"


async def test_unknown_user(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    with pytest.raises(DriverError, match="user 'no-such-user' does not exist"):
        await driver.start(make_ctx("true", user="no-such-user"))


async def test_task_dir_belongs_to_the_task(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    ctx = make_ctx("sh", ["-c", "echo hi > mine; pwd"])
    handle = await driver.start(ctx)
    assert (await driver.wait(handle)).exit_code == 0, read(ctx.stderr_path)
    assert os.stat(Path(ctx.task_dir, "mine")).st_uid == 65534
    assert os.stat(Path(ctx.task_dir, ".podium")).st_uid == 0  # the shim's files stay root's
    assert read(ctx.stdout_path).strip() == ctx.task_dir
    await driver.destroy(handle)


async def test_pid_namespace(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    out = await run(driver, make_ctx, "echo $$; ls /proc | grep -c '^[0-9]'")
    pid, count = map(int, out.split())
    assert pid == 2  # pid 1 is the namespace's init (a dash), so SIGTERM reaches the task
    assert count <= 5  # init, the task, ls, grep (and maybe a shell)


async def test_env_is_exactly_the_context_env(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    ctx = make_ctx("env", env={"FOO": "bar", "PWD": "/somewhere"})
    handle = await driver.start(ctx)
    await driver.wait(handle)
    assert dict(line.split("=", 1) for line in read(ctx.stdout_path).splitlines()) == ctx.env
    await driver.destroy(handle)


async def test_cgroup_limits_and_membership(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    ctx = make_ctx("sh", ["-c", "cat /proc/self/cgroup; exec sleep 30"], memory=64, cpu=500)
    handle = await driver.start(ctx)
    dirs = handle.state["cgroups"]
    await until(has_text(ctx.stdout_path, "memory"))
    if handle.state["cgroup_version"] == 1:
        mem = next(d for d in dirs if os.path.exists(os.path.join(d, "memory.limit_in_bytes")))
        cpu = next(d for d in dirs if os.path.exists(os.path.join(d, "cpu.shares")))
        assert read(os.path.join(mem, "memory.limit_in_bytes")).strip() == str(64 * 1024 * 1024)
        assert read(os.path.join(cpu, "cpu.shares")).strip() == "500"
    else:
        assert read(os.path.join(dirs[0], "memory.max")).strip() == str(64 * 1024 * 1024)
        assert read(os.path.join(dirs[0], "cpu.weight")).strip() == str(cgroups.cpu_weight(500))
    name = os.path.basename(dirs[0])
    assert name in read(ctx.stdout_path)
    pid = await driver.task_pid(handle)
    assert pid is not None and pid in cgroups.pids(dirs)
    stats = await driver.stats(handle)
    assert stats.memory_rss_bytes > 0
    await driver.destroy(handle)
    assert not any(os.path.exists(d) for d in dirs)


async def test_limits_above_the_reservation(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    """``memory_max`` and ``cpu_max`` are the hard limits; ``memory`` is only reserved."""
    ctx = make_ctx("sleep", ["30"], memory=32, memory_max=96, cpu=200, cpu_max=1000)
    handle = await driver.start(ctx)
    dirs = handle.state["cgroups"]
    quota = cgroups.cpu_quota_us(1000, cgroups.core_mhz())
    if handle.state["cgroup_version"] == 1:
        mem = next(d for d in dirs if os.path.exists(os.path.join(d, "memory.limit_in_bytes")))
        cpu = next(d for d in dirs if os.path.exists(os.path.join(d, "cpu.shares")))
        assert read(os.path.join(mem, "memory.limit_in_bytes")).strip() == str(96 * 1024 * 1024)
        assert read(os.path.join(cpu, "cpu.cfs_quota_us")).strip() == str(quota)
    else:
        assert read(os.path.join(dirs[0], "memory.max")).strip() == str(96 * 1024 * 1024)
        assert read(os.path.join(dirs[0], "cpu.max")).split() == [str(quota), "100000"]
    await driver.destroy(handle)


async def test_oom_killed(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    ctx = make_ctx("python3", ["-c", "b = bytearray(200 * 1024 * 1024)"], memory=50)
    handle = await driver.start(ctx)
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert result.oom_killed, (result, read(ctx.stderr_path))
    assert result.signal == signal.SIGKILL
    await driver.destroy(handle)
    assert not any(os.path.exists(d) for d in handle.state["cgroups"])


async def test_not_oom_killed(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    ctx = make_ctx("python3", ["-c", "b = bytearray(10 * 1024 * 1024)"], memory=50)
    handle = await driver.start(ctx)
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert (result.exit_code, result.oom_killed) == (0, False), read(ctx.stderr_path)
    await driver.destroy(handle)


async def test_stop_with_sigterm(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    handle = await driver.start(make_ctx("sleep", ["30"]))
    started = time.monotonic()
    await driver.stop(handle, "SIGTERM", 5)
    assert time.monotonic() - started < 2
    result = await driver.wait(handle)
    assert (result.exit_code, result.signal, result.oom_killed) == (143, 15, False)
    await driver.destroy(handle)


async def test_stop_escalates_and_kills_the_cgroup(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    script = (
        'trap "" TERM; (trap "" TERM; exec sleep 30) & echo ready; while :; do sleep 0.05; done'
    )
    ctx = make_ctx("sh", ["-c", script])
    handle = await driver.start(ctx)
    await until(has_text(ctx.stdout_path, "ready"))
    started = time.monotonic()
    await driver.stop(handle, "SIGTERM", 0.3)
    assert time.monotonic() - started >= 0.3
    assert (await driver.wait(handle)).signal == signal.SIGKILL
    await until(lambda: not cgroups.pids(handle.state["cgroups"]), timeout=2)
    await driver.destroy(handle)


async def test_supervision_memory_per_task(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    handles = [await driver.start(make_ctx("sleep", ["30"])) for _ in range(10)]
    try:
        totals = []
        for h in handles:
            unshare = await driver.task_pid(h)
            assert unshare is not None
            members = {p: procfs.read_stat(p) for p in cgroups.pids(h.state["cgroups"])}
            init = next(p for p, st in members.items() if st and st.ppid == unshare)
            totals.append(pss_kib(h.state["shim_pid"]) + pss_kib(unshare) + pss_kib(init))
        assert sum(totals) / len(totals) < 2048, totals  # shim + unshare + the namespace's init
    finally:
        for h in handles:
            await driver.destroy(h)


async def test_no_shell_messages_in_the_log(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    ctx = make_ctx("sleep", ["30"])
    handle = await driver.start(ctx)
    await driver.stop(handle, "SIGKILL", 0)
    await driver.wait(handle)
    assert read(ctx.stderr_path) == ""  # neither the shim nor pid 1 says "Killed"
    await driver.destroy(handle)


async def test_restart_resets_the_cgroup(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    oom = make_ctx("python3", ["-c", "b = bytearray(200 * 1024 * 1024)"], task="same", memory=50)
    first = await driver.start(oom)
    assert (await driver.wait(first)).oom_killed
    second = await driver.start(make_ctx("true", task="same", memory=50))  # no destroy between
    assert not (await driver.wait(second)).oom_killed
    await driver.destroy(second)


async def test_recover_exec_task(driver: ExecDriver, base_dir: Path) -> None:
    handle = start_detached(base_dir / "orphan", "sleep", "30", driver="exec", cgroup_root=ROOT)
    recovered = ExecDriver(cgroup_root=ROOT)
    try:
        assert await recovered.recover(TaskHandle.from_dict(handle.to_dict()))
        await recovered.stop(handle, "SIGTERM", 5)
        assert (await recovered.wait(handle)).signal == signal.SIGTERM
    finally:
        await recovered.destroy(handle)
    assert not any(os.path.exists(d) for d in handle.state["cgroups"])
