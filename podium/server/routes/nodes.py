"""``/v1/nodes`` and ``/v1/node/{node_id}``: what people read of nodes and do to them
(eligibility, drain).  The agents' own node routes (register, heartbeat, sync) are
:mod:`podium.server.routes.agent`'s.  Declared on the app's router by
:func:`podium.server.api.create_app`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, StrictBool, StrictFloat, StrictInt, StrictStr

from podium.models import Allocation, Node, NodeResources, parse_duration
from podium.models.acl import READ_JOB
from podium.models.api import IndexAnswer
from podium.models.views import NodeInfo
from podium.server import acl
from podium.server.api_docs import BODY, NOT_FOUND, Index, Wait
from podium.server.routes.common import ApiContext, json_answer, sorted_allocs
from podium.state import ALLOCS, NODES, StateStore


class EligibilityRequest(BaseModel):
    eligible: StrictBool


class DrainRequest(BaseModel):
    enable: StrictBool = True
    deadline: StrictStr | StrictFloat | StrictInt = "1h"
    """How long service and batch allocations may take to leave; then everything stops
    (a duration: "30m", or seconds; strict: ``true`` is no duration)."""
    ignore_system: StrictBool = False


def node_detail(store: StateStore, node: Node) -> NodeInfo:
    """The node with what is placed on it: live allocations, resources and ports in use."""
    cpu, mem = store.node_usage(node.id)
    count = 0
    ports: set[int] = set()
    for a in store.allocs_by_node(node.id):
        if a.uses_resources():
            ports.update(p.value for p in a.ports.values())
        if not a.terminal():
            count += 1
    return NodeInfo(
        **node.model_dump(),
        alloc_count=count,
        allocated=NodeResources(cpu=cpu, memory=mem),
        ports_in_use=sorted(ports),
    )


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server, store = ctx.server, ctx.store

    # ---------------------------------------------------------------- nodes
    @router.get("/v1/nodes", tags=["nodes"], response_model=list[NodeInfo])
    async def list_nodes(
        prefix: str | None = None, index: Index = None, wait: Wait = None
    ) -> Response:
        idx = await ctx.blocking(index, wait, NODES)
        nodes = sorted(store.nodes(), key=lambda n: n.name)
        if prefix:
            nodes = [n for n in nodes if n.id.startswith(prefix)]
        return json_answer([node_detail(store, n) for n in nodes], list[NodeInfo], idx)

    @router.get("/v1/node/{node_id}", tags=["nodes"], response_model=NodeInfo, responses=NOT_FOUND)
    async def get_node(node_id: str) -> Response:
        return json_answer(
            node_detail(store, ctx.resolve_node(node_id)), NodeInfo, store.table_index(NODES)
        )

    @router.get(
        "/v1/node/{node_id}/allocations",
        tags=["nodes"],
        response_model=list[Allocation],
        responses=NOT_FOUND,
    )
    async def node_allocs(node_id: str, index: Index = None, wait: Wait = None) -> Response:
        node = ctx.resolve_node(node_id)
        idx = await ctx.blocking(index, wait, ALLOCS)
        allocs = [a for a in store.allocs_by_node(node.id) if acl.can(READ_JOB, a.namespace)]
        return json_answer(sorted_allocs(allocs), list[Allocation], idx)

    @router.put(
        "/v1/node/{node_id}/eligibility",
        tags=["nodes"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **BODY},
    )
    async def eligibility(node_id: str, body: EligibilityRequest) -> Response:
        node = ctx.resolve_node(node_id)
        idx = server.set_eligibility(node.id, body.eligible)
        return json_answer({"index": idx}, dict[str, Any], idx)

    @router.put(
        "/v1/node/{node_id}/drain",
        tags=["nodes"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **BODY},
    )
    async def drain(node_id: str, body: DrainRequest) -> Response:
        node = ctx.resolve_node(node_id)
        idx = server.drain_node(
            node.id,
            enable=body.enable,
            deadline=parse_duration(body.deadline),
            ignore_system=body.ignore_system,
        )
        return json_answer({"index": idx}, dict[str, Any], idx)
