"""Deployments: one rollout of a new job version, group by group, gated on health.

A deployment is created by the scheduler when a service job with an ``update``
block gets a version whose tasks changed; the server's deployment watcher then
moves it along (from the health the agents report) to ``successful`` or
``failed``.  The counts here are what ``podium deployment status`` shows.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class DeploymentStatus(StrEnum):
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Superseded by a newer version of the job, or the job was stopped."""

    @property
    def active(self) -> bool:
        return self is DeploymentStatus.RUNNING


class DeploymentGroup(BaseModel):
    """One group's progress in a deployment."""

    desired_total: int = 0
    desired_canaries: int = 0
    placed_canaries: list[str] = Field(default_factory=list)
    promoted: bool = False
    auto_revert: bool = False
    auto_promote: bool = False
    progress_deadline: float = 0.0
    require_progress_by: float | None = None
    """When the deployment fails unless another instance becomes healthy first."""
    placed_allocs: int = 0
    healthy_allocs: int = 0
    unhealthy_allocs: int = 0


class Deployment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    namespace: str = "default"
    job_id: str
    job_version: int
    job_modify_index: int = 0
    status: DeploymentStatus = DeploymentStatus.RUNNING
    status_description: str = "deployment is running"
    groups: dict[str, DeploymentGroup] = Field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0
    create_time: float = 0.0
    modify_time: float = 0.0

    def active(self) -> bool:
        return self.status.active

    def has_unpromoted_canaries(self) -> bool:
        return any(g.desired_canaries and not g.promoted for g in self.groups.values())
