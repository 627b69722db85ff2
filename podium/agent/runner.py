"""The shell around one allocation's state machine: drivers, timers, files.

Everything with side effects for an allocation happens here; every decision
happens in :class:`podium.agent.allocrunner.AllocStateMachine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from podium.agent import payload, secretsdir
from podium.agent.allocrunner import (
    AllocStateMachine,
    AllocUpdated,
    CleanedUp,
    Cleanup,
    Event,
    Instruction,
    KillTask,
    Persist,
    PortsAssigned,
    ReattachTask,
    RecoverTask,
    RecoveryDone,
    Report,
    SetTimer,
    StartTask,
    StopUnrecorded,
    TaskExited,
    TaskRecovered,
    TaskStarted,
    TaskStartFailed,
    TimerFired,
)
from podium.agent.checks import AllocChecks
from podium.agent.health import HealthTracker
from podium.agent.host import AllocHost
from podium.agent.identity import Held
from podium.agent.taskextras import extra_env, task_devices, task_mounts
from podium.agent.templates import TemplateManager
from podium.drivers.base import Driver, ExitResult, TaskContext, TaskHandle, TaskOwner
from podium.errors import DriverError
from podium.models import Allocation, AllocHealth, CheckResult, JobSpec, parse_config

log = logging.getLogger("podium.agent")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
ALLOC_DIR_MODE = 0o711
"""An allocation's directory: searchable, not listable, by others (its tasks are under
it; each task dir and the shared ``alloc/`` guard their own contents)."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Replace ``${NAME}`` with the task environment's value; unknown names stay as written."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


