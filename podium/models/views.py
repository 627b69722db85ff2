"""Read views the API answers with: stored objects plus what the server derives for them.

Shared by the server (which builds them) and the SDK (which parses them), so the
two cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from podium.models.node import Node, NodeResources
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


class JobInfo(Job):
    """``GET /v1/job/{id}``: the job (with its spec) and its group summary."""

    summary: dict[str, GroupSummary] = Field(default_factory=dict)


class NodeInfo(Node):
    """A node as the API lists it: with the resources and ports its allocations hold."""

    alloc_count: int = 0
    allocated: NodeResources = Field(default_factory=lambda: NodeResources(cpu=0, memory=0))
    ports_in_use: list[int] = Field(default_factory=list)
