"""``GET /v1/allocation/{id}/exec`` upgraded to a WebSocket: ``podium alloc exec``'s relay.

Nomad's shape (``/v1/client/allocation/<id>/exec?task=..&command=[..]&tty=true``), under
Podium's own path for allocations (``/v1/client/`` is the agents' protocol here: the TLS
guard and the ACL edge treat it so).  The authorization edge has checked ``alloc-exec`` in
the request's namespace (podium.server.acl RULES) and the audit log records the upgrade as
a write.  This handler then finds the allocation's node, signs a grant for exactly this
command with the node secret's stored hash (:mod:`podium.models.execproto`), dials the
agent's ``/v1/client/allocation/{id}/exec`` (under TLS with the server's certificate, the
agent verified as ``<node>.node.podium``: tls_routes' verify and extensions) and relays
frames unchanged both ways until either side closes.

A browser may open a WebSocket to any site, sending its cookies and no preflight: an
upgrade whose ``Origin`` is not the server it is addressed to is refused (cross-site
WebSocket hijacking against a server with ACLs off).  The CLI sends no Origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from podium.errors import AmbiguousPrefix, NotFound
from podium.models.execproto import (
    GRANT_HEADER,
    MAX_FRAME_BYTES,
    ProtocolError,
    parse_command,
    sign_grant,
)
from podium.server.routes.common import ApiContext

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0
MAX_SESSIONS = 256
"""Exec sessions one server relays at once (each holds a connection to an agent and one to
a client, as a log stream does); more are answered 429 with ``Retry-After``."""
RETRY_AFTER = 5


async def deny(
    ws: WebSocket, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    await ws.send_denial_response(
        JSONResponse({"error": message}, status_code=status, headers=headers)
    )


def cross_origin(ws: WebSocket) -> str | None:
    """The foreign ``Origin`` of a browser's upgrade, or None (same origin, or none)."""
    origin = ws.headers.get("origin")
    if not origin:
        return None
    host = ws.headers.get("host", "")
    return None if urlsplit(origin).netloc.lower() == host.lower() else origin


def _truthy(raw: str | None) -> bool:
    return (raw or "").lower() in ("1", "true", "yes")


def add_routes(
    app: FastAPI,
    ctx: ApiContext,
    verify: Any,
    relay_ext: Callable[[str], dict[str, Any]],
) -> None:
    store = ctx.store
    open_sessions = 0

    @app.websocket("/v1/allocation/{alloc_id}/exec")
    async def alloc_exec(ws: WebSocket, alloc_id: str) -> None:
        nonlocal open_sessions
        foreign = cross_origin(ws)
        if foreign is not None:
            await deny(ws, 403, f"a WebSocket from origin {foreign} may not run commands here")
            return
        if open_sessions >= MAX_SESSIONS:
            await deny(
                ws,
                429,
                f"{open_sessions} exec sessions are open, the most this server relays at "
                f"once ({MAX_SESSIONS}); try again in {RETRY_AFTER}s",
                {"Retry-After": str(RETRY_AFTER)},
            )
            return
        open_sessions += 1
        try:
            await session(ws, alloc_id)
        finally:
            open_sessions -= 1

    async def session(ws: WebSocket, alloc_id: str) -> None:
        q = ws.query_params
        namespace = q.get("namespace") or "default"
        try:
            alloc = ctx.resolve_alloc(alloc_id, namespace)
        except (NotFound, AmbiguousPrefix) as exc:
            await deny(ws, 404 if isinstance(exc, NotFound) else 400, str(exc))
            return
        try:
            command = parse_command(q.get("command"))
        except ProtocolError as exc:
            await deny(ws, 400, str(exc))
            return
        tty = _truthy(q.get("tty"))
        spec = store.job_spec(alloc.job_id, alloc.job_version, alloc.namespace)
        group = spec.groups.get(alloc.group) if spec is not None else None
        known = sorted(group.tasks) if group is not None else sorted(alloc.task_states)
        task = q.get("task")
        if not task:
            if len(known) != 1:
                await deny(
                    ws,
                    400,
                    f"allocation {alloc.id} has several tasks; name one (task=): "
                    + ", ".join(known),
                )
                return
            task = known[0]
        if task not in known:
            await deny(
                ws, 404, f"allocation {alloc.id} has no task {task!r} (tasks: {', '.join(known)})"
            )
            return
        if alloc.client_status not in ("pending", "running"):
            await deny(
                ws, 409, f"allocation {alloc.id} is {alloc.client_status}: nothing runs to exec in"
            )
            return
        node = store.node(alloc.node_id)
        record = store.node_secret(alloc.node_id)
        if node is None or not node.http_addr or record is None:
            await deny(ws, 502, f"node {alloc.node_id} of allocation {alloc.id} cannot be reached")
            return
        grant = sign_grant(record.secret_hash, alloc.id, task, command, tty, time.time())
        base = node.http_addr.rstrip("/")
        scheme = "wss" if base.startswith("https://") else "ws"
        query = urlencode(
            {"task": task, "command": json.dumps(command), "tty": "true" if tty else "false"}
        )
        url = f"{scheme}://{base.split('://', 1)[1]}/v1/client/allocation/{alloc.id}/exec?{query}"
        await relay(ws, url, grant, verify, relay_ext(node.id), node.name)


async def relay(
    ws: WebSocket, url: str, grant: str, verify: Any, ext: dict[str, Any], node_name: str
) -> None:
    """Dial the agent, then pass frames both ways; the agent's refusal is the client's."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    kwargs: dict[str, Any] = {}
    if url.startswith("wss://"):
        kwargs["ssl"] = (
            verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
        )
        if "sni_hostname" in ext:
            kwargs["server_hostname"] = ext["sni_hostname"]
    try:
        upstream = await connect(
            url,
            additional_headers={GRANT_HEADER: grant},
            open_timeout=DIAL_TIMEOUT,
            max_size=MAX_FRAME_BYTES,
            compression=None,
            user_agent_header=None,
            **kwargs,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        try:
            message = json.loads(exc.response.body or b"{}").get("error") or str(exc)
        except (ValueError, AttributeError):
            message = str(exc)
        await deny(ws, status if 400 <= status < 600 else 502, message)
        return
    except (OSError, TimeoutError, WebSocketException) as exc:
        await deny(ws, 502, f"cannot reach the agent of node {node_name}: {exc}")
        return
    async with upstream:
        await ws.accept()

        async def down() -> None:  # the agent's frames to the client
            async for message in upstream:
                text = message if isinstance(message, str) else message.decode()
                await ws.send_text(text)

        async def up() -> None:  # the client's frames to the agent
            while True:
                try:
                    text = await ws.receive_text()
                except (WebSocketDisconnect, RuntimeError):
                    return
                await upstream.send(text)

        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
        with contextlib.suppress(Exception):
            code = upstream.close_code
            await ws.close(code=code if code in (1000, 1008, 1011) else 1000)
