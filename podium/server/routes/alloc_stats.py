"""``GET /v1/allocation/{alloc_id}/stats``: an allocation's resource usage, relayed from
its agent (which reads cgroups, /proc or docker stats: podium.agent.usage) through the
server's pooled agent client (podium.server.proxy), as logs are.

The server answers what it knows itself: 404 for an unknown allocation, 409 for one
that is not running (nothing to measure), 502 when the agent cannot be reached.  The
agent's answer (:class:`~podium.models.stats.AllocResourceUsage`) is passed on as it is.
Declared on the app's router by :func:`podium.server.api.create_app`; ACL: ``read-job``
in the allocation's namespace (podium.server.acl.RULES).

``GET /v1/node/{node_id}/metrics`` relays a node's agent's ``/v1/metrics`` the same way
(ACL: operator read, as the server's own): Prometheus can scrape agents through a server
with a token, where it could not reach them itself (under ``--secure`` an agent answers
only servers' certificates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response

from podium.errors import Conflict, NotFound
from podium.models import ClientStatus
from podium.models.stats import AllocResourceUsage
from podium.server.api_docs import CONFLICT, NOT_FOUND, errors
from podium.server.api_metrics import METRICS_DOC
from podium.server.proxy import AgentProxy
from podium.server.routes.common import ApiContext


def add_routes(
    router: APIRouter,
    ctx: ApiContext,
    agent_proxy: AgentProxy,
    relay_ext: Callable[[str], dict[str, Any]],
) -> None:
    """``relay_ext``: the TLS extensions of a request to a node's agent (none without TLS)."""
    store = ctx.store

    @router.get(
        "/v1/allocation/{alloc_id}/stats",
        tags=["allocations"],
        response_model=AllocResourceUsage,
        responses={**NOT_FOUND, **CONFLICT, **errors(502)},
    )
    async def alloc_stats(alloc_id: str, namespace: str = "default") -> Response:
        """The allocation's CPU (percent of one core) and memory, per running task, as
        its agent measures them now."""
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        if alloc.client_status != ClientStatus.RUNNING:
            raise Conflict(
                f"allocation {alloc.id} is not running (client status "
                f"{alloc.client_status.value}, desired {alloc.desired_status.value}): "
                "only a running allocation has resource usage"
            )
        node = store.node(alloc.node_id)
        if node is None or not node.http_addr:
            raise NotFound(f"node {alloc.node_id} of allocation {alloc.id} cannot be reached")
        url = f"{node.http_addr.rstrip('/')}/v1/client/allocation/{alloc.id}/stats"
        return await agent_proxy.fetch(
            url,
            {},
            relay_ext(node.id),
            f"cannot reach the agent of node {node.name} at {node.http_addr}",
        )

    @router.get(
        "/v1/node/{node_id}/metrics",
        tags=["nodes"],
        responses={**METRICS_DOC, **NOT_FOUND, **errors(502)},
        response_class=Response,
    )
    async def node_metrics(
        node_id: str, format: Literal["prometheus", "json"] | None = None
    ) -> Response:
        """The metrics of the node's agent (docs/metrics.md), relayed from it."""
        node = ctx.resolve_node(node_id)
        if not node.http_addr:
            raise NotFound(f"node {node.name} ({node.id}) has no HTTP address to reach")
        url = f"{node.http_addr.rstrip('/')}/v1/metrics"
        return await agent_proxy.fetch(
            url,
            {"format": format} if format else {},
            relay_ext(node.id),
            f"cannot reach the agent of node {node.name} at {node.http_addr}",
        )
