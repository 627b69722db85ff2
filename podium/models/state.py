"""Server-side records that wrap a spec with bookkeeping: jobs and their versions."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from podium.models.job import JobSpec


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DEAD = "dead"


class Job(BaseModel):
    """A registered job: its current spec plus what the server knows of it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    namespace: str = "default"
    version: int = 0
    type: str = "service"
    priority: int = 50
    status: JobStatus = JobStatus.PENDING
    stop: bool = False
    stable: bool = False
    spec: JobSpec
    submit_time: float = 0.0
    create_index: int = 0
    modify_index: int = 0
    job_modify_index: int = 0
    """The index of the last change to the spec (not to status): check_index compares to this."""


class JobVersion(BaseModel):
    """One stored version of a job, as it was registered."""

    job_id: str
    version: int
    stop: bool = False
    spec: JobSpec
    submit_time: float
    modify_index: int
    diff: list[str] = []
    description: str = ""
    """Why this version exists when it is not a plain registration ("reverted to version 3")."""
    stable: bool = False
    """Deployed successfully (every instance healthy): what auto_revert goes back to."""
