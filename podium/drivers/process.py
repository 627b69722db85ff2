"""Supervising real processes without a helper process of our own per task.

Each task runs under ``shim.sh`` (a dash process of ~0.1-0.4 MB PSS) that
records the task's pid and exit status in files under ``<task_dir>/.podium/``.
The shim leads the session and process group the task runs in: a signal for
the task goes to that group, and the shim traps (and outlives) every one it
can, to record the exit.
The agent holds nothing but a pidfd on the shim: the shim outlives an agent
that is ``kill -9``-ed, and a new agent re-attaches from the
:class:`TaskHandle` state (pids, their start times, file paths).  ``README.md``
in this package has the whole design and the numbers behind it.

:class:`ProcessDriver` is the part ``raw_exec`` and ``exec`` share; a subclass
says *what* to run (:meth:`ProcessDriver._plan`) and may hook in isolation
specifics (OOM detection, cgroup clean-up).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGKILL
from typing import Any

import psutil

from podium.drivers import cgroups
from podium.drivers.base import (
    Driver,
    ExecSession,
    ExitResult,
    Orphan,
    TaskContext,
    TaskHandle,
    TaskStats,
    allocs_roots,
)
from podium.drivers.commands import exec_config, pwd_arg, signal_reset_prefix, task_cwd
from podium.drivers.execsession import ProcessExecSession, cgroup_join
from podium.drivers.procfs import (
    boottime_ticks,
    now_boottime_ns,
    parse_signal,
    parse_stat,
    raise_nofile_limit,
    read_boot_id,
    read_cmdline,
    read_stat,
    start_time,
)
from podium.errors import DriverError

log = logging.getLogger(__name__)

SHIM_PATH = str(Path(__file__).with_name("shim.sh"))
SH = "/bin/sh"
STATE_SUBDIR = ".podium"
SHIM_VAR = "__podium_shim_stat"
"""The one variable the shim sets (and unsets) before the task starts: reserved."""
SETUP_FAILED = 125
"""The shim's exit status when it could not set the task up (cgroup join, pid file)."""

LOST_WHILE_DOWN = "task exited while the agent was down; exit status unknown"
SHIM_DIED = "the task's shim died without recording an exit status; exit status unknown"

PID_WAIT = 5.0
"""How long ``start`` and ``stop`` wait for a shim to report its task."""
KILL_WAIT = 10.0
"""How long ``stop`` waits for the exit after SIGKILL before giving up."""
POLL_INTERVAL = 0.5
"""How often a shim is looked at when no pidfd could be opened for it."""
RELEASE_WAIT = 5.0
"""How long ``destroy`` keeps trying to remove a cgroup whose processes are exiting."""
STATS_TTL = 0.5
"""Age up to which one scan of /proc serves every task's ``stats`` call."""
ORPHAN_GRACE = 5.0
"""How long an orphaned task gets between SIGTERM and SIGKILL (its job's kill_timeout
is lost with the agent's state)."""

SHIM_TRAPS = frozenset(
    {
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGABRT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGPIPE,
        signal.SIGALRM,
        signal.SIGTERM,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGXCPU,
        signal.SIGXFSZ,
        signal.SIGVTALRM,
        signal.SIGPROF,
        signal.SIGIO,
        signal.SIGPWR,
        signal.SIGSYS,
    }
)
"""The signals ``shim.sh`` traps (its first line names the same): sent to the task's
group, they reach the task and leave the shim waiting to record its exit."""
GROUP_SIGNALS = SHIM_TRAPS | {
    signal.SIGCHLD,
    signal.SIGCONT,
    signal.SIGURG,
    signal.SIGWINCH,
    signal.SIGSTOP,  # stops the shim too; a SIGKILL for the task comes with a SIGCONT
}
"""What is sent to the whole group.  Anything else (SIGKILL, the real-time signals, the
fault signals a shell must not trap) would kill the shim: it goes to the task alone."""


@dataclass
class LaunchPlan:
    """What a subclass wants run; the shim adds nothing to ``argv`` or ``env``."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    cgroup_procs: list[str] = field(default_factory=list)
    """``cgroup.procs`` files the task joins before it execs (the shim writes them)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Extra keys for the handle's state (e.g. cgroup paths)."""


