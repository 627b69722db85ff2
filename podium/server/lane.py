"""Heartbeats on a lane of their own: a listener and a thread that answer nothing else.

Why (issue 18): one event loop runs the server's scheduler, its plan applier, the agents'
syncs and reports and the API.  A heartbeat sent to that loop waits for whatever holds it
(a 1,000-instance evaluation placed, a catalog sync, a report transaction): at full size,
a p99 of about a second, and before :mod:`podium.server.hearing` a false node-down.
Nomad answers heartbeats over its RPC port and rate-limits them; Kubernetes moved them to
Lease objects so that nothing else can starve them.

The lane is a second HTTP listener (same host; the same TLS and the same edge guards as the
API's, see :func:`podium.runtime`) served by uvicorn on a thread with an event loop of its
own.  ``PUT /v1/node/{id}/heartbeat`` carrying that node's secret, for a node known and not
down, on the server that leads, is heard there and answered at once
(:meth:`podium.server.core.Server.hear`: an in-memory record, nothing written), whatever
the main loop is doing.  Every other heartbeat (a follower's, a node down or unknown, a
wrong secret) is handed to the API's own app on the main loop and answered as the API's
route answers it (forwarded to the leader, the node brought back, refused); any other
request is answered 404 with what to do.  Python's GIL is shared with the main loop: a
thread that waits for it gets it within ``sys.getswitchinterval()`` (the process sets
:data:`SWITCH_INTERVAL`), so the lane's latency is a few of those, not the loop's holds.

Agents learn the lane's URL from the answers of registrations and heartbeats
(``heartbeat_url``) and fall back to the API's route whenever the lane cannot be reached
(:class:`podium.client.AsyncClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podium.models.acl import NODE_SECRET_HEADER
from podium.server.routes.common import INDEX_HEADER

if TYPE_CHECKING:
    import uvicorn

    from podium.server.core import Server

log = logging.getLogger("podium.server")

HEARTBEAT_PATH = re.compile(r"^/v1/node/(?P<node_id>[^/]+)/heartbeat$")
SWITCH_INTERVAL = 0.001
"""Seconds a thread waiting for the GIL waits before the holder is asked to let go
(CPython's default: 5 ms).  A heartbeat on the lane takes the GIL a few times (its read,
its answer); 1 ms keeps that to milliseconds while the main loop is busy, and costs the
main loop nothing while the lane is idle (nobody asks for the GIL then)."""
_SECRET = NODE_SECRET_HEADER.lower().encode()


class LaneApp:
    """The lane's ASGI app (it runs on the lane's loop; see the module's docstring)."""

    def __init__(self, server: Server, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        """``app``: the API's whole app (forwarding, host check, the routes), run on
        ``loop``, the main event loop, for every heartbeat not heard here."""
        self.server = server
        self.app = app
        self.loop = loop
        self.counts = server.lane_counts
        """heard: heartbeats answered on the lane; handed: to the main loop's app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; a WebSocket is closed unanswered
        found = HEARTBEAT_PATH.match(scope["path"])
        if found is None or scope["method"] != "PUT":
            await _json(
                send,
                404,
                {
                    "error": "this listener answers heartbeats only "
                    "(PUT /v1/node/{node_id}/heartbeat): send every other request to "
                    "the API's address"
                },
            )
            return
        body = await _body(receive)
        node_id = found["node_id"]
        secret = next((v.decode("latin-1") for k, v in scope["headers"] if k == _SECRET), None)
        server = self.server
        if server.trust.check_node_secret(node_id, secret):
            index = server.hear(node_id)
            if index is not None:
                self.counts["heard"] += 1
                await _json(send, 200, server.heartbeat_answer(index), index)
                return
        self.counts["handed"] += 1
        await self._on_main_loop(scope, body, receive, send)

    async def _on_main_loop(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """Run the API's app for this request on the main loop; its messages are sent
        from this one (each loop touches only its own transports)."""
        lane = asyncio.get_running_loop()
        given = False

        async def main_receive() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            message: Message = await _on(lane, receive())
            return message

        async def main_send(message: Message) -> None:
            await _on(lane, send(message))

        async def run() -> None:
            await self.app(scope, main_receive, main_send)

        await _on(self.loop, run())


async def _on(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` on ``loop`` (another thread's) from this one."""

    async def run() -> Any:
        return await awaitable

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _json(send: Send, status: int, value: Any, index: int | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    if index is not None:
        headers.append((INDEX_HEADER.lower().encode(), str(index).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(value).encode()})


class HeartbeatLane:
    """The lane's listener on its thread: :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        server: Server,
        app: ASGIApp,
        sock: socket.socket,
        make_http: Callable[[ASGIApp], uvicorn.Server],
        *,
        tls: bool = False,
        host: str | None = None,
    ) -> None:
        """``app``: the API's app (for the heartbeats the lane hands on); ``sock``: the
        lane's listening socket; ``make_http``: a uvicorn server for an app (the API's
        settings: TLS, the edge's guards); ``tls``: the server is secure, so the lane
        speaks HTTPS and wants the node's agent certificate, as the API's agent routes
        do (:class:`podium.tls.asgi.RequireCertificate`); ``host``: the name agents reach
        this server by (the advertised URL's), else the socket's address."""
        self.server = server
        self.sock = sock
        self.app = LaneApp(server, app, asyncio.get_running_loop())
        outer: ASGIApp = self.app
        if tls:
            from podium.tls.asgi import RequireCertificate

            outer = RequireCertificate(self.app)
        self.http = make_http(outer)
        port = sock.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{_url_host(host or sock.getsockname()[0])}:{port}"
        self._thread: threading.Thread | None = None
        self._started: Future[None] = Future()

    async def start(self) -> None:
        """Listen on the lane's thread, and tell agents of it (``heartbeat_url``)."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._thread = threading.Thread(target=self._run, name="heartbeat-lane", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(self._started)
        self.server.heartbeat_url = self.url
        log.info("heartbeats heard on their own lane: %s", self.url)

    def _run(self) -> None:
        from podium import eventloop

        async def serve() -> None:
            self._started.set_result(None)
            await self.http.serve(sockets=[self.sock])

        try:
            eventloop.run(serve())
        except Exception as exc:  # the API's route still hears every heartbeat
            log.exception("the heartbeat lane stopped: heartbeats go to the API's route")
            if not self._started.done():
                self._started.set_exception(exc)
        finally:
            self.server.heartbeat_url = None

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening (the agents fall back to the API's route) and join the thread."""
        self.server.heartbeat_url = None
        self.http.should_exit = True
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout)
        with contextlib.suppress(OSError):
            self.sock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
