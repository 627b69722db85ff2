"""Read views the API answers with: stored objects plus what the server derives for them.

Shared by the server (which builds them) and the SDK (which parses them), so the
two cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from podium.models.diff import JobDiff
from podium.models.evaluation import AllocMetric
from podium.models.node import Node, NodeResources
from podium.models.plan import GroupChanges, Preemption
from podium.models.state import Job, JobStatus


class GroupSummary(BaseModel):
    """How many allocations of one group are in each client state.

    ``queued`` counts instances the scheduler could not place yet (a blocked
    evaluation is waiting for capacity).
    """

    model_config = ConfigDict(extra="ignore")

    queued: int = 0
    pending: int = 0
    running: int = 0
    complete: int = 0
    failed: int = 0
    lost: int = 0


class JobListItem(BaseModel):
    """One row of ``GET /v1/jobs``: a job without its spec, plus its group summary."""

    model_config = ConfigDict(extra="ignore")

    id: str
    namespace: str = "default"
    type: str = "service"
    priority: int = 50
    status: JobStatus = JobStatus.PENDING
    version: int = 0
    stop: bool = False
    submit_time: float = 0.0
    modify_index: int = 0
    job_modify_index: int = 0
    summary: dict[str, GroupSummary] = Field(default_factory=dict)
    parent_id: str = ""
    """A periodic launch or a dispatch: its parent job (docs/periodic.md)."""
    kind: str = ""
    """``periodic`` or ``parameterized`` for such a job itself (a template), else ""."""


class JobInfo(Job):
    """``GET /v1/job/{id}``: the job (with its spec) and its group summary."""

    summary: dict[str, GroupSummary] = Field(default_factory=dict)


class NodeInfo(Node):
    """A node as the API lists it: with the resources and ports its allocations hold."""

    alloc_count: int = 0
    allocated: NodeResources = Field(default_factory=lambda: NodeResources(cpu=0, memory=0))
    ports_in_use: list[int] = Field(default_factory=list)


CREATE_OR_DESTROY = ("place", "canary", "stop", "destructive_update", "reschedule_now", "lost")
"""The scheduler's changes that start or stop allocations (``job plan`` exits 1 on them)."""


class JobPlanResult(BaseModel):
    """``POST /v1/job/{id}/plan``: what registering a spec would do, with nothing changed.

    ``diff`` compares the spec with the running version (None when not asked
    for); ``changes`` are the scheduler's counts per group (place, stop, in-place
    and destructive updates...) and ``failed_tg_allocs`` why some instances would
    not fit, from running the real scheduler on a snapshot in which the spec is
    registered but not committed.  ``job_modify_index`` is the job's index now
    (0: no such job): pass it as ``check_index`` to register only if nothing
    changed since the plan.  ``version`` is the version registering would store.
    """

    model_config = ConfigDict(extra="ignore")

    job_id: str
    index: int = 0
    job_modify_index: int = 0
    version: int = 0
    changed: bool = True
    """Whether registering would store a new version (the spec differs, or the job is stopped)."""
    diff: JobDiff | None = None
    changes: dict[str, GroupChanges] = Field(default_factory=dict)
    failed_tg_allocs: dict[str, AllocMetric] = Field(default_factory=dict)
    queued_allocations: dict[str, int] = Field(default_factory=dict)
    """Per group, how many instances would not be placed (would wait for capacity)."""
    notes: str = ""
    """The scheduler's own summary of the dry run (the evaluation's description)."""
    warnings: list[str] = Field(default_factory=list)
    preemptions: list[Preemption] = Field(default_factory=list)
    """Allocations of lower-priority jobs the placements would preempt (stop)."""

    def creates_or_destroys(self) -> bool:
        """Whether allocations would be created or destroyed (Nomad's exit-1 rule)."""
        return any(getattr(ch, key, 0) for ch in self.changes.values() for key in CREATE_OR_DESTROY)
