"""``/v1/allocations`` and ``/v1/allocation/{alloc_id}``, with the relay of a task's logs
from its agent (podium.server.proxy: one pooled client, a bounded number of streams at
once).  Declared on the app's router by :func:`podium.server.api.create_app`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from podium.errors import NotFound
from podium.models import Allocation
from podium.models.acl import READ_JOB
from podium.server import acl
from podium.server.api_docs import LOG_STREAM, NOT_FOUND, Index, Wait, errors
from podium.server.namespaces import many_namespaces as _ns_many
from podium.server.proxy import AgentProxy
from podium.server.routes.common import ApiContext, json_answer, parse_wait, sorted_allocs
from podium.state import ALLOCS


def add_routes(
    router: APIRouter,
    ctx: ApiContext,
    agent_proxy: AgentProxy,
    relay_ext: Callable[[str], dict[str, Any]],
) -> None:
    """``relay_ext``: the TLS extensions of a request to a node's agent (none without TLS)."""
    store = ctx.store

    # ---------------------------------------------------------------- allocations
    @router.get("/v1/allocations", tags=["allocations"], response_model=list[Allocation])
    async def list_allocs(
        prefix: str | None = None,
        job_id: str | None = None,
        node_id: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's allocations."""
        idx = await ctx.blocking(index, wait, ALLOCS)
        ns = _ns_many(namespace)
        if job_id is not None and ns is not None:
            allocs = store.allocs_by_job(job_id, ns)
        elif node_id is not None:
            allocs = store.allocs_by_node(node_id)
        else:
            allocs = store.allocs()
        if job_id is not None and ns is None:
            allocs = [a for a in allocs if a.job_id == job_id]
        if ns is not None:
            allocs = [a for a in allocs if a.namespace == ns]
        if prefix:
            allocs = [a for a in allocs if a.id.startswith(prefix)]
        allocs = [a for a in allocs if acl.can(READ_JOB, a.namespace)]
        return json_answer(sorted_allocs(allocs), list[Allocation], idx)

    @router.get(
        "/v1/allocation/{alloc_id}",
        tags=["allocations"],
        response_model=Allocation,
        responses=NOT_FOUND,
    )
    async def get_alloc(
        alloc_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        if index is not None:
            await store.wait_for(index, parse_wait(wait), tables=(ALLOCS,))
            alloc = ctx.resolve_alloc(alloc.id, namespace)
        return json_answer(alloc, Allocation, store.table_index(ALLOCS))

    @router.get(
        "/v1/allocation/{alloc_id}/logs",
        tags=["allocations"],
        responses={200: LOG_STREAM, **NOT_FOUND, **errors(429, 502)},
    )
    async def alloc_logs(
        alloc_id: str,
        task: str | None = None,
        type: str = "stdout",
        origin: str = "start",
        offset: int = 0,
        follow: bool = False,
        namespace: str = "default",
    ) -> Response:
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        if type not in ("stdout", "stderr"):
            raise ValueError("type must be 'stdout' or 'stderr'")
        if task is None:
            tasks = list(alloc.task_states) or list(alloc.task_resources)
            if len(tasks) != 1:
                raise ValueError(
                    f"allocation {alloc.id} has several tasks; name one of: " + ", ".join(tasks)
                )
            task = tasks[0]
        # Only a task of the allocation's job, and a sane offset: the agent reads files by
        # these, so nothing else is passed on to it (it checks the same again).
        spec = store.job_spec(alloc.job_id, alloc.job_version, alloc.namespace)
        group = spec.groups.get(alloc.group) if spec is not None else None
        known = set(alloc.task_states) | set(alloc.task_resources)
        if group is not None:
            known |= set(group.tasks)
        if task not in known:
            raise NotFound(
                f"allocation {alloc.id} has no task {task!r} (tasks: {', '.join(sorted(known))})"
            )
        if offset < 0:
            raise ValueError(f"offset must be a non-negative number of bytes, not {offset}")
        if origin not in ("start", "end"):
            raise ValueError(f"origin must be 'start' or 'end', not {origin!r}")
        node = store.node(alloc.node_id)
        if node is None or not node.http_addr:
            raise NotFound(f"node {alloc.node_id} of allocation {alloc.id} cannot be reached")
        url = f"{node.http_addr.rstrip('/')}/v1/client/allocation/{alloc.id}/logs"
        params = {
            "task": task,
            "type": type,
            "origin": origin,
            "offset": str(offset),
            "follow": "true" if follow else "false",
        }
        return await agent_proxy.relay(
            url,
            params,
            relay_ext(node.id),
            f"cannot reach the agent of node {node.name} at {node.http_addr}",
        )
