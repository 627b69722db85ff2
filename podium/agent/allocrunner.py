"""The allocation runner as a state machine: events in, instructions out, no I/O.

After dask's ``worker_state_machine``: the agent's shell (:mod:`podium.agent.runner`)
turns driver callbacks, timers and server updates into :class:`Event` objects,
feeds them to :meth:`AllocStateMachine.handle`, and carries out the returned
:class:`Instruction` objects (start a task, kill it, arm a timer, report).
Tests drive the machine with events and compare instructions, with no
processes and no sleeps.

Restart policy (on this node, per task, as Nomad's ``restarts.go``):

- a service task that exits, for any reason, is restarted; a batch task that
  exits 0 is done, one that fails is restarted;
- at most ``attempts`` restarts within ``interval``; each waits ``delay``;
- when they run out: ``mode: fail`` kills the allocation's other tasks and
  fails the allocation (the server may reschedule it); ``mode: delay`` waits
  until the interval is over and starts again;
- a start error that the driver calls unrecoverable (missing command, bad
  image) fails the task at once: retrying it cannot help.

Lifecycle hooks (a task's ``lifecycle``, docs/lifecycle.md), as Nomad's:

- ``prestart`` tasks start first; the main tasks (those without ``lifecycle``) start
  once every prestart task that is not a sidecar has exited 0 and every prestart sidecar
  has started.  A prestart task that fails is restarted by the group's policy (the main
  tasks wait); when it runs out of attempts the allocation fails.
- ``poststart`` tasks start once every main task has started.
- ``sidecar: true`` (prestart or poststart): restarted whenever it exits, for any
  reason, as a service task is; stopped after the main tasks have stopped.
- ``poststop`` tasks start once every main task is dead (completed, failed, or stopped
  with the allocation), if anything of the allocation ever started; each run gets
  ``POSTSTOP_DEADLINE`` seconds, then it is killed.  The allocation is reported
  complete (or failed) only after them.
- Hooks that are not sidecars run to completion: exit 0 is done, whatever the job
  type; they never run again, even when a main task restarts later.
- The client status follows the main tasks: pending until one starts, running until
  every task (poststop ones included) is dead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from podium.models import (
    TASK_STATE,
    AllocatedPort,
    Allocation,
    ClientStatus,
    DesiredStatus,
    JobSpec,
    JobType,
    Lifecycle,
    LifecycleHook,
    RestartMode,
    RestartPolicy,
    TaskEvent,
    TaskState,
    TaskStateName,
)

POSTSTOP_DEADLINE = 60.0
"""Seconds a poststop task may run (each run) before it is killed: an allocation being
stopped must end, whatever its poststop tasks do."""

# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    time: float


@dataclass(frozen=True)
class AllocUpdated(Event):
    """The server's view of the allocation changed (desired status, job version)."""

    alloc: Allocation
    spec: JobSpec


@dataclass(frozen=True)
class TaskStarted(Event):
    task: str
    pid: int | None = None


@dataclass(frozen=True)
class TaskStartFailed(Event):
    task: str
    error: str
    recoverable: bool = False


@dataclass(frozen=True)
class TaskExited(Event):
    task: str
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TimerFired(Event):
    task: str
    token: int


@dataclass(frozen=True)
class RestartRequested(Event):
    """Something outside the task wants it restarted: a failing health check, or a
    template whose content changed.  ``counts`` says whether the restart counts
    against the restart policy (a check's does, as Nomad's check_restart; a
    template's does not)."""

    task: str
    reason: str
    type: str = "Restart Signaled"
    counts: bool = False
    operator: bool = False
    """An operator's ``podium alloc restart``: neither the policy's attempts nor the
    task's ``restarts`` count it (its event records it)."""


@dataclass(frozen=True)
class TaskSignaled(Event):
    """An operator delivered ``signal`` to the task (``podium alloc signal``): recorded
    as a task event, nothing else changes."""

    task: str
    signal: str


