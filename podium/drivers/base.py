"""The driver interface: how the agent starts, watches, stops and re-attaches tasks.

Every driver implements :class:`Driver`.  The agent persists the
:class:`TaskHandle` a driver returns from ``start`` so that, after the agent
itself restarts (even after ``kill -9``), ``recover`` can re-attach to the
still-running task without restarting it and ``wait`` still reports its exit.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from podium.errors import DriverError
from podium.models import AllocatedPort, DriverInfo, Resources
from podium.models.devices import AllocatedDevices


@dataclass(frozen=True)
class TaskMount:
    """A host volume a task mounts (docs/volumes.md): the agent resolved ``source`` from
    its ``--host-volume`` declarations; each driver shows it at ``destination`` its own
    way (a bind mount for exec and docker, a link in the task dir for raw_exec)."""

    volume: str
    """The group's name for it (``PODIUM_VOLUME_<VOLUME>``)."""
    source: str
    """The host path."""
    destination: str
    read_only: bool = False


@dataclass
class TaskContext:
    """Everything a driver needs to start one task."""

    alloc_id: str
    task_name: str
    job_id: str
    group: str
    alloc_index: int
    node_id: str
    config: BaseModel
    """The driver's validated config (see :mod:`podium.models.taskconfig`), with ``${VAR}`` expanded."""
    env: dict[str, str]
    resources: Resources
    alloc_dir: str
    task_dir: str
    stdout_path: str
    stderr_path: str
    user: str | None = None
    kill_signal: str = "SIGTERM"
    kill_timeout: float = 5.0
    ports: dict[str, AllocatedPort] = field(default_factory=dict)
    """The allocation's ports by group label (host port and IP), for drivers that map them."""
    data_dir: str = ""
    """The starting agent's data dir: what a driver marks its tasks with (a container
    label), so that an agent on the same data dir finds them after its state was lost
    (:meth:`Driver.reap_orphans`)."""
    mounts: list[TaskMount] = field(default_factory=list)
    """Host volumes to show the task (docs/volumes.md)."""
    devices: list[AllocatedDevices] = field(default_factory=list)
    """Device instances the scheduler gave this task; their ids are already in ``env``
    (docs/devices.md); docker also asks the engine for real NVIDIA GPUs."""

    @property
    def task_id(self) -> str:
        return f"{self.alloc_id}/{self.task_name}"


@dataclass(frozen=True)
class TaskOwner:
    """Who a task's files (rendered templates, its ``secrets/`` dir) belong to: the user the
    task runs as, so that it alone can read them (files 0600, directories 0700).

    ``any_user``: the driver cannot know the task's user (a container whose user only its
    image resolves), so the files are made readable by every user (0644, directories
    0755) and owned by ``uid``/``gid`` (the agent's own); see the drivers' README."""

    uid: int
    gid: int
    any_user: bool = False

    @property
    def file_mode(self) -> int:
        return 0o644 if self.any_user else 0o600

    @property
    def dir_mode(self) -> int:
        return 0o755 if self.any_user else 0o700


@dataclass
class TaskHandle:
    """What the agent stores to find a running task again.  JSON-serialisable."""

    driver: str
    task_id: str
    pid: int | None = None
    started_at: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "task_id": self.task_id,
            "pid": self.pid,
            "started_at": self.started_at,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskHandle:
        return cls(
            driver=data["driver"],
            task_id=data["task_id"],
            pid=data.get("pid"),
            started_at=float(data.get("started_at", 0.0)),
            state=dict(data.get("state") or {}),
        )


@dataclass
class ExitResult:
    """How a task ended."""

    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    error: str | None = None
    """Set when the driver lost track of the task (e.g. it vanished while the agent was down)."""

    @property
    def successful(self) -> bool:
        return (
            self.exit_code == 0
            and self.signal is None
            and not self.oom_killed
            and self.error is None
        )


@dataclass
class Orphan:
    """A task an earlier agent on this data dir started that no allocation owns any more,
    and that :meth:`Driver.reap_orphans` stopped."""

    driver: str
    alloc_id: str
    task: str
    ref: str
    """What was stopped: ``pid 123 (shim)``, ``container podium-web-… (0123456789ab)``."""

    def __str__(self) -> str:
        return f"{self.driver} task {self.alloc_id}/{self.task}, {self.ref}"


def allocs_roots(data_dir: str) -> set[str]:
    """The allocation directory an agent on ``data_dir`` starts tasks under, as its tasks'
    paths spell it (as given, and absolute)."""
    return {str(Path(data_dir) / "allocs"), str(Path(data_dir).absolute() / "allocs")}


@dataclass
class DriverHealth:
    """A health verdict the driver itself keeps for a task (Docker's HEALTHCHECK)."""

    healthy: bool | None
    """None while the driver has no verdict yet (Docker's "starting")."""
    output: str = ""


@dataclass
class TaskStats:
    cpu_percent: float = 0.0
    """Percent of one core, since the driver's previous sample of the task."""
    memory_rss_bytes: int = 0
    """What the task's cgroup or container is charged, else its processes' RSS."""
    timestamp: float = 0.0
    memory_limit_bytes: int | None = None
    """The hard memory limit the task runs under (its cgroup's, its container's)."""
    pids: int = 0
    """How many processes the task runs."""


