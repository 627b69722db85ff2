"""Each task's ``secrets/`` dir: its user's alone, and in memory where the agent can.

The workload token (:mod:`podium.agent.identity`) and any template a job renders under
``secrets/`` live here.  The directory is made 0700 and given to the user the task runs
as (:meth:`podium.drivers.base.Driver.task_owner`) before anything is written to it.
An agent running as root mounts a small tmpfs on it (``SIZE`` bytes, ``INODES`` files,
``nosuid,nodev,noexec``, source name ``podium-secrets``), so what is written there never
reaches the node's disk; elsewhere (not root, or mounts forbidden, as in many
containers) it stays a plain directory.

The mount is made through the opened directory (``/proc/self/fd/N`` of an ``O_NOFOLLOW``
descriptor): a task that owns its task dir cannot swap in a symlink and have root mount
over another path.  :func:`unmount_tasks` takes the mounts of an allocation's tasks off
again (lazily, never following a symlink) when the allocation is done or its directory
removed, so nothing stays mounted on the host: one ``umount2`` per task dir, not a scan
of the mount table (which holds a line per running task).

An ``exec`` task sees it: its root binds the task dir with ``rbind``, which carries the
mount into the task's own mount namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podium.drivers.base import TaskOwner

log = logging.getLogger("podium.agent")

SECRETS_DIR = "secrets"
SIZE = 4 << 20
"""The tmpfs's size: a token, a CA and a few rendered files (a template renders at most
1 MiB).  Its pages are charged to the agent's memory."""
INODES = 256
FSNAME = "podium-secrets"
"""The tmpfs's source name, as ``/proc/self/mountinfo`` shows it."""

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
_libc = ctypes.CDLL(None, use_errno=True)
_warned = False


def prepare(task_dir: str, owner: TaskOwner | None) -> bool:
    """``<task_dir>/secrets``: made if missing (symlinks never followed), a tmpfs mounted on
    it when the agent can, owned by ``owner`` (None: the agent's own user) with its
    ``dir_mode``.  Answers whether it is a tmpfs.  Raises OSError when the dir cannot be
    made or given away."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    task_fd = os.open(task_dir, flags)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(SECRETS_DIR, 0o700, dir_fd=task_fd)
        fd = os.open(SECRETS_DIR, flags, dir_fd=task_fd)
        try:
            mounted = os.fstat(fd).st_dev != os.fstat(task_fd).st_dev
            if not mounted and os.geteuid() == 0 and _mount(fd, owner):
                os.close(fd)
                fd = os.open(SECRETS_DIR, flags, dir_fd=task_fd)  # the tmpfs's root now
                mounted = os.fstat(fd).st_dev != os.fstat(task_fd).st_dev
            mode = owner.dir_mode if owner is not None else 0o700
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
            os.fchmod(fd, mode)
            return mounted
        finally:
            os.close(fd)
    finally:
        os.close(task_fd)


def _mount(dir_fd: int, owner: TaskOwner | None) -> bool:
    """Mount the tmpfs on the directory ``dir_fd``; False (logged once) when the kernel
    refuses."""
    global _warned
    uid, gid = (owner.uid, owner.gid) if owner is not None else (os.geteuid(), os.getegid())
    mode = owner.dir_mode if owner is not None else 0o700
    data = f"size={SIZE},nr_inodes={INODES},mode={mode:o},uid={uid},gid={gid}"
    target = f"/proc/self/fd/{dir_fd}".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc.mount(FSNAME.encode(), target, b"tmpfs", flags, data.encode()) == 0:
        return True
    err = ctypes.get_errno()
    if not _warned:
        _warned = True
        log.warning(
            "cannot mount a tmpfs on tasks' secrets dirs (%s): they stay on disk",
            os.strerror(err),
        )
    return False


def _unescape(field: str) -> str:
    """A mountinfo path field: ``\\040`` and friends back to their characters."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounted_under(path: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The secrets tmpfs mounts at or under ``path`` (symlinks of ``path`` resolved)."""
    top = os.path.realpath(path).rstrip("/") + "/"
    found: list[str] = []
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        if tail[0] != "tmpfs" or tail[1] != FSNAME:
            continue
        point = _unescape(fields[4])
        if (point + "/").startswith(top):
            found.append(point)
    return found


def unmount_tasks(alloc_dir: str) -> int:
    """Take off the secrets tmpfs of every task dir of the allocation dir ``alloc_dir``
    (lazily; never through a symlink: the alloc dir and its entries are root's, the last
    component is not followed); answers how many were mounted."""
    done = 0
    try:
        entries = [e.name for e in os.scandir(alloc_dir) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return done
    for name in entries:
        point = os.path.join(alloc_dir, name, SECRETS_DIR).encode()
        if _libc.umount2(point, _MNT_DETACH | _UMOUNT_NOFOLLOW) == 0:
            done += 1
            continue
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR, errno.EPERM):
            log.warning("cannot unmount the secrets tmpfs %s: %s", point, os.strerror(err))
    return done


def unmount_orphans(allocs_root: str, owned: set[str]) -> list[str]:
    """Take off the secrets tmpfs of allocation dirs under ``allocs_root`` whose allocation
    is not in ``owned`` (an agent whose state was lost, or that was down when they were
    collected, left them); answers those taken off."""
    top = os.path.realpath(allocs_root)
    gone = [p for p in mounted_under(top) if os.path.relpath(p, top).split("/")[0] not in owned]
    for point in sorted(gone, key=len, reverse=True):
        _libc.umount2(point.encode(), _MNT_DETACH | _UMOUNT_NOFOLLOW)
    return [p for p in gone if p not in mounted_under(top)]


def unmount_under(path: str) -> list[str]:
    """Take off every secrets tmpfs at or under ``path`` (the deepest first, lazily, never
    through a symlink); answers those that were."""
    done: list[str] = []
    for point in sorted(mounted_under(path), key=len, reverse=True):  # stacked: each
        if _libc.umount2(point.encode(), _MNT_DETACH | _UMOUNT_NOFOLLOW) == 0:
            done.append(point)
        else:
            log.warning(
                "cannot unmount the secrets tmpfs %s: %s", point, os.strerror(ctypes.get_errno())
            )
    return done