class _Watch:
    """One supervised shim: its pidfd, and the futures its report and exit resolve."""

    def __init__(self, handle: TaskHandle, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = handle
        self.loop = loop
        self.future: asyncio.Future[ExitResult] = loop.create_future()
        self.reported: asyncio.Future[None] = loop.create_future()
        """Resolved when a just-started shim has reported its task (or could not)."""
        self.pidfd: int | None = None
        self.report_fd: int | None = None
        self.report_timer: asyncio.TimerHandle | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.cpu_sample: tuple[float, float, float] | None = None
        """(wall time of the process scan, CPU seconds then, CPU percent computed then)."""

    @property
    def state(self) -> dict[str, Any]:
        return self.handle.state

    def same_shim(self, handle: TaskHandle) -> bool:
        a, b = self.state, handle.state
        return bool(
            a.get("shim_pid") == b.get("shim_pid") and a.get("shim_start") == b.get("shim_start")
        )

    def close_report(self) -> None:
        if self.report_timer is not None:
            self.report_timer.cancel()
            self.report_timer = None
        if self.report_fd is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.report_fd)
            with contextlib.suppress(OSError):
                os.close(self.report_fd)
            self.report_fd = None
        if not self.reported.done():
            self.reported.set_result(None)

    def close(self) -> None:
        self.close_report()
        if self.pidfd is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.pidfd)
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


_REQUIRED = ("shim_pid", "shim_start", "state_dir", "status_file", "pid_file")