@dataclass(frozen=True)
class TaskRecovered(Event):
    """After an agent restart the task was found still running."""

    task: str
    pid: int | None = None


@dataclass(frozen=True)
class PortsAssigned(Event):
    """The shell chose the group's ports on this node (see :meth:`AllocStateMachine.needs_ports`):
    kept for the allocation's life, reported to the server."""

    ports: dict[str, AllocatedPort]


@dataclass(frozen=True)
class RecoverTask(Event):
    """A restarted agent loaded this task's record; ``has_handle``: the earlier agent saved
    the driver's handle (so it can be re-attached to)."""

    task: str
    has_handle: bool


@dataclass(frozen=True)
class RecoveryDone(Event):
    """Every task of a restored allocation was looked at (see :class:`RecoverTask`)."""


@dataclass(frozen=True)
class CleanedUp(Event):
    """The shell freed the allocation's resources (after a :class:`Cleanup`)."""


# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    pass


@dataclass(frozen=True)
class StartTask(Instruction):
    task: str


@dataclass(frozen=True)
class KillTask(Instruction):
    task: str
    signal: str
    timeout: float
    reason: str
    delay: float = 0.0
    """Wait this long before signalling (the task's shutdown_delay, on allocation stop)."""


@dataclass(frozen=True)
class SetTimer(Instruction):
    task: str
    delay: float
    token: int


@dataclass(frozen=True)
class Report(Instruction):
    """The client status or a task state changed: tell the server."""


@dataclass(frozen=True)
class Persist(Instruction):
    """The runner's state changed: save it so a restarted agent can resume."""


@dataclass(frozen=True)
class ReattachTask(Instruction):
    """Ask the driver to re-attach to the task an earlier agent started (its saved handle),
    then watch it: answer :class:`TaskRecovered` if it runs, its exit otherwise."""

    task: str


@dataclass(frozen=True)
class StopUnrecorded(Instruction):
    """Stop any instance of the task an earlier agent started without saving its handle
    (``Driver.stop_unrecorded``)."""

    task: str


@dataclass(frozen=True)
class Cleanup(Instruction):
    """Every task is dead and the server wants the allocation stopped: free its resources."""


# --------------------------------------------------------------------------- state


class Phase(StrEnum):
    """Where a task is in its life on this node (finer than TaskStateName)."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    WAITING_RESTART = "waiting_restart"
    KILLING = "killing"
    DEAD = "dead"


@dataclass
class TaskTrack:
    phase: Phase = Phase.PENDING
    state: TaskState = field(default_factory=TaskState)
    window_start: float | None = None
    window_restarts: int = 0
    timer_token: int = 0
    restart_after_kill: str = ""
    """Set while a requested restart kills the task: "counted", "free" or "operator"."""
    uncounted_restart: bool = False
    """The restart now waiting is an operator's: ``restarts`` stays as it is."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "state": TASK_STATE.dump_python(self.state, mode="json"),
            "window_start": self.window_start,
            "window_restarts": self.window_restarts,
            "timer_token": self.timer_token,
            "restart_after_kill": self.restart_after_kill,
            "uncounted_restart": self.uncounted_restart,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskTrack:
        return cls(
            phase=Phase(data["phase"]),
            state=TASK_STATE.validate_python(data["state"]),
            window_start=data.get("window_start"),
            window_restarts=int(data.get("window_restarts", 0)),
            timer_token=int(data.get("timer_token", 0)),
            restart_after_kill=str(data.get("restart_after_kill", "")),
            uncounted_restart=bool(data.get("uncounted_restart", False)),
        )


