"""``exec``: ``raw_exec`` plus isolation: cgroup limits, PID and mount namespaces, a
root filesystem of its own, and an unprivileged user of its allocation's own.

The chain the shim starts (each link ``exec``s the next, except where noted)::

    unshare --pid --mount --fork --propagation private --
            /bin/sh -c INIT_SCRIPT podium-init ROOT FSTAB PWD CWD MOUNT PIVOT UMOUNT
            setpriv --reuid=U --regid=G --groups=... --no-new-privs -- COMMAND ARGS...

``unshare --fork`` stays behind as the parent (it waits and passes the exit
status on); its child is pid 1 of the new namespace.  That pid 1 is a dash,
still root inside the task's private mount namespace: it mounts the task's root
(:mod:`podium.drivers.rootfs`: one ``mount --fstab FSTAB -a``), ``pivot_root``s
into it, unmounts the host's root lazily, ``cd``s to the task's directory (same
path inside) and then runs the task as a child rather than ``exec``-ing it,
because the kernel drops signals to a namespace's pid 1 for which it has no
handler: a task that *was* pid 1 would ignore the agent's SIGTERM.  When pid 1
exits the kernel kills whatever is left in the namespace.  Before any of this,
the shim moves the task into its cgroup(s), so everything it starts is
accounted and limited.  ``setpriv`` drops to the task's user with
``no_new_privs`` (and every bind is ``nosuid``): no setuid program gets root back.

Users: a task that names none runs as its allocation's uid (:mod:`podium.drivers.uids`);
one that names a user runs as it, with the allocation's gid as a supplementary group.
uid 0 and the users on the denylist are refused (the fingerprint lists them as the
``driver.exec.user_denylist`` attribute, which the scheduler checks at placement).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from podium.drivers import cgroups, rootfs
from podium.drivers.base import TaskContext, TaskHandle, TaskOwner
from podium.drivers.commands import exec_config, helper_path, pwd_arg, resolve_command, task_cwd
from podium.drivers.process import SH, STATE_SUBDIR, LaunchPlan, ProcessDriver, _Watch
from podium.drivers.procfs import parse_signal
from podium.drivers.uids import UidPool
from podium.errors import DriverError
from podium.models import DriverInfo

DEFAULT_USER_DENYLIST: tuple[str, ...] = (
    "root",
    "bin",
    "daemon",
    "sys",
    "adm",
    "sync",
    "shadow",
    "operator",
)
"""Refused as a task's ``user`` (with every account whose uid is 0): root, and the system
accounts that own system files or read privileged data on common distributions."""
INIT_SCRIPT = (
    "r=$1 f=$2 a=$3 w=$4 m=$5 p=$6 u=$7; shift 7; exec 4>&2 2>/dev/null; "
    "case ${OLDPWD+x} in x) o==$OLDPWD ;; *) o=- ;; esac; "
    'fail() { s=$?; [ $s -gt 128 ] && exit $s; echo "podium exec: $1" >&4; exit 125; }; '
    '(exec "$m" --fstab "$f" -a 2>&4) || fail "cannot mount the task root filesystem"; '
    'cd "$r" && (exec "$p" . ' + rootfs.OLD_ROOT + ' 2>&4) || fail "cannot pivot_root into $r"; '
    'cd / && (exec "$u" -l /' + rootfs.OLD_ROOT + ' 2>&4) || fail "cannot unmount the host root"; '
    'cd "$w" 2>&4 || fail "no working directory $w in the task root"; '
    "case $a in -) unset PWD ;; *) PWD=${a#=} ;; esac; "
    "case $o in -) unset OLDPWD ;; *) OLDPWD=${o#=} ;; esac; "
    '(exec "$@" 2>&4 4>&-); exit $?'
)
"""pid 1 of the task's namespace (root, in its own mount namespace): mount the task's
root, pivot into it, put PWD (and OLDPWD, which cd sets) back as the shim does, run the
task, pass its status on.  A set-up step that fails exits 125 with a message on the
task's stderr (or 128+N, killed by signal N).