class ProcessDriver(Driver):
    """Start tasks under the shim; watch, stop, re-attach to and measure them."""

    def __init__(self) -> None:
        self._nofile_soft = raise_nofile_limit()
        self._boot_id = read_boot_id()
        self._watches: dict[str, _Watch] = {}
        self._table: dict[int, tuple[int, float, int]] = {}
        self._table_mono = -1e9
        self._table_at = 0.0

    # ----------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _plan(self, ctx: TaskContext) -> LaunchPlan:
        """What to run for ``ctx``; raises DriverError when it cannot be run."""

    # A task with limits (every exec task; a raw_exec task that names memory_max or
    # cpu_max) has cgroups, listed in its handle's state: what follows acts on those.
    @staticmethod
    def _limit(
        plan: LaunchPlan, layout: cgroups.Cgroups, ctx: TaskContext, memory_mb: int | None
    ) -> None:
        """Give ``plan`` a cgroup of the task's own: ``memory_mb`` (None: no memory
        limit), the task's cpu weight and its ``cpu_max``; the shim joins it."""
        res = ctx.resources
        try:
            dirs = layout.create(
                f"{ctx.alloc_id}-{ctx.task_name}", memory_mb, res.cpu, cpu_max_mhz=res.cpu_max
            )
        except OSError as exc:
            raise DriverError(f"cannot create the task's cgroup: {exc}", recoverable=True) from exc
        plan.cgroup_procs = [os.path.join(d, "cgroup.procs") for d in dirs]
        plan.state.update(
            cgroups=dirs,
            oom_baseline=cgroups.oom_kills(dirs) or 0,
            cgroup_version=layout.version,
        )

    def _abandon(self, state: dict[str, Any]) -> None:
        """Undo what ``_plan`` set up, when spawning the shim failed."""
        cgroups.remove(list(state.get("cgroups") or []))

    def _finish(self, state: dict[str, Any], result: ExitResult) -> ExitResult:
        """Adjust an exit result: the OOM verdict, read while the cgroup still exists
        (``destroy`` removes it)."""
        dirs = list(state.get("cgroups") or [])
        if not dirs or result.exit_code is None:
            return result
        kills = cgroups.oom_kills(dirs)
        if kills is not None:
            result.oom_killed = kills > int(state.get("oom_baseline") or 0)
        else:  # old v1 kernels: the limit was hit and something died of SIGKILL
            result.oom_killed = result.signal == 9 and cgroups.memory_failcnt(dirs) > 0
        return result

    def _kill_all(self, state: dict[str, Any]) -> None:
        """SIGKILL every process the task left, beyond its process group."""
        cgroups.kill(list(state.get("cgroups") or []))

    def _signalable(self, state: dict[str, Any]) -> bool:
        """Whether a signal to the task's group now reaches the task itself.

        The task is in the shim's group from its fork on, and the shim reports
        it before it ``exec``s: once the pid is known it is signalable.  (A task
        of an earlier agent's shim became its own group's leader only when its
        ``setsid`` ran, just after the report.)
        """
        pid = state.get("task_pid")
        proc = read_stat(int(pid)) if pid else None
        return proc is not None and proc.pgrp == group_of(state)

    async def _release(self, state: dict[str, Any]) -> None:
        """Free node resources (cgroups) once the task is dead."""
        dirs = list(state.get("cgroups") or [])
        deadline = time.monotonic() + RELEASE_WAIT
        while dirs:
            cgroups.kill(dirs)
            if cgroups.remove(dirs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)

    def _member_pids(self, state: dict[str, Any], root: int) -> list[int]:
        """The pids whose usage ``stats`` sums: the task's process tree and its cgroups'."""
        children: dict[int, list[int]] = {}
        for pid, (ppid, _cpu, _rss) in self._table.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid in self._table:
                out.append(pid)
                todo.extend(children.get(pid, ()))
        dirs = list(state.get("cgroups") or [])
        return sorted(set(out) | cgroups.pids(dirs)) if dirs else out

    # ----------------------------------------------------------- Driver API
    async def start(self, ctx: TaskContext) -> TaskHandle:
        loop = asyncio.get_running_loop()
        if SHIM_VAR in ctx.env:
            raise DriverError(f"environment variable {SHIM_VAR} is reserved for Podium's shim")
        plan = self._plan(ctx)
        state_dir = os.path.join(ctx.task_dir, STATE_SUBDIR)
        state: dict[str, Any] = {
            "state_dir": state_dir,
            "pid_file": os.path.join(state_dir, "pid"),
            "status_file": os.path.join(state_dir, "status"),
            **plan.state,
        }
        try:
            popen, started, report_fd = self._spawn(ctx, plan, state_dir)
        except BaseException:
            self._abandon(state)
            raise
        try:
            pidfd: int | None = os.pidfd_open(popen.pid)  # our unreaped child: no pid reuse
        except OSError:  # out of fds (or Linux < 5.3): poll instead
            pidfd = None
        state.update(
            shim_pid=popen.pid,
            shim_start=started if started is not None else start_time(popen.pid),
            pgid=popen.pid,  # the shim leads the task's session and group
            boot_id=self._boot_id,
            task_pid=None,
            task_start=None,
        )
        handle = TaskHandle(
            driver=self.name, task_id=ctx.task_id, started_at=time.time(), state=state
        )
        watch = _Watch(handle, loop)
        watch.popen = popen
        self._watches[handle.task_id] = watch
        self._arm(watch, pidfd)
        self._listen(watch, report_fd)
        # ~1 ms: the shim's start-up.  Concurrent starts overlap these waits.
        await asyncio.shield(watch.reported)
        return handle

    def _spawn(
        self, ctx: TaskContext, plan: LaunchPlan, state_dir: str
    ) -> tuple[subprocess.Popen[bytes], int | None, int]:
        """Spawn the shim: (its Popen, its start time if the clock pins it down, report fd)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            try:
                os.mkdir(state_dir, 0o755)
            except FileExistsError:  # the task ran here before
                kill_previous(state_dir)
                for name in ("pid", "status"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(state_dir, name))
            out = os.open(ctx.stdout_path, flags, 0o644)
        except OSError as exc:
            raise DriverError(f"cannot prepare the task's files: {exc}", recoverable=True) from exc
        try:
            err = os.open(ctx.stderr_path, flags, 0o644)
        except OSError as exc:
            os.close(out)
            raise DriverError(f"cannot open {ctx.stderr_path}: {exc}", recoverable=True) from exc
        try:
            report_fd, report_w = os.pipe()
        except OSError as exc:
            os.close(out)
            os.close(err)
            raise DriverError(f"cannot start the task's shim: {exc}", recoverable=True) from exc
        argv = [
            # Before the shim, not before the task: by the time the shim reports the task
            # (and a stop may signal it) nothing in the group ignores what the agent does.
            *signal_reset_prefix(),
            SH,
            SHIM_PATH,
            str(self._nofile_soft) if self._nofile_soft > 0 else "-",
            pwd_arg(plan.env),
            *plan.cgroup_procs,
            "--",
            state_dir,
            *plan.argv,
        ]
        try:
            before = now_boottime_ns()
            # No preexec_fn, so CPython can vfork: spawning stays cheap.
            popen = subprocess.Popen(
                argv,
                stdin=report_w,
                stdout=out,
                stderr=err,
                cwd=plan.cwd,
                env=plan.env,
                close_fds=True,
                start_new_session=True,
            )
            after = now_boottime_ns()
        except OSError as exc:
            os.close(report_fd)
            raise DriverError(f"cannot start the task's shim: {exc}", recoverable=True) from exc
        finally:
            os.close(out)
            os.close(err)
            os.close(report_w)
        # The kernel stamps a new process with CLOCK_BOOTTIME in the unit of
        # /proc/<pid>/stat field 22.  When the spawn fell within one tick, that
        # tick is the start time; reading /proc this early would cost ~0.2 ms
        # (it waits for the child's exec), as much as the rest of our side of a start.
        tick = boottime_ticks(before)
        return popen, tick if tick == boottime_ticks(after) else None, report_fd

    async def wait(self, handle: TaskHandle) -> ExitResult:
        watch = self._watch_for(handle)
        return await asyncio.shield(watch.future)

    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        """The shim's exit future itself, the one ``wait`` shields: no task per running
        task (callers only remove their callbacks from it, see :meth:`Driver.exit_future`)."""
        return self._watch_for(handle).future

    async def recover(self, handle: TaskHandle) -> bool:
        watch = self._watch_for(handle)
        if watch.handle is not handle:
            handle.state.update(watch.state)
        handle.pid = self._resolve_task_pid(watch) or handle.pid
        return not watch.future.done()

    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        try:
            sig = parse_signal(signal)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc
        watch = self._watch_for(handle)
        st = watch.state
        if not watch.future.done():
            pid = await self._task_pid(watch, ready=True)
            if pid is not None:
                self._signal_group(st, sig)
            elif not watch.future.done():
                self._kill_shim_tree(st)  # it never reported its task: kill what it started
            if not await self._exited(watch, timeout):
                self._signal_group(st, SIGKILL)
                self._kill_all(st)
                if not await self._exited(watch, KILL_WAIT):
                    raise DriverError(
                        f"task {handle.task_id} did not exit {KILL_WAIT:.0f}s after SIGKILL",
                        recoverable=True,
                    )
        # Stragglers: members of the task's group (or cgroup) that outlived it.
        self._kill_group(st)
        self._kill_all(st)

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """Send ``signal`` to the task's process group (as ``stop`` does, without the kill)."""
        try:
            sig = parse_signal(signal)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc
        watch = self._watch_for(handle)
        if watch.future.done():
            raise DriverError(f"task {handle.task_id} is not running")
        pid = await self._task_pid(watch, ready=True)
        if pid is None or not self._signal_group(watch.state, sig):
            raise DriverError(f"could not send {sig.name} to task {handle.task_id}")

    async def stats(self, handle: TaskHandle) -> TaskStats:
        watch = self._watch_for(handle)
        pid = self._resolve_task_pid(watch)
        if pid is None or watch.future.done():
            return TaskStats(timestamp=time.time())
        if time.monotonic() - self._table_mono > STATS_TTL:
            self._table = scan_processes()
            self._table_mono, self._table_at = time.monotonic(), time.time()
        pids = [p for p in self._member_pids(watch.state, pid) if p in self._table]
        cpu = sum(self._table[p][1] for p in pids)
        rss = sum(self._table[p][2] for p in pids)
        at = self._table_at
        since, before, percent = watch.cpu_sample or (handle.started_at or at, 0.0, 0.0)
        if at > since:  # a newer scan than this task's last sample
            percent = max(0.0, (cpu - before) / (at - since) * 100.0)
            watch.cpu_sample = (at, cpu, percent)
        # A task with a cgroup: what the kernel charges it, and its limit (its processes'
        # RSS misses what the kernel charges the cgroup for them: page cache, kernel memory)
        dirs = list(watch.state.get("cgroups") or [])
        charged = cgroups.memory_usage(dirs) if dirs else None
        return TaskStats(
            cpu_percent=percent,
            memory_rss_bytes=charged if charged is not None else rss,
            timestamp=at,
            memory_limit_bytes=cgroups.memory_limit(dirs) if dirs else None,
            pids=len(pids),
        )

    async def destroy(self, handle: TaskHandle) -> None:
        watch = self._watch_for(handle)
        if not watch.future.done():
            await self.stop(handle, "SIGKILL", 0)
        else:
            self._kill_group(watch.state)
            self._kill_all(watch.state)
        await self._release(watch.state)
        shutil.rmtree(watch.state["state_dir"], ignore_errors=True)
        watch.close()
        if self._watches.get(handle.task_id) is watch:
            del self._watches[handle.task_id]

    def stop_unrecorded(self, task_dir: str) -> None:
        """SIGKILL a shim (and its task) an earlier agent started in ``task_dir`` without
        recording its handle: its pid file under the task's state dir names it."""
        kill_previous(f"{task_dir}/{STATE_SUBDIR}")

    async def reap_orphans(
        self, data_dir: str, owned: Collection[str], grace: float = ORPHAN_GRACE
    ) -> list[Orphan]:
        """Stop the shims (and their tasks, and cgroups) an agent on ``data_dir`` started
        for allocations not in ``owned``: found in /proc by their command line (``shim.sh``,
        a state dir under ``<data_dir>/allocs/``), so they are found with the data dir
        itself deleted.  SIGTERM to each task's group, SIGKILL after ``grace``.  Then the
        task processes no shim leads any more (:meth:`_reap_stray_tasks`)."""
        shims = await asyncio.to_thread(find_orphan_shims, data_dir, set(owned))
        for shim in shims:
            _signal_leader(shim.pid, shim.start, signal.SIGTERM, group=True)
        deadline = time.monotonic() + grace
        while any(shim.alive() for shim in shims) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        out = []
        for shim in shims:
            how = "SIGTERM"
            if shim.alive():
                how = "SIGKILL"
                _signal_leader(shim.pid, shim.start, SIGKILL, group=True)
            cgroups.kill(shim.cgroups)
            deadline = time.monotonic() + RELEASE_WAIT
            while shim.cgroups and not cgroups.remove(shim.cgroups):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            out.append(
                Orphan(shim.driver, shim.alloc_id, shim.task, f"shim pid {shim.pid} ({how})")
            )
        # a task killed with its shim can still be in /proc for a moment: stopped again
        # below if so (harmless), but named once, by its shim
        named = {(o.alloc_id, o.task) for o in out}
        strays = await self._reap_stray_tasks(data_dir, owned, grace)
        return out + [o for o in strays if (o.alloc_id, o.task) not in named]

    async def _reap_stray_tasks(
        self, data_dir: str, owned: Collection[str], grace: float
    ) -> list[Orphan]:
        """Task processes of unowned allocations that no shim leads any more: their shim
        died too, or they left its process group (a daemon that called ``setsid``).  Found
        by the ``PODIUM_TASK_DIR`` the agent gives every task; SIGTERM, SIGKILL after
        ``grace``."""
        strays = await asyncio.to_thread(find_stray_tasks, data_dir, set(owned))
        if not strays:
            return []
        for stray in strays:
            _signal_leader(stray.pid, stray.start, signal.SIGTERM, group=False)
        deadline = time.monotonic() + grace
        while any(t.alive() for t in strays) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        by_task: dict[tuple[str, str], list[str]] = {}
        for stray in strays:
            how = "SIGTERM"
            if stray.alive():
                how = "SIGKILL"
                _signal_leader(stray.pid, stray.start, SIGKILL, group=False)
            by_task.setdefault((stray.alloc_id, stray.task), []).append(f"{stray.pid} ({how})")
        return [
            Orphan(self.name, alloc, task, f"task pid {', '.join(pids)} without its shim")
            for (alloc, task), pids in sorted(by_task.items())
        ]

    # ----------------------------------------------------------- public helpers
    async def task_pid(self, handle: TaskHandle, timeout: float = PID_WAIT) -> int | None:
        """The task's pid, once it leads its process group (up to ``timeout``; None: it exited)."""
        return await self._task_pid(self._watch_for(handle), timeout, ready=True)

    async def exec(
        self, handle: TaskHandle, ctx: TaskContext, command: list[str], tty: bool
    ) -> ExecSession:
        """``command`` as the task runs: its directory and environment, its cgroups (and,
        for ``exec``, its namespaces, root and user: :meth:`_exec_argv`)."""
        watch = self._watch_for(handle)
        if watch.future.done():
            raise DriverError(f"task {ctx.task_name} of allocation {ctx.alloc_id} is not running")
        cwd = task_cwd(exec_config(ctx), ctx)
        argv = await self._exec_argv(watch, ctx, command, tty)
        return ProcessExecSession.spawn(
            cgroup_join(list(watch.state.get("cgroups") or []), argv),
            cwd=cwd,
            env=self._exec_env(ctx),
            tty=tty,
            session_inside=self._exec_session_inside,
        )

    def _exec_env(self, ctx: TaskContext) -> dict[str, str]:
        """The environment ``alloc exec`` runs with: the task's."""
        return dict(ctx.env)

    _exec_session_inside = False
    """Whether :meth:`_exec_argv` starts the terminal's session itself (``exec``)."""

    async def _exec_argv(
        self, watch: _Watch, ctx: TaskContext, command: list[str], tty: bool
    ) -> list[str]:
        """What runs ``command`` in the task's context (``raw_exec``: the command itself)."""
        return command

    # ----------------------------------------------------------- watching
    def _watch_for(self, handle: TaskHandle) -> _Watch:
        watch = self._watches.get(handle.task_id)
        if watch is not None and watch.same_shim(handle):
            return watch
        watch = self._attach(handle)
        self._watches[handle.task_id] = watch
        return watch

    def _attach(self, handle: TaskHandle) -> _Watch:
        """Watch a shim that an earlier agent (or driver instance) started."""
        if handle.driver != self.name:
            raise DriverError(f"a {handle.driver!r} task handle was given to {self.name!r}")
        st = handle.state
        missing = [k for k in _REQUIRED if k not in st]
        if missing:
            raise DriverError(f"task handle lacks {', '.join(missing)}; cannot re-attach")
        watch = _Watch(handle, asyncio.get_running_loop())
        watch.reported.set_result(None)  # the pid file says what the shim reported
        if st.get("boot_id") and self._boot_id and st["boot_id"] != self._boot_id:
            self._finished(watch, recovered=True)  # the node rebooted since
            return watch
        try:
            pidfd: int | None = os.pidfd_open(int(st["shim_pid"]))
        except ProcessLookupError:
            self._finished(watch, recovered=True)
            return watch
        except OSError:  # out of fds (or Linux < 5.3): poll instead
            pidfd = None
        # The pidfd pins the process, so these checks cannot race a pid reuse.
        if not is_our_shim(st):
            if pidfd is not None:
                os.close(pidfd)
            self._finished(watch, recovered=True)
            return watch
        self._arm(watch, pidfd)
        return watch

    def _arm(self, watch: _Watch, pidfd: int | None) -> None:
        if pidfd is not None:
            watch.pidfd = pidfd
            watch.loop.add_reader(pidfd, self._on_shim_exit, watch)
        else:
            watch.loop.call_later(POLL_INTERVAL, self._poll, watch)

    def _poll(self, watch: _Watch) -> None:
        """The fallback without a pidfd: look at the shim every POLL_INTERVAL."""
        if watch.future.done():
            return
        if watch.popen is not None:
            gone = watch.popen.poll() is not None
        else:
            gone = not is_our_shim(watch.state)  # a zombie has no cmdline: gone too
        if gone:
            self._on_shim_exit(watch)
        else:
            watch.loop.call_later(POLL_INTERVAL, self._poll, watch)

    def _on_shim_exit(self, watch: _Watch) -> None:
        if watch.report_fd is not None:
            self._on_report(watch)  # a report written just before the exit
        watch.close()
        if watch.popen is not None:
            watch.popen.poll()  # reap our child (no zombie); Popen learns it is done
            watch.popen = None
        else:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(int(watch.state["shim_pid"]), os.WNOHANG)
        self._finished(watch, recovered=False)

    def _finished(self, watch: _Watch, *, recovered: bool) -> None:
        if watch.future.done():
            return
        result = read_exit(watch.state, lost=LOST_WHILE_DOWN if recovered else SHIM_DIED)
        try:
            result = self._finish(watch.state, result)
        except Exception as exc:  # a failed OOM check must not lose the exit
            result.error = result.error or f"cannot inspect the task after its exit: {exc}"
        watch.future.set_result(result)

    # ----------------------------------------------------------- the task's pid
    def _listen(self, watch: _Watch, report_fd: int) -> None:
        """Take the shim's report from the pipe, so ``start`` needn't poll for the pid file."""
        watch.report_fd = report_fd
        watch.loop.add_reader(report_fd, self._on_report, watch)

        def give_up() -> None:  # a very slow shim: carry on, the pid is filled in later
            watch.report_timer = None
            if not watch.reported.done():
                watch.reported.set_result(None)

        watch.report_timer = watch.loop.call_later(PID_WAIT, give_up)

    def _on_report(self, watch: _Watch) -> None:
        fd = watch.report_fd
        assert fd is not None
        try:
            line = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            line = b""
        if line:  # the pipe comes from our own spawn: the line needs no further check
            with contextlib.suppress(ValueError):
                pid, proc = parse_stat(line.strip())
                if proc.ppid == int(watch.state["shim_pid"]):
                    self._record_task(watch, pid, proc.start_time)
        watch.close_report()  # EOF (the shim is gone) or done

    def _record_task(self, watch: _Watch, pid: int, started: int) -> None:
        watch.state["task_pid"], watch.state["task_start"] = pid, started
        watch.handle.pid = pid

    def _resolve_task_pid(self, watch: _Watch) -> int | None:
        """The task's pid: known, or read from the pid file and checked against /proc."""
        st = watch.state
        if st.get("task_pid"):
            return int(st["task_pid"])
        try:
            pid, recorded = parse_stat(Path(st["pid_file"]).read_bytes().strip())
        except (OSError, ValueError):
            return None  # not written yet (or empty: being written)
        live = read_stat(pid)
        # The task must be alive, the shim's child, and the process the line describes:
        # a stale or forged pid file must not aim killpg elsewhere.
        if (
            live is None
            or live.ppid != int(st["shim_pid"])
            or live.start_time != recorded.start_time
        ):
            return None
        self._record_task(watch, pid, recorded.start_time)
        return pid

    async def _task_pid(
        self, watch: _Watch, timeout: float = PID_WAIT, *, ready: bool = False
    ) -> int | None:
        """Wait for the task's pid (and, with ``ready``, for it to be signalable)."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            pid = self._resolve_task_pid(watch)
            if pid is not None and (not ready or self._signalable(watch.state)):
                return pid
            if watch.future.done() or time.monotonic() >= deadline:
                return pid
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # ----------------------------------------------------------- signals
    @staticmethod
    async def _exited(watch: _Watch, timeout: float) -> bool:
        if not watch.future.done() and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.future), timeout)
        return watch.future.done()

    @staticmethod
    def _signal_group(st: dict[str, Any], sig: int) -> bool:
        """Signal the task, its shim still waiting: ``sig`` to the task's group when the
        shim outlives it (:data:`GROUP_SIGNALS`), else to the task alone (SIGKILL with a
        SIGCONT for the group, so a stopped shim can record the death)."""
        pid, started = st.get("task_pid"), st.get("task_start")
        if not pid:
            return False
        if "pgid" not in st:  # an earlier agent's task, leader of its own group
            return _signal_leader(int(pid), started, sig, group=True)
        if sig in GROUP_SIGNALS:
            return _signal_leader(int(st["pgid"]), st.get("shim_start"), sig, group=True)
        sent = _signal_leader(int(pid), started, sig, group=False)
        if sig == SIGKILL:
            _signal_leader(int(st["pgid"]), st.get("shim_start"), signal.SIGCONT, group=True)
        return sent

    @staticmethod
    def _kill_group(st: dict[str, Any]) -> bool:
        """SIGKILL the task's whole group: for stragglers, once the shim has exited."""
        leader = group_of(st)
        if not leader:
            return False
        started = st.get("task_start") if "pgid" not in st else st.get("shim_start")
        return _signal_leader(int(leader), started, SIGKILL, group=True)

    @staticmethod
    def _kill_shim_tree(st: dict[str, Any]) -> None:
        """SIGKILL the shim's children (not the shim): for a task that never reported."""
        shim = int(st["shim_pid"])
        if not is_our_shim(st):
            return
        for pid, ppid, pgrp in scan_parents():
            if ppid == shim:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pgrp == pid:
                        os.killpg(pid, SIGKILL)
                    else:
                        os.kill(pid, SIGKILL)


