"""Periodic and parameterized jobs' routes (docs/periodic.md): dispatch, force a
periodic launch, list a job's children; and the middleware that lets a child's id
(``<job>/periodic-<unix time>``, with a '/') stand in every ``/v1/job/{job_id}`` path.

Clients quote the '/' (``%2F``, as every SDK call quotes its path segments); the ASGI
server decodes the path before routing, which would make the id two segments.
:class:`ChildIdPaths` re-derives the path of job routes from the raw one, keeping an
encoded '/' encoded, and ``ApiContext.resolve_job`` decodes it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from podium.models.dispatch import DispatchAnswer, DispatchRequest, decode_payload
from podium.models.periodic import ForceAnswer
from podium.models.views import JobListItem
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND, Index, Wait
from podium.server.children import children
from podium.server.routes.common import CHILD_SLASH, ApiContext, json_answer
from podium.server.routes.jobs import job_item
from podium.state import ALLOCS, JOBS

PREFIXES = (b"/v1/job/", b"/ui/fragment/job/")


class ChildIdPaths:
    """Keep ``%2F`` encoded in the paths of job routes (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw: bytes | None = scope.get("raw_path")
            if raw and raw.startswith(PREFIXES) and b"%2f" in raw.lower():
                raw = raw.split(b"?", 1)[0]
                segments = raw.decode("latin-1").split("/")
                path = "/".join(unquote(s).replace("/", CHILD_SLASH) for s in segments)
                scope = {**scope, "path": scope.get("root_path", "") + path}
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(ChildIdPaths)


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server, store = ctx.server, ctx.store

    @router.post(
        "/v1/job/{job_id}/dispatch",
        tags=["jobs"],
        response_model=DispatchAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def dispatch_job(
        job_id: str, body: DispatchRequest, namespace: str = "default"
    ) -> Response:
        """Dispatch a parameterized job: a child job ``<job>/dispatch-<time>-<hex>`` with
        ``meta`` (merged into the job's) and ``payload`` (base64, at most 16 KiB).  With
        ``idempotency_token``, a repeated dispatch answers the first one's child."""
        job = ctx.resolve_job(job_id, namespace)
        payload = decode_payload(body.payload) if body.payload is not None else None
        d = server.dispatcher.dispatch(
            job.id,
            job.namespace,
            meta=body.meta,
            payload=payload,
            token=body.idempotency_token,
        )
        answer = DispatchAnswer(
            dispatched_job_id=d.dispatched_job_id,
            eval_id=d.eval_id,
            index=d.index,
            existing=d.existing,
        )
        return json_answer(answer, DispatchAnswer, d.index)

    @router.post(
        "/v1/job/{job_id}/periodic/force",
        tags=["jobs"],
        response_model=ForceAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def force_periodic(job_id: str, namespace: str = "default") -> Response:
        """Launch a periodic job now, whatever its schedule (the schedule is unchanged)."""
        job = ctx.resolve_job(job_id, namespace)
        launched = server.periodic.force(job.id, job.namespace)
        answer = ForceAnswer(job_id=launched.job_id, eval_id=launched.eval_id, index=launched.index)
        return json_answer(answer, ForceAnswer, launched.index)

    @router.get(
        "/v1/job/{job_id}/children",
        tags=["jobs"],
        response_model=list[JobListItem],
        responses=NOT_FOUND,
    )
    async def job_children(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        """A periodic or parameterized job's launches and dispatches, oldest first."""
        job = ctx.resolve_job(job_id, namespace)
        idx = await ctx.blocking(index, wait, JOBS, ALLOCS)
        items: list[Any] = [job_item(store, c) for c in children(store, job)]
        return json_answer(items, list[JobListItem], idx)