class _NoChecks:
    """The checks of an allocation that has none to run (no service checks, no driver
    keeping a verdict of its own): one shared stand-in, not an AllocChecks per runner."""

    @property
    def running(self) -> list[str]:
        return []

    def update(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def report(self) -> dict[str, CheckResult] | None:
        return None


NO_CHECKS = _NoChecks()


@functools.lru_cache(maxsize=64)
def _allocs_root(data_dir: str) -> str:
    """The allocations' directory of a data dir, as a string: a start builds a handful of
    paths from it, and string joins cost a tenth of pathlib's (profiled: pathlib was ~10%
    of the simulated agents' CPU).  Normalised by pathlib, as the paths were when built
    with it: a task's directory is matched by its exact string (a leftover shim's command
    line, see ``Driver.stop_unrecorded``), also for tasks an earlier version started."""
    return str(Path(data_dir) / "allocs")


class AllocRunner:
    """One allocation on this node.  It lives as long as the allocation runs, one per
    placement, so what it holds is kept small: the containers of rare events (restart
    timers, kills and cleanups) are made on first use, the template manager and the check
    loops only for allocations that have templates or checks."""

    def __init__(self, host: AllocHost, alloc: Allocation, spec: JobSpec) -> None:
        self.host = host
        """The agent, as far as this runner may see it (:mod:`podium.agent.host`)."""
        self.machine = AllocStateMachine(alloc, spec)
        self.handles: dict[str, TaskHandle] = {}
        self._timers: dict[str, asyncio.TimerHandle] | None = None
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, asyncio.Future[ExitResult]] = {}
        """The exit future watched for each running task (see ``_watch``)."""
        self._bg: set[asyncio.Task[Any]] | None = None
        self._dirs_ready = False
        self.forgotten = False
        self._templates: TemplateManager | None = None
        self.check_results: dict[str, CheckResult] = {}
        """The latest result of each health check (see podium.agent.checks), by name."""
        self.checks: AllocChecks | _NoChecks = NO_CHECKS
        self._want_checks(spec)
        self.health = HealthTracker.for_alloc(alloc, spec, host.clock())
        """Deployment health (None outside a deployment); see podium.agent.health."""
        self._health_timer: asyncio.TimerHandle | None = None
        self._identities: dict[str, Held] | None = None
        """Each task's workload token (podium.agent.identity), made on first use."""
        self._owners: dict[str, TaskOwner | None] | None = None
        """Who each task's files belong to (``Driver.task_owner``), made on first use."""

    # ---------------------------------------------------------------- workload identity
    def identity(self, task: str) -> Held | None:
        return self._identities.get(task) if self._identities is not None else None

    def identity_token(self, task: str) -> str | None:
        """The task's current workload token (templates read with it), or None."""
        held = self.identity(task)
        return held.token if held is not None else None

    def set_identity(self, task: str, held: Held) -> None:
        if self._identities is None:
            self._identities = {}
        self._identities[task] = held

    # ---------------------------------------------------------------- the task's files
    def task_owner(self, task: str) -> TaskOwner | None:
        """The owner of the task's rendered templates and secrets (None: the agent's own
        user); raises DriverError when its driver refuses the task."""
        if self._owners is not None and task in self._owners:
            return self._owners[task]
        driver = self.driver_for(task)
        # drivers that run tasks as the agent's user need no context built to say so
        owner = driver.task_owner(self.context(task)) if driver.owns_task_files() else None
        if self._owners is None:
            self._owners = {}
        self._owners[task] = owner
        return owner

    def prepare_secrets(self, task: str) -> None:
        """The task's ``secrets/`` dir, its user's, a tmpfs where the agent can
        (:mod:`podium.agent.secretsdir`), before its token or templates are written."""
        if not self.host.settings.alloc_dirs:
            return
        owner = self.task_owner(task)
        self.make_dirs()
        try:
            secretsdir.prepare(f"{self.alloc_path}/{task}", owner)
        except OSError as exc:
            raise DriverError(
                f"cannot make the secrets dir of task {task}: {exc.strerror or exc}",
                recoverable=True,
            ) from exc

    def unmount_secrets(self) -> None:
        """Take the tasks' secrets tmpfs mounts off the host (the allocation is done)."""
        if self.host.settings.alloc_dirs:
            secretsdir.unmount_tasks(self.alloc_path)

    # ---------------------------------------------------------------- properties
    @property
    def templates(self) -> TemplateManager:
        """Rendered before each start, watched while the task runs (podium.agent.templates);
        made on first use."""
        if self._templates is None:
            self._templates = TemplateManager(self, self.host.client)
        return self._templates

    def _want_checks(self, spec: JobSpec) -> None:
        """Check loops for the group's service checks and for drivers with a verdict of their
        own, once the spec has any (an in-place update may add them)."""
        if self.checks is not NO_CHECKS:
            return
        group = spec.groups.get(self.alloc.group)
        if group is None:
            return
        if any(svc.checks for svc in group.services) or any(
            (d := self.host.driver(t.driver)) is not None and d.keeps_health()
            for t in group.tasks.values()
        ):
            self.checks = AllocChecks(self)

    @property
    def alloc(self) -> Allocation:
        return self.machine.alloc

    @property
    def id(self) -> str:
        return self.machine.alloc.id

    @property
    def alloc_dir(self) -> Path:
        return Path(self.alloc_path)

    @property
    def alloc_path(self) -> str:
        """``alloc_dir`` as a string, built when asked for, not kept: a path per runner is
        ~0.5 KB of every placement, and it is needed only around a start."""
        return f"{_allocs_root(self.host.settings.data_dir)}/{self.id}"

    def task_dir(self, task: str) -> Path:
        return Path(self.alloc_path, task)

    def log_path(self, task: str, stream: str) -> str:
        """A string, not a Path: the rotation loop asks for every task's every interval,
        and pathlib interns each part (an alloc id each: a ~2 MB intern table at 1,000)."""
        return self._log_path(self.alloc_path, task, stream)

    @staticmethod
    def _log_path(alloc_path: str, task: str, stream: str) -> str:
        return f"{alloc_path}/alloc/logs/{task}.{stream}"

    # ---------------------------------------------------------------- the loop
    def now(self) -> float:
        return self.host.clock()

    def dispatch(self, event: Event) -> None:
        try:
            instructions = self.machine.handle(event)
        except Exception:
            log.exception("alloc %s: state machine failed on %r", self.id, event)
            return
        self.execute(instructions)

    def start(self) -> None:
        self.execute(self.machine.start(self.now()))

    def update(self, alloc: Allocation, spec: JobSpec) -> None:
        self._owners = None  # the spec may name another user
        if self.health is None:
            self.health = HealthTracker.for_alloc(alloc, spec, self.now())
        self._want_checks(spec)
        self.dispatch(AllocUpdated(self.now(), alloc, spec))

    def judge_health(self) -> AllocHealth | None:
        """The allocation's deployment health as of now (None while undecided or outside a
        deployment); arms a timer to look again when the verdict may change."""
        tracker = self.health
        if tracker is None:
            return None
        now = self.now()
        again = tracker.observe(now, self.machine.health_task_states(), self.check_results)
        if self._health_timer is not None:
            self._health_timer.cancel()
            self._health_timer = None
        if again is not None and not self.machine.stopping:
            self._health_timer = asyncio.get_running_loop().call_later(
                max(0.0, again - now) + 0.01, self.host.report, self.id
            )
        return tracker.verdict

    def execute(self, instructions: list[Instruction]) -> None:
        self.checks.update()  # checks follow the tasks: off before a kill, on once running
        for ins in instructions:
            if isinstance(ins, StartTask):
                self._spawn_start(ins.task)
            elif isinstance(ins, KillTask):
                self._bg_task(self._kill_task(ins))
            elif isinstance(ins, SetTimer):
                if self._timers is None:
                    self._timers = {}
                old = self._timers.pop(ins.task, None)
                if old is not None:
                    old.cancel()
                self._timers[ins.task] = asyncio.get_running_loop().call_later(
                    ins.delay,
                    self.dispatch,
                    TimerFired(self.now() + ins.delay, ins.task, ins.token),
                )
            elif isinstance(ins, Report):
                self.host.report(self.id)
            elif isinstance(ins, Persist):
                self.host.persist(self.id)
            elif isinstance(ins, Cleanup):
                self._bg_task(self._cleanup())
            elif isinstance(ins, ReattachTask):
                self._bg_task(self._reattach(ins.task))
            elif isinstance(ins, StopUnrecorded):
                self._stop_unrecorded(ins.task)

    def _spawn_start(self, task: str) -> None:
        starting = asyncio.get_running_loop().create_task(self._start_task(task))
        self._starting[task] = starting
        starting.add_done_callback(
            lambda t: self._starting.pop(task, None) if self._starting.get(task) is t else None
        )

    def _bg_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        if self._bg is None:
            self._bg = set()
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ---------------------------------------------------------------- tasks
    def driver_for(self, task: str) -> Driver:
        spec = self.machine.spec.groups[self.alloc.group].tasks[task]
        driver = self.host.driver(spec.driver)
        if driver is None:
            raise DriverError(f"driver {spec.driver!r} is not enabled on this node")
        return driver

    def build_env(self, task: str, alloc_dir: str | None = None) -> dict[str, str]:
        spec = self.machine.spec.groups[self.alloc.group].tasks[task]
        alloc = self.alloc
        if alloc_dir is None:
            alloc_dir = self.alloc_path
        task_dir = f"{alloc_dir}/{task}"
        env = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "HOME": task_dir,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PODIUM_NAMESPACE": alloc.namespace,
            "PODIUM_JOB_ID": alloc.job_id,
            "PODIUM_JOB_VERSION": str(alloc.job_version),
            "PODIUM_GROUP_NAME": alloc.group,
            "PODIUM_TASK_NAME": task,
            "PODIUM_ALLOC_ID": alloc.id,
            "PODIUM_ALLOC_NAME": alloc.name,
            "PODIUM_ALLOC_INDEX": str(alloc.index),
            "PODIUM_NODE_ID": alloc.node_id,
            "PODIUM_NODE_NAME": self.host.node_name,
            "PODIUM_ALLOC_DIR": f"{alloc_dir}/alloc",
            "PODIUM_TASK_DIR": task_dir,
            "PODIUM_CPU_LIMIT": str(spec.resources.cpu),
            "PODIUM_MEMORY_LIMIT": str(spec.resources.memory),
        }
        held = self.identity(task)
        if held is not None:
            env["PODIUM_TOKEN"] = held.token  # the file is the current one once renewed
            env["PODIUM_ADDR"] = self.host.api_address
            if self.host.api_address.startswith("https://"):
                env["PODIUM_CACERT"] = f"{task_dir}/secrets/ca.crt"
        for label, port in self.machine.ports.items():
            env[f"PODIUM_PORT_{label}"] = str(port.value)
            env[f"PODIUM_IP_{label}"] = port.host_ip
            env[f"PODIUM_ADDR_{label}"] = f"{port.host_ip}:{port.value}"
        env.update(payload.meta_env(self.machine.spec, alloc.group, task))
        group = self.machine.spec.groups[alloc.group]
        env.update(extra_env(group, task, spec.driver, alloc, self.host.settings.host_volumes))
        for key, value in spec.env.items():
            env[key] = interpolate(value, env)
        return env

    def context(self, task: str) -> TaskContext:
        group = self.machine.spec.groups[self.alloc.group]
        spec = group.tasks[task]
        alloc_dir = self.alloc_path
        env = self.build_env(task, alloc_dir)
        config = parse_config(spec.driver, interpolate(spec.config, env))
        self.make_dirs(alloc_dir)
        return TaskContext(
            alloc_id=self.id,
            task_name=task,
            job_id=self.alloc.job_id,
            group=self.alloc.group,
            alloc_index=self.alloc.index,
            node_id=self.alloc.node_id,
            config=config,
            env=env,
            resources=spec.resources,
            alloc_dir=f"{alloc_dir}/alloc",
            task_dir=f"{alloc_dir}/{task}",
            stdout_path=self._log_path(alloc_dir, task, "stdout"),
            stderr_path=self._log_path(alloc_dir, task, "stderr"),
            user=spec.user,
            kill_signal=spec.kill_signal,
            kill_timeout=self.host.settings.kill_timeout(spec.kill_timeout),
            ports=dict(self.machine.ports),
            data_dir=self.host.settings.data_dir,
            mounts=task_mounts(group, task, self.host.settings.host_volumes),
            devices=task_devices(self.alloc, task),
        )

    def make_dirs(self, alloc_dir: str | None = None) -> None:
        """The allocation's directory tree, made once, top down (one mkdir per directory:
        on a burst of 1,000 starts, pathlib's parents=True retries cost a third of a second)."""
        if self._dirs_ready or not self.host.settings.alloc_dirs:
            return
        if alloc_dir is None:
            alloc_dir = self.alloc_path
        shared = f"{alloc_dir}/alloc"
        dirs = [alloc_dir, shared, f"{shared}/logs", f"{shared}/data"]
        dirs += [f"{alloc_dir}/{t}" for t in self.machine.tasks]
        for d in dirs:
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            except FileNotFoundError:
                os.makedirs(d, exist_ok=True)
        # Not listable (0711): another tenant cannot learn this allocation's task names;
        # each task still reaches its own dir by path (see the agent's README).
        os.chmod(alloc_dir, ALLOC_DIR_MODE)
        self._dirs_ready = True

    async def _start_task(self, task: str) -> None:
        asked = time.perf_counter()
        driver: Driver | None = None
        try:
            driver = self.driver_for(task)
            if self.machine.needs_ports():
                network = self.machine.spec.groups[self.alloc.group].network
                ports = self.host.assign_ports(self.id, network)
                self.dispatch(PortsAssigned(self.now(), ports))
            self.prepare_secrets(task)
            identities = self.host.identities
            if identities is not None:
                await identities.ensure(self, task)
            template_env = (
                await self.templates.render_for_start(task) if self._has_templates(task) else {}
            )
            async with self.host.start_slots:
                if self.forgotten:
                    return
                ctx = self.context(task)
                if self.host.settings.alloc_dirs:  # a dispatched job's payload
                    payload.write_payload(
                        self.machine.spec,
                        self.machine.spec.groups[self.alloc.group].tasks[task],
                        ctx.task_dir,
                    )
                ctx.env.update(template_env)
                handle = await driver.start(ctx)
        except DriverError as exc:
            self.host.metrics.start_failed(driver.name if driver is not None else "")
            self.dispatch(TaskStartFailed(self.now(), task, str(exc), exc.recoverable))
            return
        except Exception as exc:
            log.exception("alloc %s task %s: start failed", self.id, task)
            self.host.metrics.start_failed(driver.name if driver is not None else "")
            self.dispatch(TaskStartFailed(self.now(), task, f"{type(exc).__name__}: {exc}"))
            return
        self.host.metrics.started(
            driver.name,
            time.perf_counter() - asked,
            restart=self.machine.tasks[task].state.restarts > 0,
        )
        self.handles[task] = handle
        # The handle is saved on the loop's next turn, batched with every other start
        # of this turn (one SQLite transaction for a burst of 1,000 starts, not 1,000).
        # An agent killed inside that sub-millisecond window leaves the task running
        # without a record; the shim's pid file under the task dir still names it.
        self.host.persist(self.id)
        self.dispatch(TaskStarted(self.now(), task, handle.pid))
        self._watch(task, driver, handle)
        if self._templates is not None:
            self._templates.started(task)

    def _has_templates(self, task: str) -> bool:
        """Whether the task needs the template manager: it has templates, or the manager
        exists already (it may watch what an earlier spec's templates read)."""
        if self._templates is not None:
            return True
        spec = self.machine.spec.groups[self.alloc.group].tasks.get(task)
        return spec is not None and bool(spec.templates)

    def _watch(self, task: str, driver: Driver, handle: TaskHandle) -> None:
        """Report the task's exit from a done callback on the driver's exit future, not from
        a task per running task (see :meth:`Driver.exit_future`)."""
        self._unwatch(task)
        try:
            future = driver.exit_future(handle)
        except Exception as exc:
            # reported on a later turn, as a failed wait was: never inside the start itself
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        self._waiters[task] = future
        future.add_done_callback(self._exited)

    def _unwatch(self, task: str) -> None:
        """Stop reporting the task's exit: our wrapper task is cancelled, a driver's own
        future only loses our callback (other callers may still wait on it)."""
        future = self._waiters.pop(task, None)
        if future is None:
            return
        future.remove_done_callback(self._exited)
        if isinstance(future, asyncio.Task):
            future.cancel()

    def _exited(self, future: asyncio.Future[ExitResult]) -> None:
        """The done callback of a watched exit future."""
        exc = None if future.cancelled() else future.exception()  # retrieved even if unwatched
        # A callback already scheduled when the task was unwatched still runs: only the
        # future in _waiters counts.
        task = next((t for t, f in self._waiters.items() if f is future), None)
        if task is None:
            return
        del self._waiters[task]
        if future.cancelled():
            return
        if exc is not None:
            log.error("alloc %s task %s: wait failed", self.id, task, exc_info=exc)
            self.dispatch(TaskExited(self.now(), task, error=f"lost track of task: {exc}"))
            return
        result = future.result()
        self.dispatch(
            TaskExited(
                self.now(),
                task,
                exit_code=result.exit_code,
                signal=result.signal,
                oom_killed=result.oom_killed,
                error=result.error,
            )
        )

    async def _kill_task(self, ins: KillTask) -> None:
        starting = self._starting.get(ins.task)
        if starting is not None:
            with contextlib.suppress(Exception):
                await starting
        handle = self.handles.get(ins.task)
        if handle is None:
            return
        if ins.delay > 0:
            # shutdown_delay: the catalog dropped the instance with the stop; let the
            # clients that had already looked it up finish before the signal.
            await asyncio.sleep(ins.delay)
        try:
            timeout = self.host.settings.kill_timeout(ins.timeout)  # --max-kill-timeout
            await self.driver_for(ins.task).stop(handle, ins.signal, timeout)
        except Exception:
            log.exception("alloc %s task %s: stop failed", self.id, ins.task)

    async def recover(self) -> None:
        """Re-attach to the tasks an earlier agent process started: the machine decides,
        task by task (:class:`RecoverTask`), what to do with each."""
        for task in list(self.machine.tasks):
            event = RecoverTask(self.now(), task, has_handle=task in self.handles)
            try:
                instructions = self.machine.handle(event)
            except Exception:
                log.exception("alloc %s: state machine failed on %r", self.id, event)
                continue
            for ins in instructions:
                if isinstance(ins, ReattachTask):
                    await self._reattach(ins.task)  # one task after the other, as started
                else:
                    self.execute([ins])
        self.dispatch(RecoveryDone(self.now()))

    async def _reattach(self, task: str) -> None:
        """Ask the task's driver to re-attach to it (``Driver.recover``), then watch it."""
        handle = self.handles.get(task)
        if handle is None:
            return
        try:
            driver = self.driver_for(task)
            alive = await driver.recover(handle)
        except Exception as exc:
            log.exception("alloc %s task %s: recover failed", self.id, task)
            self.dispatch(
                TaskExited(self.now(), task, error=f"could not re-attach after restart: {exc}")
            )
            return
        if alive:
            self.host.metrics.reattached()
            self.dispatch(TaskRecovered(self.now(), task, handle.pid))
            if self._has_templates(task):
                self.templates.resume(task)
        self._watch(task, driver, handle)

    def _stop_unrecorded(self, task: str) -> None:
        try:
            driver = self.driver_for(task)
            driver.stop_unrecorded(f"{self.alloc_path}/{task}")
        except Exception:
            log.exception("alloc %s task %s: cannot stop an unrecorded start", self.id, task)

    async def _cleanup(self) -> None:
        if self.machine.cleaned_up:
            return
        self._stop_templates()
        for task, handle in list(self.handles.items()):
            try:
                await self.driver_for(task).destroy(handle)
            except Exception:
                log.exception("alloc %s task %s: destroy failed", self.id, task)
        self.unmount_secrets()
        self.dispatch(CleanedUp(self.now()))

    async def kill_and_forget(self) -> None:
        """The server no longer knows this allocation: stop everything, remove its files."""
        self.forgotten = True
        self.checks.stop()
        self._stop_templates()
        for timer in (self._timers or {}).values():
            timer.cancel()
        for starting in list(self._starting.values()):
            # a start still waiting for its slot must not spawn a process nobody owns
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        for task, handle in list(self.handles.items()):
            with contextlib.suppress(Exception):
                spec = self.machine.spec.groups[self.alloc.group].tasks[task]
                timeout = self.host.settings.kill_timeout(spec.kill_timeout)
                await self.driver_for(task).stop(handle, spec.kill_signal, timeout)
            with contextlib.suppress(Exception):
                await self.driver_for(task).destroy(handle)
        for task in list(self._waiters):
            self._unwatch(task)
        self.unmount_secrets()
        shutil.rmtree(self.alloc_dir, ignore_errors=True)

    def close(self) -> None:
        """Detach without touching tasks (agent shutdown): they keep running."""
        self.checks.stop()
        self._stop_templates()
        if self._health_timer is not None:
            self._health_timer.cancel()
        for timer in (self._timers or {}).values():
            timer.cancel()
        for task in list(self._waiters):
            self._unwatch(task)
        for t in [*self._starting.values(), *(self._bg or ())]:
            t.cancel()

    def _stop_templates(self) -> None:
        if self._templates is not None:
            self._templates.stop()

    # ---------------------------------------------------------------- persistence
    def handles_dict(self) -> dict[str, dict[str, Any]]:
        return {k: h.to_dict() for k, h in self.handles.items()}

    def restore_handles(self, data: dict[str, dict[str, Any]]) -> None:
        self.handles = {k: TaskHandle.from_dict(v) for k, v in data.items()}