def group_of(st: dict[str, Any]) -> int | None:
    """The process group the task runs in: its shim's (the task's own, for a task an
    earlier agent started with ``setsid``)."""
    pgid = st.get("pgid") or st.get("task_pid")
    return int(pgid) if pgid else None


def _signal_leader(pid: int, started: int | None, sig: int, *, group: bool) -> bool:
    """``killpg``/``kill`` ``pid`` unless it now names a process other than the one that
    started at ``started``.  Leader alive: it must be ours.  Leader gone: its number cannot
    be reused while members of its group live, so killpg reaches only ours."""
    now = start_time(pid)
    if now is not None and now != started:
        return False
    try:
        if group:
            os.killpg(pid, sig)
        elif now is not None:
            os.kill(pid, sig)
        else:
            return False
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --------------------------------------------------------------------------- shim files


def read_exit(state: dict[str, Any], *, lost: str = LOST_WHILE_DOWN) -> ExitResult:
    """Turn the shim's status file into an :class:`ExitResult`.

    The shell reports a death by signal N as status 128+N, which cannot be told
    from ``exit(128+N)``: statuses 129..128+SIGRTMAX are reported as
    ``signal=N`` with ``exit_code`` still the raw status.  ``lost`` is the
    error when no status was recorded.
    """
    try:
        text = Path(state["status_file"]).read_text().strip()
    except OSError:
        text = ""
    if not text:
        return ExitResult(error=lost)
    try:
        code = int(text)
    except ValueError:
        return ExitResult(error=f"unreadable exit status {text!r}")
    if code == SETUP_FAILED and not os.path.exists(state["pid_file"]):
        return ExitResult(
            exit_code=code, error="the shim could not set the task up (see the task's stderr)"
        )
    sig = code - 128 if 128 < code <= 128 + signal.SIGRTMAX else None
    return ExitResult(exit_code=code, signal=sig)