class AllocStateMachine:
    """The life of one allocation on this node."""

    def __init__(self, alloc: Allocation, spec: JobSpec) -> None:
        self.alloc = alloc
        self.spec = spec
        self.tasks: dict[str, TaskTrack] = {t: TaskTrack() for t in self._group().tasks}
        self.failed_reason = ""
        self.cleaned_up = False
        self.started = False
        self.ports: dict[str, AllocatedPort] = {}
        """The group's ports on this node, chosen once for the allocation's life."""
        self.hooks = self._has_hooks()
        """Whether any task has a ``lifecycle`` (else none of the hook logic runs)."""

    # -- helpers
    def _group(self) -> Any:
        return self.spec.groups[self.alloc.group]

    def _policy(self) -> RestartPolicy:
        policy: RestartPolicy = self._group().restart.with_defaults(self.spec.type)
        return policy

    def _task_spec(self, name: str) -> Any:
        return self._group().tasks[name]

    def _has_hooks(self) -> bool:
        group = self.spec.groups.get(self.alloc.group)
        return group is not None and any(t.lifecycle is not None for t in group.tasks.values())

    def _lifecycle(self, name: str) -> Lifecycle | None:
        lifecycle: Lifecycle | None = self._task_spec(name).lifecycle
        return lifecycle

    def _is_main(self, name: str) -> bool:
        return self._lifecycle(name) is None

    def _is_poststop(self, name: str) -> bool:
        lc = self._lifecycle(name)
        return lc is not None and lc.hook == LifecycleHook.POSTSTOP

    def _is_sidecar(self, name: str) -> bool:
        lc = self._lifecycle(name)
        return lc is not None and lc.sidecar

    def _runs_to_completion(self, name: str) -> bool:
        """A hook that is not a sidecar: exit 0 is done, whatever the job type."""
        lc = self._lifecycle(name)
        return lc is not None and not lc.sidecar

    @property
    def stopping(self) -> bool:
        return self.alloc.desired_status == DesiredStatus.STOP

    def client_status(self) -> ClientStatus:
        tracks = list(self.tasks.values())
        if all(t.phase == Phase.DEAD for t in tracks):
            # stopped by the server before finishing is complete too, not failed
            failed = any(t.state.failed for t in tracks)
            return ClientStatus.FAILED if failed else ClientStatus.COMPLETE
        if self.hooks:
            # the main tasks say: pending while only prestart hooks ran
            tracks = [t for name, t in self.tasks.items() if self._is_main(name)]
        if any(t.phase in (Phase.RUNNING, Phase.KILLING, Phase.WAITING_RESTART) for t in tracks):
            return ClientStatus.RUNNING
        if any(t.state.started_at is not None for t in tracks):
            return ClientStatus.RUNNING
        return ClientStatus.PENDING

    def client_description(self) -> str:
        status = self.client_status()
        if status == ClientStatus.FAILED:
            return self.failed_reason or "a task failed"
        if status == ClientStatus.COMPLETE:
            return "all tasks have completed" if not self.stopping else "stopped"
        if status == ClientStatus.RUNNING:
            return "tasks are running"
        if self.hooks and any(t.state.started_at is not None for t in self.tasks.values()):
            return "prestart tasks are running"
        return "tasks are starting"

    def terminal(self) -> bool:
        return all(t.phase == Phase.DEAD for t in self.tasks.values())

    @staticmethod
    def _event(track: TaskTrack, time: float, type_: str, message: str = "", **kw: Any) -> None:
        track.state.add_event(TaskEvent(time=time, type=type_, message=message, **kw))

    # -- the machine
    def handle(self, event: Event) -> list[Instruction]:
        out = self._handle(event)
        if self.hooks and self.started and not isinstance(event, (RecoverTask, CleanedUp)):
            out = self._tidy(out + self._advance(event.time))
        return out

    def _handle(self, event: Event) -> list[Instruction]:
        if isinstance(event, AllocUpdated):
            return self._on_update(event)
        if isinstance(event, TaskStarted):
            return self._on_started(event)
        if isinstance(event, TaskRecovered):
            return self._on_recovered(event)
        if isinstance(event, TaskStartFailed):
            return self._on_start_failed(event)
        if isinstance(event, TaskExited):
            return self._on_exited(event)
        if isinstance(event, TimerFired):
            return self._on_timer(event)
        if isinstance(event, RestartRequested):
            return self._on_restart_requested(event)
        if isinstance(event, TaskSignaled):
            return self._on_signaled(event)
        if isinstance(event, PortsAssigned):
            self.ports = dict(event.ports)
            return [Report()]
        if isinstance(event, RecoverTask):
            return self._on_recover_task(event)
        if isinstance(event, RecoveryDone):
            return [Cleanup()] if self.terminal() and not self.cleaned_up else []
        if isinstance(event, CleanedUp):
            self.cleaned_up = True
            return [Persist()]
        raise TypeError(f"unknown event {event!r}")

    def start(self, time: float) -> list[Instruction]:
        """Begin running a newly received allocation."""
        self.started = True
        if self.stopping:
            for track in self.tasks.values():
                track.phase = Phase.DEAD
                track.state.state = TaskStateName.DEAD
            return [Report(), Persist(), Cleanup()]
        out: list[Instruction] = []
        if self.hooks:
            for track in self.tasks.values():
                if track.phase == Phase.PENDING:
                    self._event(track, time, "Received", "task received by the agent")
            # no Report: as below, the server already has it as pending
            return [i for i in self._advance(time) if not isinstance(i, Report)] or [Persist()]
        for name, track in self.tasks.items():
            if track.phase == Phase.PENDING:
                track.phase = Phase.STARTING
                self._event(track, time, "Received", "task received by the agent")
                out.append(StartTask(name))
        # No Report: the server already has this allocation as pending; the first
        # report worth a request is the task's start (or its failure to start).
        return [*out, Persist()]

    def _on_update(self, ev: AllocUpdated) -> list[Instruction]:
        was_stopping = self.stopping
        self.alloc = ev.alloc
        self.spec = ev.spec
        self.hooks = self._has_hooks()
        if self.stopping and not was_stopping:
            return self._kill_all(ev.time, ev.alloc.desired_description or "allocation stopped")
        return [Persist()]

    def _kill_all(self, time: float, reason: str) -> list[Instruction]:
        out: list[Instruction] = []
        for name, track in self.tasks.items():
            if self.hooks and (self._is_sidecar(name) or self._is_poststop(name)):
                continue  # stopped after the main tasks (sidecars), run after them (poststop)
            spec = self._task_spec(name)
            if track.phase in (Phase.RUNNING, Phase.STARTING):
                track.phase = Phase.KILLING
                self._event(track, time, "Killing", reason)
                out.append(
                    KillTask(
                        name,
                        spec.kill_signal,
                        spec.kill_timeout,
                        reason,
                        delay=spec.shutdown_delay,
                    )
                )
            elif track.phase in (Phase.PENDING, Phase.WAITING_RESTART):
                track.phase = Phase.DEAD
                track.state.state = TaskStateName.DEAD
                track.state.finished_at = time
                track.timer_token += 1
                self._event(track, time, "Killed", reason)
        out += [Report(), Persist()]
        if self.terminal():
            out.append(Cleanup())
        return out

    def _on_started(self, ev: TaskStarted) -> list[Instruction]:
        track = self.tasks[ev.task]
        if track.phase == Phase.KILLING:
            # stop arrived while it was starting: the kill instruction is already out
            return []
        track.phase = Phase.RUNNING
        track.state.state = TaskStateName.RUNNING
        track.state.started_at = ev.time
        track.state.finished_at = None
        track.state.pid = ev.pid
        track.state.exit_code = None
        track.state.signal = None
        track.state.oom_killed = False
        self._event(track, ev.time, "Started", "task started by the driver")
        return [Report(), Persist()]

    def _on_restart_requested(self, ev: RestartRequested) -> list[Instruction]:
        track = self.tasks.get(ev.task)
        if track is None or self.stopping or track.phase != Phase.RUNNING:
            return []
        spec = self._task_spec(ev.task)
        track.phase = Phase.KILLING
        track.restart_after_kill = "operator" if ev.operator else "counted" if ev.counts else "free"
        self._event(track, ev.time, ev.type, ev.reason)
        return [
            KillTask(ev.task, spec.kill_signal, spec.kill_timeout, ev.reason),
            Report(),
            Persist(),
        ]

    def _on_signaled(self, ev: TaskSignaled) -> list[Instruction]:
        track = self.tasks.get(ev.task)
        if track is None:
            return []
        self._event(track, ev.time, "Signaling", f"{ev.signal} sent by an operator")
        return [Report(), Persist()]

    def _on_recovered(self, ev: TaskRecovered) -> list[Instruction]:
        track = self.tasks[ev.task]
        was_killing = track.phase == Phase.KILLING
        track.phase = Phase.RUNNING
        track.state.state = TaskStateName.RUNNING
        track.state.pid = ev.pid
        self._event(track, ev.time, "Reattached", "the restarted agent re-attached to the task")
        sibling_failed = any(t.state.failed for t in self.tasks.values())
        if self.hooks and self._is_poststop(ev.task):
            stopping = sibling_failed = False  # it runs because the others stopped
        else:
            stopping = self.stopping
        if stopping or was_killing or sibling_failed:
            # The earlier agent was stopping it (the allocation was stopped, or a sibling
            # failed): finish that, or the allocation would run on forever.
            spec = self._task_spec(ev.task)
            track.phase = Phase.KILLING
            reason = "allocation stopped" if self.stopping else "a sibling task failed"
            return [
                KillTask(ev.task, spec.kill_signal, spec.kill_timeout, reason),
                Report(),
                Persist(),
            ]
        return [Report(), Persist()]

    def needs_ports(self) -> bool:
        """Whether a start must first choose the group's ports (:class:`PortsAssigned`):
        the group asks for some and none were chosen yet."""
        return not self.ports and bool(self._group().network.ports)

    def _on_recover_task(self, ev: RecoverTask) -> list[Instruction]:
        """What a restarted agent does with a task, by where the earlier one left it."""
        track = self.tasks.get(ev.task)
        if track is None:
            return []
        live = (Phase.RUNNING, Phase.KILLING, Phase.STARTING)
        if track.phase in live and ev.has_handle:
            return [ReattachTask(ev.task)]
        if track.phase == Phase.KILLING:
            # Stopped while it was starting, and the agent died before the handle was
            # saved: stop any instance that did start, then let the task be dead.
            exited = TaskExited(ev.time, ev.task, error="stopped while starting")
            return [StopUnrecorded(ev.task), *self._on_exited(exited)]
        if track.phase == Phase.STARTING:
            # The agent died between deciding to start and recording the handle.
            return [StartTask(ev.task)]
        if track.phase == Phase.WAITING_RESTART:
            return [SetTimer(ev.task, self._policy().delay or 0.0, track.timer_token)]
        return []

    def _on_start_failed(self, ev: TaskStartFailed) -> list[Instruction]:
        track = self.tasks[ev.task]
        self._event(track, ev.time, "Driver Failure", ev.error)
        poststop = self.hooks and self._is_poststop(ev.task)
        if (self.stopping and not poststop) or track.phase == Phase.KILLING:
            return self._dead(ev.task, ev.time, failed=False)
        if not ev.recoverable:
            self.failed_reason = f"task {ev.task!r} could not start: {ev.error}"
            return self._fail(ev.task, ev.time, ev.error)
        if poststop and self.stopping:
            self.failed_reason = f"poststop task {ev.task!r} could not start: {ev.error}"
            return self._dead(ev.task, ev.time, failed=True)
        return self._maybe_restart(ev.task, ev.time, failed_run=True)

    def _on_exited(self, ev: TaskExited) -> list[Instruction]:
        track = self.tasks[ev.task]
        if track.phase == Phase.DEAD:
            return []
        track.state.exit_code = ev.exit_code
        track.state.signal = ev.signal
        track.state.oom_killed = ev.oom_killed
        track.state.finished_at = ev.time
        track.state.pid = None
        if ev.oom_killed:
            message = "task was killed: it exceeded its memory limit (OOM)"
            type_ = "OOM Killed"
        elif ev.error:
            message = ev.error
            type_ = "Terminated"
        elif ev.signal is not None:
            message = f"task exited on signal {ev.signal}"
            type_ = "Terminated"
        else:
            message = f"task exited with code {ev.exit_code}"
            type_ = "Terminated"
        self._event(
            track,
            ev.time,
            type_,
            message,
            exit_code=ev.exit_code,
            signal=ev.signal,
            oom_killed=ev.oom_killed,
        )
        restart, track.restart_after_kill = track.restart_after_kill, ""
        sibling_failed = any(t.state.failed for t in self.tasks.values())
        if restart and not self.stopping and not sibling_failed and track.phase == Phase.KILLING:
            if restart == "counted":
                return self._maybe_restart(ev.task, ev.time, failed_run=True)
            track.uncounted_restart = restart == "operator"
            return self._schedule_restart(ev.task, ev.time, 0.0, "restarting now")
        poststop = self.hooks and self._is_poststop(ev.task)
        if track.phase == Phase.KILLING or (self.stopping and not poststop):
            self._event(track, ev.time, "Killed", "task stopped")
            return self._dead(ev.task, ev.time, failed=False)
        success = ev.exit_code == 0 and ev.signal is None and not ev.oom_killed and not ev.error
        if self.hooks and self._lifecycle(ev.task) is not None:
            return self._hook_exited(ev.task, ev.time, success)
        if success and self.spec.type == JobType.BATCH:
            return self._dead(ev.task, ev.time, failed=False)
        return self._maybe_restart(ev.task, ev.time, failed_run=not success)

    def _hook_exited(self, task: str, time: float, success: bool) -> list[Instruction]:
        """A lifecycle hook exited on its own (not killed)."""
        if self._is_sidecar(task):
            return self._maybe_restart(task, time, failed_run=not success)
        if success:
            self._event(self.tasks[task], time, "Completed", "hook task completed")
            return self._dead(task, time, failed=False)
        if self._is_poststop(task) and self.stopping:
            # no restarts for the allocation's last words
            self.failed_reason = f"poststop task {task!r} failed"
            return self._dead(task, time, failed=True)
        return self._maybe_restart(task, time, failed_run=True)

    def _maybe_restart(self, task: str, time: float, failed_run: bool) -> list[Instruction]:
        track = self.tasks[task]
        policy = self._policy()
        attempts = policy.attempts or 0
        interval = policy.interval or 0.0
        delay = policy.delay or 0.0
        if track.window_start is None or time - track.window_start > interval:
            track.window_start = time
            track.window_restarts = 0
        if track.window_restarts >= attempts:
            if policy.mode == RestartMode.DELAY:
                wait = max(delay, track.window_start + interval - time)
                track.window_start = None
                return self._schedule_restart(
                    task,
                    time,
                    wait,
                    f"restart attempts exhausted; waiting {wait:.0f}s for the interval to pass",
                )
            what = "failed" if failed_run else "exited"
            self.failed_reason = (
                f"task {task!r} {what} and exceeded its restart policy "
                f"({attempts} attempts in {interval:g}s)"
            )
            return self._fail(task, time, self.failed_reason)
        track.window_restarts += 1
        return self._schedule_restart(task, time, delay, f"restarting in {delay:g}s")

    def _schedule_restart(
        self, task: str, time: float, delay: float, msg: str
    ) -> list[Instruction]:
        track = self.tasks[task]
        track.phase = Phase.WAITING_RESTART
        track.state.state = TaskStateName.PENDING
        track.timer_token += 1
        self._event(track, time, "Restarting", msg)
        return [SetTimer(task, delay, track.timer_token), Report(), Persist()]

    def _on_timer(self, ev: TimerFired) -> list[Instruction]:
        track = self.tasks[ev.task]
        if (
            self.hooks
            and ev.token == track.timer_token
            and track.phase in (Phase.RUNNING, Phase.STARTING)
            and self._is_poststop(ev.task)
        ):
            return self._poststop_overdue(ev.task, ev.time)
        if ev.token != track.timer_token or track.phase != Phase.WAITING_RESTART:
            return []
        if self.stopping and not (self.hooks and self._is_poststop(ev.task)):
            return self._dead(ev.task, ev.time, failed=False)
        track.phase = Phase.STARTING
        if not track.uncounted_restart:
            track.state.restarts += 1
        track.uncounted_restart = False
        track.state.last_restart = ev.time
        if self.hooks and self._is_poststop(ev.task):
            return [*self._start_hook(ev.task), Persist()]
        return [StartTask(ev.task), Persist()]

    def _fail(self, task: str, time: float, reason: str) -> list[Instruction]:
        out = self._dead(task, time, failed=True)
        # One failed task fails the allocation: stop its siblings (as Nomad does).
        for name, track in self.tasks.items():
            if name == task or (self.hooks and self._is_poststop(name)):
                continue  # poststop tasks run once the main tasks are dead (``_advance``)
            spec = self._task_spec(name)
            if track.phase in (Phase.RUNNING, Phase.STARTING):
                track.phase = Phase.KILLING
                self._event(track, time, "Sibling Failed", f"task {task!r} failed")
                out.insert(
                    0, KillTask(name, spec.kill_signal, spec.kill_timeout, f"task {task!r} failed")
                )
            elif track.phase in (Phase.PENDING, Phase.WAITING_RESTART):
                track.phase = Phase.DEAD
                track.state.state = TaskStateName.DEAD
                track.timer_token += 1
        if self.terminal() and Cleanup() not in out:
            out.append(Cleanup())
        return out

    def _dead(self, task: str, time: float, failed: bool) -> list[Instruction]:
        track = self.tasks[task]
        track.phase = Phase.DEAD
        track.state.state = TaskStateName.DEAD
        track.state.failed = track.state.failed or failed
        track.state.finished_at = track.state.finished_at or time
        track.timer_token += 1
        out: list[Instruction] = [Report(), Persist()]
        if self.terminal():
            out.append(Cleanup())
        return out

    # -- lifecycle hooks
    def _prestart_done(self) -> bool:
        """The main tasks may start: every prestart task that runs to completion has
        exited 0, every prestart sidecar has started."""
        for name, track in self.tasks.items():
            lc = self._lifecycle(name)
            if lc is None or lc.hook != LifecycleHook.PRESTART:
                continue
            if lc.sidecar:
                if track.state.started_at is None:
                    return False
            elif track.phase != Phase.DEAD or track.state.failed:
                return False
        return True

    def _mains(self) -> list[TaskTrack]:
        return [t for name, t in self.tasks.items() if self._is_main(name)]

    def _start_hook(self, name: str) -> list[Instruction]:
        """Start a task whose turn came; a poststop one with its deadline armed."""
        track = self.tasks[name]
        track.phase = Phase.STARTING
        if not self._is_poststop(name):
            return [StartTask(name)]
        track.timer_token += 1
        return [StartTask(name), SetTimer(name, POSTSTOP_DEADLINE, track.timer_token)]

    def _poststop_overdue(self, task: str, time: float) -> list[Instruction]:
        track = self.tasks[task]
        spec = self._task_spec(task)
        reason = f"poststop task ran past its {POSTSTOP_DEADLINE:g}s deadline"
        track.phase = Phase.KILLING
        self._event(track, time, "Killing", reason)
        return [KillTask(task, spec.kill_signal, spec.kill_timeout, reason), Report(), Persist()]

    def _advance(self, time: float) -> list[Instruction]:
        """Start the tasks whose turn came, stop the sidecars once the main tasks are dead,
        and skip what will never run (see the module's docstring), until nothing moves:
        each step only moves tasks forward (pending → starting or dead, running →
        killing), so this ends."""
        out: list[Instruction] = []
        while step := self._advance_once(time):
            out += step
        if out:
            out += [Report(), Persist()]
            if self.terminal() and not self.cleaned_up:
                out.append(Cleanup())
        return out

    def _advance_once(self, time: float) -> list[Instruction]:
        out: list[Instruction] = []
        mains = self._mains()
        mains_dead = all(t.phase == Phase.DEAD for t in mains)
        mains_started = all(t.state.started_at is not None for t in mains)
        ever_started = any(t.state.started_at is not None for t in self.tasks.values())
        failed = any(t.state.failed for t in self.tasks.values())
        for name, track in self.tasks.items():
            lc = self._lifecycle(name)
            if lc is not None and lc.hook == LifecycleHook.POSTSTOP:
                if track.phase == Phase.PENDING and mains_dead:
                    if ever_started:
                        out += self._start_hook(name)
                    else:
                        self._skip(name, time, "nothing of the allocation ran")
                        out.append(Persist())
                continue
            if mains_dead or self.stopping or failed:
                if track.phase == Phase.PENDING:
                    self._skip(name, time, "the main tasks are done")
                    out.append(Persist())
                elif mains_dead and track.phase in (Phase.RUNNING, Phase.STARTING):
                    spec = self._task_spec(name)
                    reason = "the main tasks have stopped"
                    track.phase = Phase.KILLING
                    self._event(track, time, "Killing", reason)
                    out.append(KillTask(name, spec.kill_signal, spec.kill_timeout, reason))
                elif mains_dead and track.phase == Phase.WAITING_RESTART:
                    self._skip(name, time, "the main tasks have stopped")
                    out.append(Persist())
                continue
            if track.phase != Phase.PENDING:
                continue
            if lc is None:
                ready = self._prestart_done()
            elif lc.hook == LifecycleHook.POSTSTART:
                ready = mains_started
            else:
                ready = True  # prestart
            if ready:
                out += self._start_hook(name)
        return out

    def _skip(self, name: str, time: float, why: str) -> None:
        """A task that will not run (again): dead, not failed."""
        track = self.tasks[name]
        track.phase = Phase.DEAD
        track.state.state = TaskStateName.DEAD
        track.state.finished_at = track.state.finished_at or time
        track.timer_token += 1
        self._event(track, time, "Skipped" if track.state.started_at is None else "Killed", why)

    @staticmethod
    def _tidy(out: list[Instruction]) -> list[Instruction]:
        """One Report, one Persist, at most one Cleanup (last) per step."""
        seen: set[type[Instruction]] = set()
        tidy: list[Instruction] = []
        cleanup = False
        for ins in out:
            if isinstance(ins, Cleanup):
                cleanup = True
                continue
            if isinstance(ins, (Report, Persist)):
                if type(ins) in seen:
                    continue
                seen.add(type(ins))
            tidy.append(ins)
        if cleanup:
            tidy.append(Cleanup())
        return tidy

    def health_task_states(self) -> dict[str, TaskState]:
        """The tasks a deployment's health looks at: the main tasks and the sidecars
        (hooks that run to completion are not expected to be running)."""
        if not self.hooks:
            return self.task_states()
        return {
            name: t.state for name, t in self.tasks.items() if not self._runs_to_completion(name)
        }

    # -- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
            "failed_reason": self.failed_reason,
            "cleaned_up": self.cleaned_up,
            "started": self.started,
            "ports": {k: v.model_dump() for k, v in self.ports.items()},
        }

    def restore(self, data: dict[str, Any]) -> None:
        for name, t in data.get("tasks", {}).items():
            if name in self.tasks:
                self.tasks[name] = TaskTrack.from_dict(t)
        self.failed_reason = data.get("failed_reason", "")
        self.cleaned_up = bool(data.get("cleaned_up", False))
        self.started = bool(data.get("started", False))
        self.ports = {k: AllocatedPort.model_validate(v) for k, v in data.get("ports", {}).items()}

    def task_states(self) -> dict[str, TaskState]:
        return {name: t.state for name, t in self.tasks.items()}