Each child gets the task's stderr inside a subshell ``(exec CMD 2>&4)`` (one fork, as
before), never as ``CMD 2>&4``: dash applies a command's redirections in the *parent*
around the fork and reports a child's death by signal ("Killed") while they are still
in place, so a child killed just before pid 1 itself (a stop's SIGKILLs, one process
at a time) put "Killed" in the task's log.  Now pid 1's own stderr is /dev/null
throughout."""
PROBE_RETRY = 60.0
"""Seconds before a failed namespace probe is tried again."""


@dataclass
class ExecOptions:
    """The agent's ``exec`` settings (``--exec-chroot``, ``--exec-user-denylist``,
    ``--exec-uid-range``)."""

    chroot: tuple[rootfs.Bind, ...] = field(
        default_factory=lambda: tuple(rootfs.parse_bind(p) for p in rootfs.DEFAULT_CHROOT)
    )
    user_denylist: tuple[str, ...] = DEFAULT_USER_DENYLIST
    uids: UidPool = field(default_factory=UidPool)
    root_base: str = rootfs.DEFAULT_BASE


class ExecDriver(ProcessDriver):
    name = "exec"

    def __init__(
        self,
        cgroup_root: str | None = None,
        *,
        fs_root: str = "/sys/fs/cgroup",
        mountinfo: str = "/proc/self/mountinfo",
        options: ExecOptions | None = None,
    ) -> None:
        super().__init__()
        self.options = options or ExecOptions()
        self._unshare = helper_path("unshare")
        self._setpriv = helper_path("setpriv")
        self._nsenter = helper_path("nsenter")
        self._setsid = helper_path("setsid")
        self._env = helper_path("env")
        self._mount = helper_path("mount")
        self._umount = helper_path("umount")
        self._pivot_root = helper_path("pivot_root")
        self._cgroup_root = cgroups.tree_root(cgroup_root, fs_root)
        self._fs_root, self._mountinfo = fs_root, mountinfo
        self._cgroups: cgroups.Cgroups | None = None
        self._probe: tuple[float, str | None] | None = None
        self.root = rootfs.RootFs(self.options.chroot, self.options.root_base)
        self.refused = refused_users(self.options.user_denylist)
        """Names and uids (as text) a task may not run as."""

    # ----------------------------------------------------------- fingerprint
    def fingerprint(self) -> DriverInfo:
        why = self._unusable()
        if why is not None:
            return DriverInfo(
                detected=False,
                healthy=False,
                description=why,
                attributes={"user_denylist": ",".join(sorted(self.refused))},
            )
        assert self._cgroups is not None
        pool = self.options.uids
        return DriverInfo(
            detected=True,
            healthy=True,
            description=(
                f"isolated tasks: {self._cgroups.describe()}, pid+mount namespaces, "
                "own root filesystem"
            ),
            attributes={
                "cgroup_version": str(self._cgroups.version),
                "user_denylist": ",".join(sorted(self.refused)),
                "uid_range": f"{pool.first}-{pool.last}",
            },
        )

    def _unusable(self) -> str | None:
        """Why tasks cannot run here, or None when they can."""
        if os.geteuid() != 0:
            return "exec needs the agent to run as root (cgroups, namespaces, changing user)"
        for tool in (self._unshare, self._setpriv, self._mount, self._umount, self._pivot_root):
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
        why: str | None = None
        try:
            self.root.ensure()
            for tool in (self._setpriv, self._umount, SH):
                if not self.root.visible(tool, []):
                    why = f"{tool} is not in the tasks' root filesystem (see --exec-chroot)"
        except (OSError, DriverError) as exc:
            why = f"cannot make the tasks' root filesystem: {exc}"
        if why is None:
            why = self._probe_chain()
        self._probe = (now, why)
        return why

    def _probe_chain(self) -> str | None:
        probe = tempfile.mkdtemp(prefix="podium-exec-probe-")
        fstab = None
        try:
            os.chmod(probe, 0o755)
            fstab = self._write_fstab("probe", [probe])
            argv = [
                *self._chain(
                    fstab, probe, "-", ["--reuid=65534", "--regid=65534", "--clear-groups"]
                ),
                "true",
            ]
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
            if done.returncode == 0:
                return None
            err = done.stderr.decode(errors="replace").strip()
            return f"cannot isolate a task (namespaces, mounts): {err or 'unknown error'}"
        except (OSError, subprocess.TimeoutExpired, DriverError) as exc:
            return f"cannot isolate a task (namespaces, mounts): {exc}"
        finally:
            rootfs.remove_quietly(fstab)
            shutil.rmtree(probe, ignore_errors=True)

    def _write_fstab(self, name: str, own: list[str], volumes: Sequence[rootfs.Volume] = ()) -> str:
        """The task's fstab, in a directory only root can reach (a task must never be
        able to change what its root-owned pid 1 mounts)."""
        text = self.root.fstab(own, volumes)
        folder = os.path.join(self.options.root_base, "fstab")
        os.makedirs(folder, 0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"{name}-", dir=folder)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def _chain(self, fstab: str, cwd: str, pwd: str, who: list[str]) -> list[str]:
        return [
            self._unshare,
            "--pid",
            "--mount",
            "--fork",
            "--propagation",
            "private",
            "--",
            SH,
            "-c",
            INIT_SCRIPT,
            "podium-init",
            self.root.path,
            fstab,
            pwd,
            cwd,
            self._mount,
            self._pivot_root,
            self._umount,
            self._setpriv,
            *who,
            "--no-new-privs",
            "--",
        ]

    # ----------------------------------------------------------- start
    def _plan(self, ctx: TaskContext) -> LaunchPlan:
        who = self.identity(ctx)  # refusals first: they need no working node
        why = self._unusable()
        if why is not None:
            raise DriverError(f"the exec driver cannot run tasks here: {why}")
        assert self._cgroups is not None
        cfg = exec_config(ctx)
        cwd = task_cwd(cfg, ctx)
        own = [ctx.alloc_dir, ctx.task_dir]
        if not self.root.visible(cwd, own):
            raise DriverError(f"working directory {cwd!r} is outside the task's directories")
        command = self._command(cfg.command, ctx.env, cwd, own)
        user, uid, gid, groups = who
        give_alloc_dirs(ctx.alloc_dir, gid)
        give_task_dir(ctx.task_dir, uid, gid)
        try:
            volumes = [rootfs.Volume(m.source, m.destination, m.read_only) for m in ctx.mounts]
            fstab = self._write_fstab(f"{ctx.alloc_id}-{ctx.task_name}", own, volumes)
        except OSError as exc:
            raise DriverError(f"cannot write the task's mounts: {exc}", recoverable=True) from exc
        ids = [f"--reuid={uid}", f"--regid={gid}"]
        ids.append("--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups")
        plan = LaunchPlan(
            argv=[
                *self._chain(fstab, cwd, pwd_arg(ctx.env), ids),
                *self._loader_prefix(ctx.env, command),
                command,
                *cfg.args,
            ],
            cwd=cwd,
            env=without_loader(ctx.env),
            state={"user": user, "uid": uid, "gid": gid, "fstab": fstab},
        )
        # exec holds a task to its reservation unless it names a higher limit.
        try:
            self._limit(plan, self._cgroups, ctx, ctx.resources.memory_max or ctx.resources.memory)
        except BaseException:
            rootfs.remove_quietly(fstab)
            raise
        return plan

    def _command(self, command: str, env: dict[str, str], cwd: str, own: list[str]) -> str:
        """``command`` resolved as the task will see it: only what its root shows counts."""
        if "/" in command:
            path = resolve_command(command, env, cwd)
            if not self.root.visible(path, own):
                raise DriverError(
                    f"command {command!r} is outside the task's root filesystem "
                    "(the agent's --exec-chroot and the task's directories)"
                )
            return path
        search = env.get("PATH", os.defpath)
        for d in search.split(os.pathsep):
            candidate = os.path.normpath(os.path.join(cwd, d, command))
            if (
                os.path.isfile(candidate)
                and os.access(candidate, os.X_OK)
                and self.root.visible(candidate, own)
            ):
                return candidate
        raise DriverError(
            f"command {command!r} not found in PATH ({search}) within the task's root filesystem"
        )

    def owns_task_files(self) -> bool:
        return True

    def task_owner(self, ctx: TaskContext) -> TaskOwner:
        """The task's files belong to the user it runs as (its allocation's uid, or the
        named user with its own gid)."""
        _name, uid, gid, _groups = self.identity(ctx)
        return TaskOwner(uid, gid)

    def identity(self, ctx: TaskContext) -> tuple[str, int, int, list[int]]:
        """(name, uid, gid, supplementary groups) the task runs as; DriverError when refused.

        No user: the allocation's own uid (and gid).  A named user: it, its groups and the
        allocation's gid (to share the allocation's directory)."""
        alloc_gid = self.options.uids.lease(ctx.alloc_id)
        if ctx.user is None or not ctx.user.strip():
            return str(alloc_gid), alloc_gid, alloc_gid, []
        name = ctx.user.strip()
        self._refuse(name)
        try:
            pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, OverflowError):
            raise DriverError(f"user {name!r} does not exist on this node") from None
        self._refuse(pw.pw_name, pw.pw_uid)
        groups = sorted({*os.getgrouplist(pw.pw_name, pw.pw_gid), alloc_gid})
        return pw.pw_name, pw.pw_uid, pw.pw_gid, groups

    def _refuse(self, name: str, uid: int | None = None) -> None:
        key = str(int(name)) if name.isdigit() else name
        if key in self.refused or uid == 0 or (uid is not None and str(uid) in self.refused):
            raise DriverError(
                f"exec: user {name!r} is refused on this node (uid 0 and the agent's "
                "--exec-user-denylist may not run tasks)",
                recoverable=False,
            )

    _exec_session_inside = True

    def _exec_env(self, ctx: TaskContext) -> dict[str, str]:
        """The task's environment less what steers the dynamic loader: the programs that
        enter the task (``sh``, ``nsenter``, ``setsid``, ``setpriv``) run as root, and a
        job's ``LD_PRELOAD`` (``${PODIUM_TASK_DIR}/x.so``, a file its task wrote) must not
        load into them; ``env`` gives them back to the command, past ``setpriv``."""
        return without_loader(ctx.env)

    def _loader_prefix(self, env: dict[str, str], program: str) -> list[str]:
        """``env NAME=VALUE...`` for the job's loader variables, run after ``setpriv`` has
        dropped to the task's user (nothing when it has none: the usual chain)."""
        restore = [f"{k}={v}" for k, v in env.items() if loader_variable(k)]
        if not restore:
            return []
        if "=" in program:  # env would take it for one more variable
            raise DriverError(
                f"command {program!r} contains '=', which cannot run with the job's "
                f"loader variables ({', '.join(sorted(k for k in env if loader_variable(k)))})"
            )
        return [self._env, *restore]

    async def _exec_argv(
        self, watch: _Watch, ctx: TaskContext, command: list[str], tty: bool
    ) -> list[str]:
        """``command`` in the task's pid and mount namespaces, under its root and working
        directory (those of the namespace's init), as its user with no new privileges:
        ``nsenter`` (forks into the pid namespace), then the task's own ``setpriv``.

        With a TTY, ``setsid --ctty`` runs inside the namespace (from the task's root, as
        ``setpriv`` does): a shell's job control then finds its terminal's process group
        in its own pid namespace (made outside, it is invisible there: "Cannot set tty
        process group").  The task's root has no /dev/pts, so ``tty`` there says "not a
        tty"; the terminal itself (size, modes, ^C) works."""
        _user, uid, gid, groups = self.identity(ctx)
        init = namespace_init(cgroups.pids(list(watch.state.get("cgroups") or [])))
        if init is None:
            raise DriverError(
                f"task {ctx.task_name} of allocation {ctx.alloc_id} has no running namespace"
            )
        ids = [f"--reuid={uid}", f"--regid={gid}"]
        ids.append("--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups")
        return [
            self._nsenter,
            f"--target={init}",
            "--pid",
            "--mount",
            "--root",
            "--wd",
            "--",
            *([self._setsid, "--ctty"] if tty else []),
            self._setpriv,
            *ids,
            "--no-new-privs",
            "--",
            *self._loader_prefix(ctx.env, command[0]),
            *command,
        ]

    def _abandon(self, state: dict[str, Any]) -> None:
        rootfs.remove_quietly(state.get("fstab"))
        super()._abandon(state)

    async def _release(self, state: dict[str, Any]) -> None:
        rootfs.remove_quietly(state.get("fstab"))
        await super()._release(state)

    def _signalable(self, state: dict[str, Any]) -> bool:
        """The task exists once the cgroup holds unshare, the namespace's init and it.

        Earlier, a SIGTERM would reach only unshare (which blocks it while it
        waits) and init (which the kernel shields): it would be lost.  (One that
        reaches a set-up step, mount or pivot_root, kills it and the task never
        starts: the stop still ends it.)
        """
        dirs = list(state.get("cgroups") or [])
        return super()._signalable(state) and len(cgroups.pids(dirs)) >= 3

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """Deliver ``signal`` to the task's processes inside its PID namespace.

        Not to the process group, as raw_exec does: ``unshare`` is in it, and a signal it
        neither blocks nor handles (SIGUSR1, SIGHUP) kills it, which reads as the task's
        death (a template's ``change_mode: signal`` or ``podium alloc signal`` ended the
        task).  Every process of the task's cgroup that lives in the namespace gets it,
        except its init (which the kernel shields anyway): the task and its children, as
        a group signal reaches them under raw_exec."""
        dirs = list(self._watch_for(handle).state.get("cgroups") or [])
        if not dirs:
            await super().signal(handle, signal)
            return
        try:
            sig = parse_signal(signal)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc
        watch = self._watch_for(handle)
        if watch.future.done() or await self._task_pid(watch, ready=True) is None:
            raise DriverError(f"task {handle.task_id} is not running")
        sent = False
        for pid in cgroups.pids(dirs):
            nspids = _nspids(pid)
            if len(nspids) < 2 or nspids[-1] == 1:
                continue  # unshare (the host's namespace only), or the namespace's init
            try:
                os.kill(pid, sig)
                sent = True
            except (ProcessLookupError, PermissionError):
                continue
        if not sent:
            raise DriverError(f"could not send {sig.name} to task {handle.task_id}")


