"""``/v1/deployments`` and ``/v1/deployment/{deployment_id}``: rollouts, and the people's
promote and fail (the watcher, podium.server.deployments, does the rest; a job's own
deployments are ``/v1/job/{job_id}/deployment(s)``, in :mod:`podium.server.routes.jobs`).
Declared on the app's router by :func:`podium.server.api.create_app`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from podium.models import Allocation, Deployment
from podium.models.acl import READ_JOB
from podium.models.api import EvalAnswer
from podium.server import acl
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND, Index, Wait
from podium.server.namespaces import many_namespaces as _ns_many
from podium.server.routes.common import ApiContext, json_answer, sorted_allocs
from podium.state import ALLOCS
from podium.state.store import DEPLOYMENTS


class PromoteRequest(BaseModel):
    groups: list[str] = []
    """Only these groups (default: every group with canaries)."""


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server, store = ctx.server, ctx.store

    @router.get(
        "/v1/deployments",
        tags=["deployments"],
        response_model=list[Deployment],
        responses=NOT_FOUND,
    )
    async def list_deployments(
        job: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's deployments (``job`` needs one namespace)."""
        idx = await ctx.blocking(index, wait, DEPLOYMENTS)
        ns = _ns_many(namespace)
        if job is not None:
            found_job = ctx.resolve_job(job, namespace)
            found = store.deployments_by_job(found_job.id, found_job.namespace)
        else:
            found = sorted(
                (d for d in store.deployments() if ns is None or d.namespace == ns),
                key=lambda d: (d.create_index, d.id),
                reverse=True,
            )
        found = [d for d in found if acl.can(READ_JOB, d.namespace)]
        return json_answer(found, list[Deployment], idx)

    @router.get(
        "/v1/deployment/{deployment_id}",
        tags=["deployments"],
        response_model=Deployment,
        responses=NOT_FOUND,
    )
    async def get_deployment(
        deployment_id: str,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        dep = ctx.resolve_deployment(deployment_id, namespace)
        idx = await ctx.blocking(index, wait, DEPLOYMENTS)
        return json_answer(store.deployment(dep.id) or dep, Deployment, idx)

    @router.get(
        "/v1/deployment/{deployment_id}/allocations",
        tags=["deployments"],
        response_model=list[Allocation],
        responses=NOT_FOUND,
    )
    async def deployment_allocs(
        deployment_id: str,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        dep = ctx.resolve_deployment(deployment_id, namespace)
        idx = await ctx.blocking(index, wait, ALLOCS)
        allocs = [
            a for a in store.allocs_by_job(dep.job_id, dep.namespace) if a.deployment_id == dep.id
        ]
        return json_answer(sorted_allocs(allocs), list[Allocation], idx)

    @router.post(
        "/v1/deployment/{deployment_id}/promote",
        tags=["deployments"],
        response_model=EvalAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def promote_deployment(
        deployment_id: str, body: PromoteRequest | None = None, namespace: str = "default"
    ) -> Response:
        dep = ctx.resolve_deployment(deployment_id, namespace)
        groups = body.groups if body is not None else None
        eval_id, idx = server.promote_deployment(dep.id, groups or None)
        return json_answer({"eval_id": eval_id, "index": idx}, dict[str, Any], idx)

    @router.post(
        "/v1/deployment/{deployment_id}/fail",
        tags=["deployments"],
        response_model=EvalAnswer,
        responses={**NOT_FOUND, **CONFLICT},
    )
    async def fail_deployment(deployment_id: str, namespace: str = "default") -> Response:
        dep = ctx.resolve_deployment(deployment_id, namespace)
        eval_id, idx = server.fail_deployment(dep.id)
        return json_answer({"eval_id": eval_id, "index": idx}, dict[str, Any], idx)
