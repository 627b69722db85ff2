"""Allocations: one instance of a group, placed on one node."""

from __future__ import annotations

from dataclasses import field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass

from podium.models.devices import AllocatedDevices
from podium.models.job import Resources

MAX_TASK_EVENTS = 10


class DesiredStatus(StrEnum):
    RUN = "run"
    STOP = "stop"


class ClientStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self in (ClientStatus.COMPLETE, ClientStatus.FAILED, ClientStatus.LOST)


class TaskStateName(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DEAD = "dead"


# TaskEvent and TaskState are slotted pydantic dataclasses, not models: the server keeps
# one task state and a few events for each of its allocations (a million at C1M's size),
# and a model's instance dict made them ~1 KB more per allocation (bench/RESULTS.md).
# They validate, serialise and appear in the OpenAPI document as models do; use
# ``TASK_STATE`` (a TypeAdapter) where a model method would be called.


@dataclass(slots=True)
class TaskEvent:
    """Something that happened to a task, for people (``alloc status``)."""

    time: float
    type: str
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False


@dataclass(slots=True)
class TaskState:
    state: TaskStateName = TaskStateName.PENDING
    failed: bool = False
    restarts: int = 0
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_restart: float | None = None
    events: list[TaskEvent] = field(default_factory=list)

    def add_event(self, event: TaskEvent) -> None:
        self.events.append(event)
        if len(self.events) > MAX_TASK_EVENTS:
            del self.events[: len(self.events) - MAX_TASK_EVENTS]


TASK_STATE: TypeAdapter[TaskState] = TypeAdapter(TaskState)


class AllocatedPort(BaseModel):
    """A port an allocation holds on its node (``label`` → number), chosen by the agent
    for a dynamic port, or the group's static one."""

    value: int
    host_ip: str = ""


class AllocHealth(BaseModel):
    """An allocation's standing in its deployment, as its agent judged it.

    ``healthy`` stays None until the agent decides: True once every task has
    run (and every check passed) for ``min_healthy_time``; False when a task
    failed or ``healthy_deadline`` passed first.  ``canary`` marks a canary
    of an unpromoted deployment.
    """

    healthy: bool | None = None
    timestamp: float = 0.0
    canary: bool = False
    description: str = ""


class CheckStatus(StrEnum):
    PENDING = "pending"
    PASSING = "passing"
    CRITICAL = "critical"


class CheckResult(BaseModel):
    """The latest outcome of one health check of one allocation."""

    name: str
    service: str
    status: CheckStatus = CheckStatus.PENDING
    output: str = ""
    time: float = 0.0
    consecutive_failures: int = 0


class RescheduleEvent(BaseModel):
    time: float
    prev_alloc_id: str
    prev_node_id: str
    delay: float


class Allocation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    eval_id: str
    name: str
    namespace: str = "default"
    job_id: str
    job_version: int
    group: str
    index: int
    node_id: str
    node_name: str = ""
    resources: Resources
    task_resources: dict[str, Resources] = Field(default_factory=dict)
    desired_status: DesiredStatus = DesiredStatus.RUN
    desired_description: str = ""
    client_status: ClientStatus = ClientStatus.PENDING
    client_description: str = ""
    task_states: dict[str, TaskState] = Field(default_factory=dict)
    ports: dict[str, AllocatedPort] = Field(default_factory=dict)
    previous_allocation: str | None = None
    next_allocation: str | None = None
    reschedule_events: list[RescheduleEvent] = Field(default_factory=list)
    followup_eval_id: str | None = None
    deployment_id: str | None = None
    """The deployment that placed (or last adopted) this allocation."""
    deployment_status: AllocHealth | None = None
    checks: dict[str, CheckResult] = Field(default_factory=dict)
    """The agent's latest check results, by check name."""
    preempted_by_alloc: str | None = None
    """The allocation whose placement stopped this one (it was preempted), if any."""
    preempted_by_job: str | None = None
    """That allocation's job."""
    preempted_allocations: list[str] | None = None
    """The allocations of lower-priority jobs this one's placement preempted (None: none)."""
    devices: list[AllocatedDevices] = Field(default_factory=list, exclude_if=lambda v: not v)
    """The device instances the scheduler gave the tasks (docs/devices.md)."""
    create_index: int = 0
    modify_index: int = 0
    create_time: float = 0.0
    modify_time: float = 0.0

    def terminal(self) -> bool:
        """Neither running nor going to: stopped by the server or finished on the node."""
        return self.desired_status == DesiredStatus.STOP or self.client_status.terminal

    def health(self) -> bool | None:
        """The agent's deployment-health verdict: True, False, or None (not judged yet)."""
        ds = self.deployment_status
        return ds.healthy if ds is not None else None

    def client_terminal(self) -> bool:
        return self.client_status.terminal

    def uses_resources(self) -> bool:
        """Whether the node must still count this allocation's resources.

        A stopped allocation keeps its resources until its tasks have exited,
        so nothing is placed on top of a process still shutting down.
        """
        return not self.client_status.terminal


class AllocClientUpdate(BaseModel):
    """What an agent reports about one of its allocations."""

    id: str
    client_status: ClientStatus
    client_description: str = ""
    task_states: dict[str, TaskState] = Field(default_factory=dict)
    ports: dict[str, AllocatedPort] = Field(default_factory=dict)
    deployment_status: AllocHealth | None = None
    """Sent once the agent has judged the allocation's health (it does not change after)."""
    checks: dict[str, CheckResult] | None = None
    """Every check's latest result; None when unchanged since the last report."""
