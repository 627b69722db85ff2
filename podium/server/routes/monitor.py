"""``GET /v1/agent/monitor``: this server's log records, live, as NDJSON (Nomad's
``/v1/agent/monitor``); with ``node_id``, that node's agent's, relayed as its logs are.

The records come from :mod:`podium.logstream` (a handler attached only while someone
listens, a bounded buffer per listener).  Access: ``operator: read``, as Nomad's
``agent:read``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from podium import logstream
from podium.errors import NotFound
from podium.models import parse_duration
from podium.server.api_docs import NOT_FOUND, errors
from podium.server.proxy import AgentProxy
from podium.server.routes.common import ApiContext


def add_routes(
    router: APIRouter,
    ctx: ApiContext,
    agent_proxy: AgentProxy,
    relay_ext: Callable[[str], dict[str, Any]],
) -> None:
    @router.get(
        "/v1/agent/monitor",
        tags=["operator"],
        responses={
            200: {
                "description": "Log records, one JSON object a line, as they are logged.",
                "content": {logstream.NDJSON: {"schema": {"type": "string"}}},
            },
            **NOT_FOUND,
            **errors(429, 502),
        },
    )
    async def monitor(
        log_level: str = "info", node_id: str | None = None, duration: str | None = None
    ) -> Response:
        """Stream log records at ``log_level`` (debug, info, warning, error) from now on:
        ``{"time", "level", "logger", "message"}`` a line; a ``dropped N lines`` record
        when this reader fell too far behind.  Until the client goes away, or for
        ``duration`` (``30s``) at most."""
        level = logstream.parse_level(log_level)
        seconds = None if duration is None else parse_duration(duration)
        if node_id is None:
            return logstream.hub().response(level, "this server", duration=seconds)
        node = ctx.resolve_node(node_id)
        if not node.http_addr:
            raise NotFound(f"node {node.name} has no address to reach its agent at")
        return await agent_proxy.relay(
            f"{node.http_addr.rstrip('/')}/v1/client/monitor",
            {"log_level": logging_name(level)} | ({"duration": duration} if duration else {}),
            relay_ext(node.id),
            f"cannot reach the agent of node {node.name} at {node.http_addr}",
            media_type=logstream.NDJSON,
        )


def logging_name(level: int) -> str:
    return {10: "debug", 20: "info", 30: "warning", 40: "error"}.get(level, "info")