def _nspids(pid: int) -> list[int]:
    """``NSpid`` of ``/proc/<pid>/status``: the process's pid in each PID namespace it is
    in, the host's first (empty when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


LOADER_VARIABLES = frozenset(
    {
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "MALLOC_TRACE",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TZDIR",
    }
)
"""glibc's list of variables it ignores for setuid programs (``unsecure-envvars.h``), less
TMPDIR, plus every ``LD_*``: what could load a job's code into a root process."""


def loader_variable(name: str) -> bool:
    return name.startswith("LD_") or name in LOADER_VARIABLES


def without_loader(env: dict[str, str]) -> dict[str, str]:
    """``env`` for the chain's root programs (the shim, ``unshare``, the namespace's init,
    ``mount``, ``setpriv``; ``nsenter`` for ``alloc exec``): none of the job's loader
    variables, which would load a library of the job's choosing into a root process."""
    return {k: v for k, v in env.items() if not loader_variable(k)}


def namespace_init(pids: set[int]) -> int | None:
    """Of a task's processes, the pid (as the agent sees it) of its pid namespace's init:
    the one that is pid 1 one namespace down (``NSpid:`` in /proc/PID/status)."""
    for pid in sorted(pids):
        nspids = _nspids(pid)
        if len(nspids) == 2 and nspids[1] == 1:
            return pid
    return None