class ExecSession(abc.ABC):
    """A command running in a task's context (``podium alloc exec``), with a pty
    (``tty``: stdout only, and resizable) or with pipes (stdout and stderr apart)."""

    tty: bool = False

    @abc.abstractmethod
    async def read(self) -> tuple[str, bytes] | None:
        """The next output: ``("stdout" | "stderr", bytes)``; None once all is read."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send ``data`` to the command's stdin (dropped once the command has exited)."""

    @abc.abstractmethod
    async def close_stdin(self) -> None:
        """End the command's stdin (EOF; with a TTY, the terminal's EOF character)."""

    @abc.abstractmethod
    async def resize(self, height: int, width: int) -> None:
        """Set the terminal's size (SIGWINCH); nothing without a TTY."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """The command's exit code (128+N when signal N killed it)."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """End the command now (the client went away).  Idempotent."""


class Driver(abc.ABC):
    """One way of running a task.  Implementations must be safe to call from one event loop."""

    name: str = ""

    @abc.abstractmethod
    def fingerprint(self) -> DriverInfo:
        """Whether this driver works on this node (and why not, in ``description``)."""

    @abc.abstractmethod
    async def start(self, ctx: TaskContext) -> TaskHandle:
        """Start the task and return at once.  Raises DriverError when it cannot start."""

    @abc.abstractmethod
    async def wait(self, handle: TaskHandle) -> ExitResult:
        """Resolve when the task has exited; callable again after ``recover``."""

    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        """The task's exit as a future, so the agent can watch a running task with a done
        callback instead of a task of its own awaiting ``wait`` (~1.5 KB per running task).

        This default wraps ``wait`` in a task; the caller cancels that task when it stops
        watching.  A driver that keeps a future per task answers that future itself: one
        that is not an :class:`asyncio.Task` belongs to the driver, and the caller only
        removes its callback, never cancels it.  May raise as ``wait`` would."""
        return asyncio.get_running_loop().create_task(self.wait(handle))

    @abc.abstractmethod
    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        """Send ``signal`` to the task's whole process group, wait ``timeout``, then SIGKILL."""

    @abc.abstractmethod
    async def recover(self, handle: TaskHandle) -> bool:
        """Re-attach to a task started by an earlier agent process.

        True when the task is still running (``wait`` then tracks it); False when it
        has exited meanwhile (``wait`` then answers its recorded exit at once).
        """

    @abc.abstractmethod
    async def stats(self, handle: TaskHandle) -> TaskStats:
        """CPU and memory use of the task."""

    async def health(self, handle: TaskHandle) -> DriverHealth | None:
        """The driver's own health verdict for the task, or None when it keeps none.

        The agent polls it like a check (see :mod:`podium.agent.checks`).
        """
        return None

    def keeps_health(self) -> bool:
        """Whether :meth:`health` may answer a verdict (so the agent runs a check loop for
        the driver's tasks).  By default: whether the driver overrides ``health``."""
        return type(self).health is not Driver.health

    def owns_task_files(self) -> bool:
        """Whether :meth:`task_owner` may name an owner other than the agent's own user
        (so the agent builds the task's context to ask).  By default: whether the driver
        overrides ``task_owner``."""
        return type(self).task_owner is not Driver.task_owner

    def stop_unrecorded(self, task_dir: str) -> None:  # noqa: B027 - optional hook
        """Stop an instance of the task in ``task_dir`` that an earlier agent started but
        never recorded (it died between the start and saving the handle), if one runs.
        Drivers whose tasks leave no trace in their task dir keep this default: nothing."""

    async def remove_orphans(
        self, live_alloc_ids: Iterable[str], node_id: str | None = None
    ) -> list[str]:
        """Remove what this node's tasks left behind for allocations no longer in
        ``live_alloc_ids`` (containers, networks); answers what was removed.  The agent
        calls it once, after its first sync.  Default: nothing to remove."""
        return []

    def task_owner(self, ctx: TaskContext) -> TaskOwner | None:
        """The owner of the task's files (templates, secrets), or None for the agent's own
        user (drivers that run tasks as the agent's user).  Raises DriverError when the
        task may not run (a refused user): the start fails as it would anyway."""
        return None

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """Send ``signal`` to the task (a template's ``change_mode: signal``)."""
        raise NotImplementedError(f"driver {self.name} cannot signal its tasks")

    async def exec(
        self, handle: TaskHandle, ctx: TaskContext, command: list[str], tty: bool
    ) -> ExecSession:
        """Run ``command`` in the running task's context (its namespaces, root, user,
        directory and environment; no more than the task itself may reach).  Raises
        DriverError when it cannot (the message is the client's)."""
        raise DriverError(f"driver {self.name} cannot run commands in its tasks")

    async def destroy(self, handle: TaskHandle) -> None:  # noqa: B027 - optional hook
        """Release what the task held on the node (cgroups, status files).  Idempotent."""

    async def reap_orphans(self, data_dir: str, owned: Collection[str]) -> list[Orphan]:
        """Stop the tasks this driver started for an agent on ``data_dir`` whose
        allocation is not in ``owned`` (the allocations this agent has, and re-attaches
        to); return what was stopped.

        The agent calls it once at start, after re-attaching: an agent whose state
        (``agent.db``, or the whole data dir) was lost while its tasks ran comes back as a
        new node, and nothing else would ever stop the old tasks.  Only tasks marked with
        this very data dir are candidates, never another agent's on the same machine.
        Drivers whose tasks cannot outlive the agent keep this default: nothing."""
        return []
