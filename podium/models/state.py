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
    # -- job types (docs/periodic.md) -------------------------------------------------
    parent_id: str = ""
    """A periodic launch or a dispatch: the job it is a child of ("" for other jobs)."""
    periodic_launch: float | None = None
    """A periodic job: the scheduled instant of its last launch (run or skipped), kept
    through new versions so that no launch ever runs twice, across leaders too."""
    dispatch_token: str = ""
    """A dispatched child: the idempotency token its dispatch carried ("" for none)."""

    def template(self) -> bool:
        """A periodic or parameterized job: never placed itself, only its children."""
        return self.spec.periodic is not None or self.spec.parameterized is not None


class JobVersion(BaseModel):
    """One stored version of a job, as it was registered."""

    job_id: str
    namespace: str = "default"
    """Rows stored before namespaces lack it: they were all in ``default``."""
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


def next_job(
    spec: JobSpec, current: Job | None, index: int, now: float, namespace: str = "default"
) -> tuple[Job, bool]:
    """The job as registering ``spec`` over ``current`` at ``index`` stores it in
    ``namespace``, and whether that is a new version (the spec changed, or the job was
    stopped)."""
    changed = current is None or current.stop or current.spec != spec
    if current is None:
        version = 0
        create_index = index
    else:
        version = current.version + 1 if changed else current.version
        create_index = current.create_index
    job = Job(
        id=spec.job,
        namespace=namespace,
        version=version,
        type=spec.type.value,
        priority=spec.priority,
        stop=False,
        spec=spec,
        submit_time=now if changed else (current.submit_time if current else now),
        create_index=create_index,
        modify_index=index,
        job_modify_index=index if changed or current is None else current.job_modify_index,
    )
    if current is not None:
        job.parent_id = current.parent_id
        job.periodic_launch = current.periodic_launch
        job.dispatch_token = current.dispatch_token
    return job, changed