def refused_users(denylist: tuple[str, ...]) -> set[str]:
    """The denylist's names, their uids, "0" and every account whose uid is 0."""
    out = {"0", "root"}
    for name in denylist:
        name = name.strip()
        if not name:
            continue
        out.add(str(int(name)) if name.isdigit() else name)
        with contextlib.suppress(KeyError):
            out.add(str(pwd.getpwnam(name).pw_uid))
    for pw in pwd.getpwall():
        if pw.pw_uid == 0:
            out.add(pw.pw_name)
    return out


def give_alloc_dirs(alloc_dir: str, gid: int) -> None:
    """The allocation's shared dir: readable by its tasks only (root:G 0750); ``data``
    under it writable by them (0770).  Root keeps it, so a task cannot swap the ``logs``
    dir the agent writes its output through."""
    try:
        st = os.lstat(alloc_dir)
        if st.st_uid == 0 and (st.st_gid, st.st_mode & 0o7777) != (gid, 0o750):
            os.chown(alloc_dir, 0, gid, follow_symlinks=False)
            os.chmod(alloc_dir, 0o750)
        data = os.path.join(alloc_dir, "data")
        st = os.lstat(data)
        if st.st_uid == 0 and (st.st_gid, st.st_mode & 0o7777) != (gid, 0o770):
            os.chown(data, 0, gid, follow_symlinks=False)
            os.chmod(data, 0o770)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DriverError(f"cannot hand the allocation dir to gid {gid}: {exc}") from exc


def give_task_dir(task_dir: str, uid: int, gid: int) -> None:
    """Let the task user, alone, use its task dir (0700; symlinks are not followed).

    The shim's ``.podium`` state dir stays root's, so the task cannot rewrite
    the files it reads back (see README for what a task can still do).
    """
    try:
        os.chown(task_dir, uid, gid, follow_symlinks=False)
        os.chmod(task_dir, 0o700)
        for top, dirnames, filenames in os.walk(task_dir):
            if top == task_dir and STATE_SUBDIR in dirnames:
                dirnames.remove(STATE_SUBDIR)
            for entry in (*dirnames, *filenames):
                os.chown(os.path.join(top, entry), uid, gid, follow_symlinks=False)
    except OSError as exc:
        raise DriverError(f"cannot hand the task dir to uid {uid}: {exc}") from exc