def _looks_like_shim(pid: int, state_dir: str) -> bool:
    cmdline = read_cmdline(pid)
    # Not SHIM_PATH itself: an upgraded agent may live elsewhere than the one that spawned.
    return (
        cmdline is not None
        and any(arg.endswith("shim.sh") for arg in cmdline[:2])
        and state_dir in cmdline
    )


def is_our_shim(st: dict[str, Any]) -> bool:
    """Whether the handle's shim pid still names that shim (start time and command line)."""
    pid = int(st["shim_pid"])
    started = st.get("shim_start")
    if started is not None and start_time(pid) != started:
        return False
    return _looks_like_shim(pid, st["state_dir"])


def kill_previous(state_dir: str) -> None:
    """SIGKILL an earlier start of the same task that still runs.

    That happens when an agent died after spawning a task but before saving
    its handle, and the next agent starts the task again: one task dir, one
    running instance.  The old shim dies first, so it cannot write its status
    over the new run's.
    """
    try:
        pid, _recorded = parse_stat(Path(state_dir, "pid").read_bytes().strip())
    except (OSError, ValueError):
        return
    proc = read_stat(pid)
    # The task leads its group (an earlier agent's setsid) or is in its shim's.
    if (
        proc is None
        or proc.pgrp not in (pid, proc.ppid)
        or not _looks_like_shim(proc.ppid, state_dir)
    ):
        return
    log.warning("killing task pid %d, left running by an earlier start in %s", pid, state_dir)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(proc.ppid, SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pgrp, SIGKILL)


