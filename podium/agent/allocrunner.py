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
    RestartMode,
    RestartPolicy,
    TaskEvent,
    TaskState,
    TaskStateName,
)

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

    # -- helpers
    def _group(self) -> Any:
        return self.spec.groups[self.alloc.group]

    def _policy(self) -> RestartPolicy:
        policy: RestartPolicy = self._group().restart.with_defaults(self.spec.type)
        return policy

    def _task_spec(self, name: str) -> Any:
        return self._group().tasks[name]

    @property
    def stopping(self) -> bool:
        return self.alloc.desired_status == DesiredStatus.STOP

    def client_status(self) -> ClientStatus:
        tracks = list(self.tasks.values())
        if all(t.phase == Phase.DEAD for t in tracks):
            # stopped by the server before finishing is complete too, not failed
            failed = any(t.state.failed for t in tracks)
            return ClientStatus.FAILED if failed else ClientStatus.COMPLETE
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
        return "tasks are starting"

    def terminal(self) -> bool:
        return all(t.phase == Phase.DEAD for t in self.tasks.values())

    @staticmethod
    def _event(track: TaskTrack, time: float, type_: str, message: str = "", **kw: Any) -> None:
        track.state.add_event(TaskEvent(time=time, type=type_, message=message, **kw))

    # -- the machine
    def handle(self, event: Event) -> list[Instruction]:
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
        if self.stopping and not was_stopping:
            return self._kill_all(ev.time, ev.alloc.desired_description or "allocation stopped")
        return [Persist()]

    def _kill_all(self, time: float, reason: str) -> list[Instruction]:
        out: list[Instruction] = []
        for name, track in self.tasks.items():
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
        if self.stopping or was_killing or sibling_failed:
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
        if self.stopping or track.phase == Phase.KILLING:
            return self._dead(ev.task, ev.time, failed=False)
        if not ev.recoverable:
            self.failed_reason = f"task {ev.task!r} could not start: {ev.error}"
            return self._fail(ev.task, ev.time, ev.error)
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
        if track.phase == Phase.KILLING or self.stopping:
            self._event(track, ev.time, "Killed", "task stopped")
            return self._dead(ev.task, ev.time, failed=False)
        success = ev.exit_code == 0 and ev.signal is None and not ev.oom_killed and not ev.error
        if success and self.spec.type == JobType.BATCH:
            return self._dead(ev.task, ev.time, failed=False)
        return self._maybe_restart(ev.task, ev.time, failed_run=not success)

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
        if ev.token != track.timer_token or track.phase != Phase.WAITING_RESTART:
            return []
        if self.stopping:
            return self._dead(ev.task, ev.time, failed=False)
        track.phase = Phase.STARTING
        if not track.uncounted_restart:
            track.state.restarts += 1
        track.uncounted_restart = False
        track.state.last_restart = ev.time
        return [StartTask(ev.task), Persist()]

    def _fail(self, task: str, time: float, reason: str) -> list[Instruction]:
        out = self._dead(task, time, failed=True)
        # One failed task fails the allocation: stop its siblings (as Nomad does).
        for name, track in self.tasks.items():
            if name == task:
                continue
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
