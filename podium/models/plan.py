"""Plans: what a scheduler wants changed, before the plan applier commits it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from podium.models.alloc import Allocation, ClientStatus
from podium.models.deployment import Deployment
from podium.models.evaluation import Evaluation


class AllocStop(BaseModel):
    """Stop (or mark lost) an existing allocation."""

    alloc_id: str
    node_id: str
    description: str
    client_status: ClientStatus | None = None
    """Set to ``lost`` when the node is gone; otherwise the agent reports the outcome."""
    followup_eval_id: str | None = None


class Preemption(BaseModel):
    """Stop an allocation of a lower-priority job to make room for one this plan places.

    Besides the victim, it carries what the scheduler saw of it (its job's version and
    priority) so the plan applier can tell a stale preemption: the victim gone, moved,
    already stopped, or its job changed since (``podium.scheduler.commit``)."""

    alloc_id: str
    node_id: str
    job_id: str
    namespace: str = "default"
    job_version: int = 0
    priority: int = 50
    """The victim's job priority when the scheduler chose it."""
    group: str = ""
    name: str = ""
    """The victim's instance name (``job.group[i]``), for people."""
    cpu: int = 0
    memory: int = 0
    """What stopping the victim frees (its resources)."""
    preempted_by_alloc: str
    """The allocation this plan places in the room the victim leaves."""
    preempted_by_job: str
    description: str = ""


class GroupChanges(BaseModel):
    """The scheduler's desired changes for one group, for people and for `job plan`."""

    place: int = 0
    stop: int = 0
    ignore: int = 0
    in_place_update: int = 0
    destructive_update: int = 0
    reschedule_now: int = 0
    reschedule_later: int = 0
    lost: int = 0
    canary: int = 0
    """New instances placed beside the old ones until the deployment is promoted."""


class Plan(BaseModel):
    eval_id: str
    job_id: str
    job_version: int | None = None
    priority: int = 50
    snapshot_index: int = 0
    stops: list[AllocStop] = Field(default_factory=list)
    placements: list[Allocation] = Field(default_factory=list)
    """New allocations and in-place updates of existing ones (same id)."""
    changes: dict[str, GroupChanges] = Field(default_factory=dict)
    deployment: Deployment | None = None
    """A deployment this plan creates, or the current one with canaries it placed."""
    cancel_deployments: dict[str, str] = Field(default_factory=dict)
    """Active deployments of older versions (or of a stopped job) to cancel: id -> why."""
    preemptions: list[Preemption] = Field(default_factory=list)
    """Allocations of lower-priority jobs this plan stops to make room (podium.scheduler.preempt)."""

    def empty(self) -> bool:
        return (
            not self.stops
            and not self.placements
            and self.deployment is None
            and not self.cancel_deployments
            and not self.preemptions
        )


class SchedulerResult(BaseModel):
    """Everything one scheduler run wants: a plan plus evaluation bookkeeping."""

    plan: Plan
    eval_update: Evaluation
    new_evals: list[Evaluation] = Field(default_factory=list)
    """Blocked evaluations (retry when capacity appears) and delayed follow-ups."""


class PlanResult(BaseModel):
    index: int
    committed_placements: int = 0
    committed_stops: int = 0
    committed_preemptions: int = 0
    rejected_nodes: list[str] = Field(default_factory=list)
    """Nodes on which placements no longer fit at commit time; the eval is re-run."""
