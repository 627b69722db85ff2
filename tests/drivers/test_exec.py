"""exec: cgroups, namespaces and an unprivileged user, on this machine's kernel."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.drivers import cgroups, procfs
from podium.drivers.base import TaskHandle
from podium.drivers.exec import ExecDriver
from podium.drivers.uids import DEFAULT_RANGE
from podium.errors import DriverError

from .conftest import MakeCtx, context_factory, needs_exec, read
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


async def test_runs_as_the_allocations_own_uid(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    """No user named: a uid of the allocation's own (not a shared ``nobody``)."""
    first = (await run(driver, make_ctx, "id -u; id -g; id -G")).split()
    again = (await run(driver, make_ctx, "id -u")).split()
    other = (await run(driver, make_ctx, "id -u", alloc_id="other-alloc")).split()
    lo, hi = DEFAULT_RANGE
    assert lo <= int(first[0]) <= hi and first[1] == first[0] and first[2:] == [first[0]]
    assert again == first[:1]  # the allocation's tasks share it
    assert other != first[:1]  # another allocation gets another


async def test_runs_as_the_named_user(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    assert (await run(driver, make_ctx, "id -un", user="nobody")).strip() == "nobody"
    assert (await run(driver, make_ctx, "id -u", user="65534")).strip() == "65534"


@pytest.mark.parametrize("user", ["root", "0", "00", "daemon", "1"])
async def test_root_and_denylisted_users_are_refused(
    driver: ExecDriver, make_ctx: MakeCtx, user: str
) -> None:
    ctx = make_ctx("sh", ["-c", "echo ran > ran"], user=user)
    with pytest.raises(DriverError, match="is refused on this node") as caught:
        await driver.start(ctx)
    assert not caught.value.recoverable
    assert not Path(ctx.task_dir, "ran").exists()
    denied = driver.fingerprint().attributes["user_denylist"].split(",")
    assert {"root", "0", "daemon", "1"} <= set(denied)


async def test_unknown_user(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    with pytest.raises(DriverError, match="user 'no-such-user' does not exist"):
        await driver.start(make_ctx("true", user="no-such-user"))


async def test_task_dir_belongs_to_the_task(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    ctx = make_ctx("sh", ["-c", "echo hi > mine; pwd; id -u"])
    handle = await driver.start(ctx)
    assert (await driver.wait(handle)).exit_code == 0, read(ctx.stderr_path)
    where, uid = read(ctx.stdout_path).split()
    st = os.stat(ctx.task_dir)
    assert (st.st_uid, st.st_mode & 0o777) == (int(uid), 0o700)
    assert os.stat(Path(ctx.task_dir, "mine")).st_uid == int(uid)
    assert os.stat(Path(ctx.task_dir, ".podium")).st_uid == 0  # the shim's files stay root's
    assert where == ctx.task_dir  # the same path inside the task's root
    await driver.destroy(handle)


async def test_own_root_filesystem(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    """The host's secrets, homes and other directories are not there; what is, is read-only."""
    script = (
        "for p in /etc/shadow /etc/gshadow /etc/sudoers /root /home /var /work /opt; do "
        "[ -e $p ] && echo SEEN $p; done; "
        "touch /usr/x /etc/passwd /x 2>/dev/null && echo WROTE; "
        "echo tmp > /tmp/t && cat /tmp/t; "
        "echo null > /dev/null && echo dev; "
        "head -c 4 /dev/urandom | wc -c; "
        "grep -c . /proc/self/mountinfo > /dev/null && echo proc; "
        "ls /proc | grep -c '^[0-9]'"
    )
    out = (await run(driver, make_ctx, script)).split()
    assert "SEEN" not in out and "WROTE" not in out, out
    assert out[:4] == ["tmp", "dev", "4", "proc"], out
    assert int(out[4]) <= 6  # only its own few processes


def _host_mounts() -> list[str]:
    """The host's mount table, less the Docker Engine's and the agents' secrets tmpfs:
    containers and tasks of tests running beside this one come and go there."""
    return [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if "/var/lib/docker/" not in line
        and "/run/docker/" not in line
        and " podium-secrets " not in line
    ]


async def test_host_mount_table_is_unchanged(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    before = _host_mounts()
    handles = [await driver.start(make_ctx("sleep", ["30"])) for _ in range(3)]
    for h in handles:
        assert await driver.task_pid(h) is not None
    assert _host_mounts() == before  # while they run
    for h in handles:
        await driver.destroy(h)
    assert _host_mounts() == before  # and after


async def test_another_allocation_cannot_read_the_files(base_dir: Path) -> None:
    """Job B's task cannot read job A's task dir, neither inside its root (not there) nor
    on the host as B's uid (permission denied)."""
    driver = ExecDriver(cgroup_root=ROOT)
    a_dir, b_dir = base_dir / "a", base_dir / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = context_factory(a_dir)("sh", ["-c", "echo pw=hunter2 > secret.txt"], alloc_id="alloc-a")
    handle = await driver.start(a)
    assert (await driver.wait(handle)).exit_code == 0, read(a.stderr_path)
    await driver.destroy(handle)
    secret = Path(a.task_dir, "secret.txt")
    b = context_factory(b_dir)("cat", [str(secret)], alloc_id="alloc-b")
    handle = await driver.start(b)
    assert (await driver.wait(handle)).exit_code != 0
    assert "No such file" in read(b.stderr_path) and "hunter2" not in read(b.stdout_path)
    await driver.destroy(handle)
    b_uid = driver.options.uids.lease("alloc-b")
    done = subprocess.run(
        ["setpriv", f"--reuid={b_uid}", f"--regid={b_uid}", "--clear-groups", "cat", str(secret)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "Permission denied" in done.stderr, done


async def test_command_outside_the_root_is_refused(
    driver: ExecDriver, make_ctx: MakeCtx, tmp_path: Path
) -> None:
    outside = tmp_path / "tool"
    outside.write_text("#!/bin/sh\necho hi\n")
    outside.chmod(0o755)
    with pytest.raises(DriverError, match="outside the task's root filesystem"):
        await driver.start(make_ctx(str(outside)))


async def test_pid_namespace(driver: ExecDriver, make_ctx: MakeCtx) -> None:
    out = await run(driver, make_ctx, "echo $$; ls /proc | grep -c '^[0-9]'")
    pid, count = map(int, out.split())
    assert pid > 1  # pid 1 is the namespace's init (a dash), so SIGTERM reaches the task
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


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def test_no_shell_message_when_the_task_dies_before_its_init(
    driver: ExecDriver, make_ctx: MakeCtx
) -> None:
    """The namespace's pid 1 must not report its child's death into the task's log: a
    stop's SIGKILLs reach the task and its init one after the other, and an init that
    reaped the task in between wrote "Killed" there (the now-and-then failure of the
    test above).  Killing the task alone makes that order certain."""
    ctx = make_ctx("sleep", ["30"])
    handle = await driver.start(ctx)
    dirs = handle.state["cgroups"]
    await until(lambda: any(_comm(p) == "sleep" for p in cgroups.pids(dirs)), timeout=10)
    (task,) = [p for p in cgroups.pids(dirs) if _comm(p) == "sleep"]
    os.kill(task, signal.SIGKILL)
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert result.signal == signal.SIGKILL, result
    assert read(ctx.stderr_path) == ""
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