# --------------------------------------------------------------------------- orphans


@dataclass
class OrphanShim:
    pid: int
    start: int | None
    alloc_id: str
    task: str
    cgroups: list[str]
    driver: str
    """``exec`` when the shim runs its task through ``unshare``, else ``raw_exec`` (every
    process driver reaps every orphaned shim of its data dir: they share the shim)."""

    def alive(self) -> bool:
        return self.start is not None and start_time(self.pid) == self.start


def find_orphan_shims(data_dir: str, owned: set[str]) -> list[OrphanShim]:
    """The live shims of tasks an agent on ``data_dir`` started, for allocations not in
    ``owned``.  A shim is the leader of its process group (its forked subshell, with the
    same command line until it execs the task, is not), runs ``shim.sh``, and names its
    state dir ``<data_dir>/allocs/<alloc>/<task>/.podium`` after ``--``."""
    prefixes = tuple(root + "/" for root in allocs_roots(data_dir))
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        cmd = read_cmdline(pid)
        if not cmd:
            continue
        at = next((i for i, a in enumerate(cmd[:2]) if a.endswith("shim.sh")), None)
        if at is None or "--" not in cmd:
            continue
        sep = cmd.index("--")
        if sep + 1 >= len(cmd):
            continue
        state_dir = cmd[sep + 1]
        prefix = next((p for p in prefixes if state_dir.startswith(p)), None)
        if prefix is None:
            continue
        parts = state_dir[len(prefix) :].split("/")
        if len(parts) != 3 or parts[2] != STATE_SUBDIR or parts[0] in owned:
            continue
        stat = read_stat(pid)
        if stat is None or stat.pgrp != pid:
            continue
        dirs = [os.path.dirname(f) for f in cmd[at + 3 : sep] if f.endswith("/cgroup.procs")]
        driver = "exec" if any(a.endswith("/unshare") for a in cmd[sep + 2 :]) else "raw_exec"
        out.append(OrphanShim(pid, stat.start_time, parts[0], parts[1], dirs, driver))
    return out


