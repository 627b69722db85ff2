"""``/v1/evaluations`` and ``/v1/evaluation/{eval_id}``: what the scheduler was asked to
do and what came of it (a job's own are ``/v1/job/{job_id}/evaluations``, in
:mod:`podium.server.routes.jobs`).  Declared on the app's router by
:func:`podium.server.api.create_app`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from podium.models import Evaluation
from podium.models.acl import READ_JOB
from podium.server import acl
from podium.server.api_docs import NOT_FOUND, Index, Wait
from podium.server.namespaces import many_namespaces as _ns_many
from podium.server.routes.common import ApiContext, json_answer, parse_wait
from podium.state import EVALS


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    store = ctx.store

    # ---------------------------------------------------------------- evaluations
    @router.get("/v1/evaluations", tags=["evaluations"], response_model=list[Evaluation])
    async def list_evals(
        job_id: str | None = None,
        prefix: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's evaluations."""
        idx = await ctx.blocking(index, wait, EVALS)
        ns = _ns_many(namespace)
        if job_id and ns is not None:
            evs = store.evals_by_job(job_id, ns)
        else:
            evs = store.evaluations()
            if job_id:
                evs = [e for e in evs if e.job_id == job_id]
            if ns is not None:
                evs = [e for e in evs if e.namespace == ns]
        if prefix:
            evs = [e for e in evs if e.id.startswith(prefix)]
        evs = [e for e in evs if acl.can(READ_JOB, e.namespace)]
        evs = sorted(evs, key=lambda e: -e.create_index)
        return json_answer(evs, list[Evaluation], idx)

    @router.get(
        "/v1/evaluation/{eval_id}",
        tags=["evaluations"],
        response_model=Evaluation,
        responses=NOT_FOUND,
    )
    async def get_eval(
        eval_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        ev = ctx.resolve_eval(eval_id, namespace)
        if index is not None:
            await store.wait_for(index, parse_wait(wait), tables=(EVALS,))
            ev = ctx.resolve_eval(ev.id, namespace)
        return json_answer(ev, Evaluation, store.table_index(EVALS))
