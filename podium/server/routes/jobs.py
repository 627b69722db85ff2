"""``/v1/jobs`` and ``/v1/job/{job_id}/...``: register, plan (a dry run), scale, revert,
stop and purge, and what belongs to a job (its allocations, versions, evaluations and
deployments).  Declared on the app's router by :func:`podium.server.api.create_app`;
the work is :class:`podium.server.core.Server`'s, this only translates requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field, StrictBool, StrictInt

from podium.errors import NotFound
from podium.models import Allocation, Deployment, Evaluation, Job, JobSpec, JobStatus, JobVersion
from podium.models.acl import LIST_JOBS
from podium.models.api import EvalAnswer, RegisterAnswer, ScaleAnswer
from podium.models.views import GroupSummary, JobInfo, JobListItem, JobPlanResult
from podium.server import acl
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND, Index, SchemaOf, Wait
from podium.server.namespaces import many_namespaces as _ns_many
from podium.server.routes.common import (
    ApiContext,
    error_answer,
    json_answer,
    parse_wait,
    registered,
    sorted_allocs,
)
from podium.spec import validate_job_dict
from podium.state import ALLOCS, EVALS, JOBS, VERSIONS, StateStore
from podium.state.store import DEPLOYMENTS


# --------------------------------------------------------------------------- bodies
class JobRegisterRequest(BaseModel):
    job: Annotated[dict[str, Any], SchemaOf(JobSpec)]
    """The job file as data; checked by podium.spec (400 with ``issues``)."""
    check_index: StrictInt | None = None
    force_reschedule: StrictBool = False


class JobPlanRequest(BaseModel):
    job: Annotated[dict[str, Any], SchemaOf(JobSpec)]
    diff: StrictBool = True


class RevertRequest(BaseModel):
    version: StrictInt
    enforce_prior_version: StrictInt | None = None
    reason: str = ""


class ScaleRequest(BaseModel):
    group: str
    count: int = Field(ge=0, strict=True)
    """Bounded by the server's --max-count (podium.server.limits)."""
    message: str = Field(default="", max_length=1024)
    """Why (kept on the scaling event and the job version)."""


def summarize(store: StateStore, job: Job) -> dict[str, GroupSummary]:
    """Each group's allocations by status, and what blocked evaluations still queue."""
    out = {g: GroupSummary() for g in job.spec.groups}
    for group, by_status in store.job_alloc_counts(job.id, job.namespace).items():
        out[group] = GroupSummary(**by_status)
    for ev in store.evals_by_job(job.id, job.namespace):
        if ev.status.value == "blocked":
            for g, n in ev.queued_allocations.items():
                if g in out:
                    out[g].queued += n
    return out


def job_status(job: Job, summary: dict[str, GroupSummary]) -> JobStatus:
    if job.template():  # periodic/parameterized: running while it may launch children
        return JobStatus.DEAD if job.stop else JobStatus.RUNNING
    live = sum(s.pending + s.running for s in summary.values())
    if live:
        return JobStatus.RUNNING
    if job.stop:
        return JobStatus.DEAD
    if job.type == "batch":
        done = all(
            s.complete >= job.spec.groups[g].count
            for g, s in summary.items()
            if g in job.spec.groups
        )
        if done:
            return JobStatus.DEAD
    return JobStatus.PENDING


def job_item(store: StateStore, job: Job) -> JobListItem:
    summary = summarize(store, job)
    return JobListItem(
        id=job.id,
        namespace=job.namespace,
        type=job.type,
        priority=job.priority,
        status=job_status(job, summary),
        version=job.version,
        stop=job.stop,
        submit_time=job.submit_time,
        modify_index=job.modify_index,
        job_modify_index=job.job_modify_index,
        summary=summary,
        parent_id=job.parent_id,
        kind=job_kind(job),
    )


