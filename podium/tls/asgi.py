"""The ASGI guard that requires a cluster certificate on the routes only machines call.

Plain ASGI (no Starlette import), so the agent's endpoint and the server's API install
the same code: ``app.add_middleware(RequireCertificate, role=..., paths=...)`` or
``RequireCertificate(app, ...)``.  The handshake has verified the certificate against the
CA, and its dates, already (as every TLS server, once per connection: a keep-alive
connection may outlive the certificate it began with); this checks that there is one, that its role is the one the route is for, and that a node id in the path is
the certificate's own (one node cannot sync or heartbeat as another).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from podium.tls.ca import ROLE_AGENT
from podium.tls.identity import peer_identity

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NODE_IN_PATH = re.compile(r"^/v1/(?:client/)?node/([^/]+)/")


def agent_route(path: str) -> bool:
    """The server's routes only agents call (docs/tls.md lists them)."""
    return (
        path.startswith("/v1/client/")
        or path == "/v1/node/register"
        or (path.startswith("/v1/node/") and path.endswith("/heartbeat"))
    )


def every_route(path: str) -> bool:
    return True


async def refuse(send: Send, status: int, message: str, scope: Scope | None = None) -> None:
    """Answer ``status`` with ``{"error": message}``; a WebSocket's upgrade (``scope``) is
    refused with the same HTTP answer, or closed unaccepted where the server cannot."""
    body = json.dumps({"error": message}).encode()
    kind = "http"
    if scope is not None and scope["type"] == "websocket":
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        kind = "websocket.http"
    await send(
        {
            "type": f"{kind}.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": f"{kind}.response.body", "body": body})


class RequireCertificate:
    def __init__(
        self, app: ASGIApp, role: str = ROLE_AGENT, paths: Callable[[str], bool] = agent_route
    ) -> None:
        self.app = app
        self.role = role
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.paths(scope["path"]):
            await self.app(scope, receive, send)
            return
        identity = peer_identity(scope)
        path = scope["path"]
        if identity is None:
            await refuse(
                send,
                401,
                f"{path} needs a client certificate of a cluster {self.role}: "
                + (
                    "join the cluster with `podium agent --join-token PDM-1-...`"
                    if self.role == ROLE_AGENT
                    else "only the cluster's servers may call this"
                ),
                scope,
            )
            return
        if identity.role != self.role:
            await refuse(
                send,
                403,
                f"{path} is for a cluster {self.role}; this certificate is a {identity.role}'s",
                scope,
            )
            return
        m = _NODE_IN_PATH.match(path)
        if self.role == ROLE_AGENT and m and m.group(1) != identity.node_id:
            await refuse(
                send,
                403,
                f"this certificate is node {identity.node_id}'s; it cannot act for node {m.group(1)}",
                scope,
            )
            return
        await self.app(scope, receive, send)
