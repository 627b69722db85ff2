"""A task's files are its user's alone: rendered templates 0600, ``secrets/`` a tmpfs of
its own (0700), the allocation's directory not listable, and no mount left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from podium.agent import secretsdir
from podium.agent.identity import write_token
from podium.agent.runner import AllocRunner
from podium.drivers.base import TaskContext, TaskOwner
from podium.drivers.docker import container_owner
from podium.drivers.mock import MockDriver
from podium.models import JobSpec

from .conftest import OfflineRunner, make_alloc, until

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and chown need root")

OWNER = TaskOwner(70222, 70222)


def secrets_mounts() -> dict[str, str]:
    """The secrets tmpfs mounts of the host: mount point -> mount and super options."""
    out = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if tail[:2] == ["tmpfs", secretsdir.FSNAME]:
            out[fields[4]] = f"{fields[5]} {tail[2]}"
    return out


@needs_root
def test_the_secrets_dir_is_a_small_tmpfs_of_the_tasks_user(tmp_path: Path) -> None:
    task = tmp_path / "alloc" / "t"
    task.mkdir(parents=True)
    secrets = task / "secrets"
    try:
        assert secretsdir.prepare(str(task), OWNER) is True
        assert secretsdir.prepare(str(task), OWNER) is True  # once only
        mounts = {p: o for p, o in secrets_mounts().items() if p.startswith(str(tmp_path))}
        assert list(mounts) == [str(secrets)]
        opts = mounts[str(secrets)]
        for flag in ("nosuid", "nodev", "noexec", f"size={secretsdir.SIZE >> 10}k"):
            assert flag in opts, opts
        st = secrets.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (70222, 70222, 0o700)
        write_token(str(task), "the-token")
        st = (secrets / "podium_token").stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (70222, 0o600)
        assert secretsdir.unmount_tasks(str(tmp_path / "alloc")) == 1
        assert not [p for p in secrets_mounts() if p.startswith(str(tmp_path))]
        assert not (secrets / "podium_token").exists()  # it was in memory only
    finally:
        secretsdir.unmount_under(str(tmp_path))


@needs_root
def test_an_agent_takes_off_the_mounts_of_allocations_it_lacks(tmp_path: Path) -> None:
    allocs = tmp_path / "allocs"
    for alloc in ("kept", "gone"):
        (allocs / alloc / "t").mkdir(parents=True)
        assert secretsdir.prepare(str(allocs / alloc / "t"), OWNER)
    try:
        gone = secretsdir.unmount_orphans(str(allocs), {"kept"})
        assert gone == [str(allocs / "gone" / "t" / "secrets")]
        assert [p for p in secrets_mounts() if p.startswith(str(tmp_path))] == [
            str(allocs / "kept" / "t" / "secrets")
        ]
    finally:
        secretsdir.unmount_under(str(tmp_path))


@needs_root
def test_a_symlink_planted_as_the_secrets_dir_is_not_mounted_over(tmp_path: Path) -> None:
    """The task owns its task dir: a ``secrets`` symlink to elsewhere must not make root
    mount (or chown) there."""
    task = tmp_path / "t"
    task.mkdir()
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (task / "secrets").symlink_to(elsewhere)
    with pytest.raises(OSError):
        secretsdir.prepare(str(task), OWNER)
    assert not [p for p in secrets_mounts() if p.startswith(str(tmp_path))]
    assert elsewhere.stat().st_uid == 0


class OwnedMock(MockDriver):
    """A mock whose tasks run as a user of their own (as exec's do)."""

    def task_owner(self, ctx: TaskContext) -> TaskOwner:
        return OWNER


def job(config: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job": "web",
            "groups": {
                "g": {
                    "restart": {"attempts": 0, "mode": "fail"},
                    "tasks": {
                        "t": {
                            "driver": "mock",
                            "config": config,
                            "templates": [
                                {"destination": "local/db/password", "data": "pw=hunter2"},
                                {"destination": "secrets/api.key", "data": "key=k3y"},
                            ],
                        }
                    },
                }
            },
        }
    )


async def _started(offline_runner: OfflineRunner, config: dict[str, Any]) -> AllocRunner:
    runner = offline_runner(make_alloc(), job(config), OwnedMock())
    runner.start()
    await until(lambda: "t" in runner.handles, "the task to start")
    return runner


@needs_root
async def test_templates_and_secrets_belong_to_the_task_and_leave_no_mount(
    offline_runner: OfflineRunner,
) -> None:
    runner = await _started(offline_runner, {"run_for": "1h"})
    alloc_dir = runner.alloc_path
    task = Path(alloc_dir, "t")
    assert stat.S_IMODE(os.stat(alloc_dir).st_mode) == 0o711  # not listable by others
    for path, mode in (
        (task / "local" / "db" / "password", 0o600),
        (task / "local" / "db", 0o700),
        (task / "secrets" / "api.key", 0o600),
        (task / "secrets", 0o700),
    ):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (70222, 70222, mode), path
    assert str(task / "secrets") in secrets_mounts()
    await runner.kill_and_forget()
    assert not [p for p in secrets_mounts() if p.startswith(alloc_dir)]
    assert not os.path.exists(alloc_dir)


@needs_root
async def test_a_finished_allocation_unmounts_its_secrets(offline_runner: OfflineRunner) -> None:
    runner = await _started(offline_runner, {"run_for": "50ms"})
    assert str(Path(runner.alloc_path, "t", "secrets")) in secrets_mounts()
    await until(lambda: runner.machine.cleaned_up, "the allocation to be cleaned up")
    assert not [p for p in secrets_mounts() if p.startswith(runner.alloc_path)]
    assert Path(runner.alloc_path, "t", "local", "db", "password").exists()  # only it went


def test_a_containers_files_go_to_its_numeric_user_else_to_any_user() -> None:
    """Docker: ``uid[:gid]`` is known to the agent; a name (or the image's default user)
    only the image resolves, so the files must be readable by any user (0644/0755)."""
    assert container_owner("1000") == TaskOwner(1000, 1000)
    assert container_owner("1000:50") == TaskOwner(1000, 50)
    assert container_owner("1000:50").file_mode == 0o600
    for user in ("", "nginx", "1000:staff", "www-data:50"):
        owner = container_owner(user)
        assert owner.any_user and (owner.uid, owner.gid) == (os.geteuid(), os.getegid())
        assert (owner.file_mode, owner.dir_mode) == (0o644, 0o755)