def job_kind(job: Job) -> str:
    """``periodic`` or ``parameterized`` for a template job, else ""."""
    if job.spec.periodic is not None:
        return "periodic"
    return "parameterized" if job.spec.parameterized is not None else ""


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server, store = ctx.server, ctx.store

    # ---------------------------------------------------------------- jobs
    @router.post(
        "/v1/jobs",
        tags=["jobs"],
        response_model=RegisterAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def register_job(body: JobRegisterRequest, namespace: str = "default") -> Response:
        """``namespace`` (default ``default``) is where the job goes: a job file that names
        another one is refused (400), so the query alone says which namespace a request
        touches (what an access check reads).  The CLI and SDK send a file's own."""
        spec = validate_job_dict(body.job)
        r = server.register_job(
            spec, body.check_index, force_reschedule=body.force_reschedule, namespace=namespace
        )
        return registered(r)

    @router.get("/v1/jobs", tags=["jobs"], response_model=list[JobListItem])
    async def list_jobs(
        prefix: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's jobs."""
        idx = await ctx.blocking(index, wait, JOBS, ALLOCS)
        jobs = sorted(store.jobs(_ns_many(namespace)), key=lambda j: (j.id, j.namespace))
        jobs = [j for j in jobs if acl.can(LIST_JOBS, j.namespace)]
        items = [job_item(store, j) for j in jobs if prefix is None or j.id.startswith(prefix)]
        return json_answer(items, list[JobListItem], idx)

    @router.get("/v1/job/{job_id}", tags=["jobs"], response_model=JobInfo, responses=NOT_FOUND)
    async def get_job(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = ctx.resolve_job(job_id, namespace)
        if index is not None:
            await store.wait_for(index, parse_wait(wait), tables=(JOBS, ALLOCS))
            job = ctx.resolve_job(job.id, namespace)
        summary = summarize(store, job)
        detail = JobInfo(**{**job.model_dump(), "spec": job.spec}, summary=summary)
        detail.status = job_status(job, summary)
        return json_answer(detail, JobInfo, store.table_index(JOBS, ALLOCS))

    @router.delete(
        "/v1/job/{job_id}", tags=["jobs"], response_model=EvalAnswer, responses=NOT_FOUND
    )
    async def stop_job(job_id: str, purge: bool = False, namespace: str = "default") -> Response:
        job = ctx.resolve_job(job_id, namespace)
        eval_id, idx = server.stop_job(job.id, purge=purge, namespace=job.namespace)
        return json_answer({"eval_id": eval_id, "index": idx}, dict[str, Any], idx)

    @router.get(
        "/v1/job/{job_id}/allocations",
        tags=["jobs"],
        response_model=list[Allocation],
        responses=NOT_FOUND,
    )
    async def job_allocs(
        job_id: str,
        all: bool = True,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        job = ctx.resolve_job(job_id, namespace)
        idx = await ctx.blocking(index, wait, ALLOCS)
        allocs = store.allocs_by_job(job.id, job.namespace)
        if not all:
            allocs = [a for a in allocs if not a.terminal()]
        return json_answer(sorted_allocs(allocs), list[Allocation], idx)

    @router.get(
        "/v1/job/{job_id}/versions",
        tags=["jobs"],
        response_model=list[JobVersion],
        responses=NOT_FOUND,
    )
    async def job_versions(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = ctx.resolve_job(job_id, namespace)
        idx = await ctx.blocking(index, wait, VERSIONS)
        return json_answer(store.job_versions(job.id, job.namespace), list[JobVersion], idx)

    @router.get(
        "/v1/job/{job_id}/evaluations",
        tags=["jobs"],
        response_model=list[Evaluation],
        responses=NOT_FOUND,
    )
    async def job_evals(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = ctx.resolve_job(job_id, namespace)
        idx = await ctx.blocking(index, wait, EVALS)
        evs = sorted(store.evals_by_job(job.id, job.namespace), key=lambda e: -e.create_index)
        return json_answer(evs, list[Evaluation], idx)

    @router.post(
        "/v1/job/{job_id}/scale",
        tags=["jobs"],
        response_model=ScaleAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def scale_job(job_id: str, body: ScaleRequest, namespace: str = "default") -> Response:
        job = ctx.resolve_job(job_id, namespace)
        r = server.scale_job(
            job.id, body.group, body.count, namespace=job.namespace, message=body.message
        )
        return json_answer(
            {
                "eval_id": r.eval_id,
                "version": r.version,
                "index": r.index,
                "job_modify_index": r.job_modify_index,
                "changed": r.changed,
            },
            dict[str, Any],
            r.index,
        )

    @router.post(
        "/v1/job/{job_id}/plan",
        tags=["jobs"],
        response_model=JobPlanResult,
        responses={**NOT_FOUND, **BODY},
    )
    async def plan_job(job_id: str, body: JobPlanRequest, namespace: str = "default") -> Response:
        """A dry run of registering the spec: diff, scheduler outcome, index; writes nothing."""
        spec = validate_job_dict(body.job)
        if spec.job != job_id:
            raise ValueError(f"the path names job {job_id!r} but the spec is job {spec.job!r}")
        plan = server.plan_job(spec, diff=body.diff, namespace=namespace)
        return json_answer(plan, JobPlanResult, plan.index)

    @router.post(
        "/v1/job/{job_id}/revert",
        tags=["jobs"],
        response_model=RegisterAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def revert_job(job_id: str, body: RevertRequest, namespace: str = "default") -> Response:
        job = ctx.resolve_job(job_id, namespace)
        try:
            r = server.revert_job(
                job.id,
                body.version,
                body.enforce_prior_version,
                body.reason,
                namespace=job.namespace,
            )
        except NotFound as exc:
            versions = [v.version for v in store.job_versions(job.id, job.namespace)]
            return error_answer(404, str(exc), versions=versions)
        return registered(r)

    @router.get(
        "/v1/job/{job_id}/deployment",
        tags=["jobs"],
        response_model=Deployment | None,
        responses=NOT_FOUND,
    )
    async def job_latest_deployment(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = ctx.resolve_job(job_id, namespace)
        idx = await ctx.blocking(index, wait, DEPLOYMENTS)
        return json_answer(store.latest_deployment(job.id, job.namespace), Deployment | None, idx)

    @router.get(
        "/v1/job/{job_id}/deployments",
        tags=["jobs"],
        response_model=list[Deployment],
        responses=NOT_FOUND,
    )
    async def job_deployments(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = ctx.resolve_job(job_id, namespace)
        idx = await ctx.blocking(index, wait, DEPLOYMENTS)
        return json_answer(store.deployments_by_job(job.id, job.namespace), list[Deployment], idx)