@dataclass
class StrayTask:
    pid: int
    start: int | None
    alloc_id: str
    task: str

    def alive(self) -> bool:
        return self.start is not None and start_time(self.pid) == self.start


TASK_DIR_VAR = b"PODIUM_TASK_DIR="


def find_stray_tasks(data_dir: str, owned: set[str]) -> list[StrayTask]:
    """The processes whose ``PODIUM_TASK_DIR`` is ``<data_dir>/allocs/<alloc>/<task>`` for an
    allocation not in ``owned`` (the agent sets it for every task; children inherit it).
    Not this process, and not a shim (``shim.sh``: :func:`find_orphan_shims` has those)."""
    prefixes = tuple(root + "/" for root in allocs_roots(data_dir))
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        at = environ.find(b"\0" + TASK_DIR_VAR)
        if at < 0 and not environ.startswith(TASK_DIR_VAR):
            continue
        start = 0 if at < 0 else at + 1
        end = environ.find(b"\0", start)
        task_dir = environ[start + len(TASK_DIR_VAR) : None if end < 0 else end].decode(
            errors="replace"
        )
        prefix = next((p for p in prefixes if task_dir.startswith(p)), None)
        if prefix is None:
            continue
        parts = task_dir[len(prefix) :].rstrip("/").split("/")
        if len(parts) != 2 or parts[0] in owned:
            continue
        cmd = read_cmdline(pid)
        if not cmd or any(a.endswith("shim.sh") for a in cmd[:2]):
            continue
        out.append(StrayTask(pid, start_time(pid), parts[0], parts[1]))
    return out


# --------------------------------------------------------------------------- /proc scans


def scan_parents() -> list[tuple[int, int, int]]:
    """(pid, ppid, pgrp) of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(ValueError):
                st = read_stat(int(entry))
                if st is not None:
                    out.append((int(entry), st.ppid, st.pgrp))
    return out


def scan_processes() -> dict[int, tuple[int, float, int]]:
    """pid -> (ppid, CPU seconds incl. reaped children, RSS bytes), for every process."""
    table: dict[int, tuple[int, float, int]] = {}
    for proc in psutil.process_iter(["ppid", "cpu_times", "memory_info"]):
        info = proc.info
        times, mem = info.get("cpu_times"), info.get("memory_info")
        if times is None or mem is None:
            continue
        cpu = times.user + times.system + times.children_user + times.children_system
        table[proc.pid] = (int(info["ppid"] or 0), cpu, int(mem.rss))
    return table
