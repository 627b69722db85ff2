"""``exec``: ``raw_exec`` plus isolation: cgroup limits, PID and mount namespaces,
and an unprivileged user (``nobody``/``nogroup`` unless the task names one).

The chain the shim starts (each link ``exec``s the next, except where noted)::

    unshare --pid --mount --fork --mount-proc --propagation private --
            setpriv --reuid=U --regid=G --init-groups --
            /bin/sh -c INIT_SCRIPT podium-init PWD COMMAND ARGS...

``unshare --fork`` stays behind as the parent (it waits and passes the exit
status on); its child is pid 1 of the new namespace.  That pid 1 is a dash
that runs the task as pid 2 rather than ``exec``-ing it, because the kernel
drops signals to a namespace's pid 1 for which it has no handler: a task that
*was* pid 1 would ignore the agent's SIGTERM.  When pid 1 exits the kernel
kills whatever is left in the namespace.  Before any of this, the shim moves
the task into its cgroup(s), so everything it starts is accounted and limited.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import subprocess
import time
from typing import Any

from podium.drivers import cgroups
from podium.drivers.base import TaskContext
from podium.drivers.commands import exec_config, helper_path, pwd_arg, resolve_command, task_cwd
from podium.drivers.process import SH, STATE_SUBDIR, LaunchPlan, ProcessDriver
from podium.errors import DriverError
from podium.models import DriverInfo

DEFAULT_USER = "nobody"
DEFAULT_GROUP = "nogroup"
INIT_SCRIPT = (
    "case $1 in -) unset PWD ;; *) PWD=${1#=} ;; esac; shift; "
    'exec 4>&2 2>/dev/null; "$@" 2>&4 4>&-; exit $?'
)
"""pid 1 of the task's namespace: put PWD back as the shim does, run the task (its job
messages such as "Killed" go to /dev/null, not the task's log), pass its status on."""
PROBE_RETRY = 60.0
"""Seconds before a failed namespace probe is tried again."""


class ExecDriver(ProcessDriver):
    name = "exec"

    def __init__(
        self,
        cgroup_root: str | None = None,
        *,
        fs_root: str = "/sys/fs/cgroup",
        mountinfo: str = "/proc/self/mountinfo",
    ) -> None:
        super().__init__()
        self._unshare = helper_path("unshare")
        self._setpriv = helper_path("setpriv")
        self._cgroup_root = cgroups.tree_root(cgroup_root, fs_root)
        self._fs_root, self._mountinfo = fs_root, mountinfo
        self._cgroups: cgroups.Cgroups | None = None
        self._probe: tuple[float, str | None] | None = None

    # ----------------------------------------------------------- fingerprint
    def fingerprint(self) -> DriverInfo:
        why = self._unusable()
        if why is not None:
            return DriverInfo(detected=False, healthy=False, description=why)
        assert self._cgroups is not None
        return DriverInfo(
            detected=True,
            healthy=True,
            description=f"isolated tasks: {self._cgroups.describe()}, pid+mount namespaces",
            attributes={"cgroup_version": str(self._cgroups.version)},
        )

    def _unusable(self) -> str | None:
        """Why tasks cannot run here, or None when they can."""
        if os.geteuid() != 0:
            return "exec needs the agent to run as root (cgroups, namespaces, changing user)"
        for tool in (self._unshare, self._setpriv):
            if not os.access(tool, os.X_OK):
                return f"{os.path.basename(tool)} (util-linux) is not installed"
        if self._cgroups is None:
            try:
                self._cgroups = cgroups.detect(self._fs_root, self._mountinfo, self._cgroup_root)
            except cgroups.CgroupUnavailable as exc:
                return str(exc)
        return self._namespaces_work()

    def _namespaces_work(self) -> str | None:
        """Run the isolation chain once (``true``): containers often forbid it."""
        now = time.monotonic()
        if self._probe is not None and (
            self._probe[1] is None or now - self._probe[0] < PROBE_RETRY
        ):
            return self._probe[1]
        argv = [*self._chain(0, 0), "/bin/true"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
            why = None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
        if why is not None:
            why = f"cannot create pid/mount namespaces: {why or 'unknown error'}"
        self._probe = (now, why)
        return why

    def _chain(self, uid: int, gid: int, pwd: str = "-") -> list[str]:
        return [
            self._unshare,
            "--pid",
            "--mount",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
            self._setpriv,
            f"--reuid={uid}",
            f"--regid={gid}",
            "--init-groups",
            "--",
            SH,
            "-c",
            INIT_SCRIPT,
            "podium-init",
            pwd,
        ]

    # ----------------------------------------------------------- start
    def _plan(self, ctx: TaskContext) -> LaunchPlan:
        why = self._unusable()
        if why is not None:
            raise DriverError(f"the exec driver cannot run tasks here: {why}")
        assert self._cgroups is not None
        cfg = exec_config(ctx)
        cwd = task_cwd(cfg, ctx)
        command = resolve_command(cfg.command, ctx.env, cwd)
        user, uid, gid = identity(ctx.user)
        give_task_dir(ctx.task_dir, uid, gid)
        plan = LaunchPlan(
            argv=[*self._chain(uid, gid, pwd_arg(ctx.env)), command, *cfg.args],
            cwd=cwd,
            env=dict(ctx.env),
            state={"user": user, "uid": uid, "gid": gid},
        )
        # exec holds a task to its reservation unless it names a higher limit.
        self._limit(plan, self._cgroups, ctx, ctx.resources.memory_max or ctx.resources.memory)
        return plan

    def _signalable(self, state: dict[str, Any]) -> bool:
        """The task exists once the cgroup holds unshare, the namespace's init and it.

        Earlier, a SIGTERM would reach only unshare (which blocks it while it
        waits) and init (which the kernel shields): it would be lost.
        """
        dirs = list(state.get("cgroups") or [])
        return super()._signalable(state) and len(cgroups.pids(dirs)) >= 3


def identity(user: str | None) -> tuple[str, int, int]:
    """(name, uid, gid) the task runs as: ``user``'s primary group, or nobody/nogroup."""
    name = user or DEFAULT_USER
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise DriverError(f"user {name!r} does not exist on this node") from None
    gid = pw.pw_gid
    if user is None:
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(DEFAULT_GROUP).gr_gid
    return pw.pw_name, pw.pw_uid, gid


def give_task_dir(task_dir: str, uid: int, gid: int) -> None:
    """Let the task user write its task dir (symlinks are not followed).

    The shim's ``.podium`` state dir stays root's, so the task cannot rewrite
    the files it reads back (see README for what a task can still do).
    """
    try:
        os.chown(task_dir, uid, gid, follow_symlinks=False)
        for top, dirnames, filenames in os.walk(task_dir):
            if top == task_dir and STATE_SUBDIR in dirnames:
                dirnames.remove(STATE_SUBDIR)
            for entry in (*dirnames, *filenames):
                os.chown(os.path.join(top, entry), uid, gid, follow_symlinks=False)
    except OSError as exc:
        raise DriverError(f"cannot hand the task dir to uid {uid}: {exc}") from exc
