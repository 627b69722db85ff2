"""What a client must do to hold one of the HTTP server's connections (issue 14).

uvicorn closes idle keep-alive connections, but it has no deadline for a request that
never finishes arriving (3,000 half-sent requests stayed open for 60 s) and no cap on
connections (20,000 exhausted the fd limit).  :func:`guarded_h11` is uvicorn's h11
protocol with both:

- **a read deadline**: from the connection's first moment (and from the first byte of each
  later request on it) the whole request, headers and body, must arrive within
  ``read_timeout`` seconds, else the connection is closed.  A request that has arrived is
  not timed: a blocking query may wait for its answer as long as it asked to.
- **a connection cap**: past ``max_connections`` open connections, the oldest connection
  whose request is still arriving is closed to make room (slow clients make room for quick
  ones, so a flood of half-sent requests cannot lock normal clients out); when every
  connection has a whole request in hand, the new one is answered ``503`` with a JSON
  error and closed at once.  Either way the fds in use stay bounded.

:class:`BodyLimit` (an ASGI wrapper) answers ``413`` with a JSON error for a body over the
limit, declared (``Content-Length``) or not (chunked), before the app sees any of it.
The servers of this process, the API's and the agent's, are both built with these
(podium.runtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("podium.http")

DEFAULT_MAX_REQUEST_BODY = 8 * 2**20
"""8 MiB: a job spec is bounded far below it (podium.models.limits), agents' reports are KBs."""
DEFAULT_READ_TIMEOUT = 10.0
"""Seconds for a whole request to arrive (Go servers commonly use 5-10 s for headers)."""
DEFAULT_MAX_CONNECTIONS = 10_000
"""Every agent holds one long-poll connection: room for thousands of nodes and their users."""
FD_RESERVE = 512
"""File descriptors kept back from the connection cap (the store, logs, agents' tasks)."""


def default_max_connections() -> int:
    """DEFAULT_MAX_CONNECTIONS, lowered to fit this process's fd limit (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(64, min(DEFAULT_MAX_CONNECTIONS, soft - FD_RESERVE))


def _json_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_DONE = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


class _GuardedH11(H11Protocol):
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    _deadline: asyncio.TimerHandle | None = None
    _reading: dict[_GuardedH11, None]
    """This server's connections whose request is still arriving, oldest first."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and self._reading:
            oldest = next(iter(self._reading))
            log.info("closed a slow connection from %s to make room", oldest.client)
            oldest._disarm()
            oldest.transport.close()
        elif len(self.connections) > self.max_connections:
            log.warning(
                "refused a connection from %s: %d open, the most is %d (--max-connections)",
                self.client,
                len(self.connections) - 1,
                self.max_connections,
            )
            message = (
                f"the server has {self.max_connections} connections open, its limit "
                "(--max-connections); try again shortly"
            )
            transport.write(_json_response(503, "Service Unavailable", message))
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)
            self._reading[self] = None

    def _disarm(self) -> None:
        self._reading.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_timed_out(self) -> None:
        self._deadline = None
        self._reading.pop(self, None)
        if self.transport.is_closing() or self.conn.their_state in _DONE:
            return
        log.info(
            "closed a connection from %s: its request did not arrive within %gs",
            self.client,
            self.read_timeout,
        )
        if self.cycle is None or self.cycle.response_complete:
            # nothing answered yet on this request: say why (best effort)
            with contextlib.suppress(Exception):
                self.transport.write(
                    _json_response(
                        408,
                        "Request Timeout",
                        f"the request did not arrive within {self.read_timeout:g}s",
                    )
                )
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a (next) request
        super().data_received(data)
        if self.conn.their_state in _DONE:
            self._disarm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The request is whole: the connection is a WebSocket from here on (``alloc
        # exec``, held open as long as its command runs), no longer a request to time.
        self._disarm()
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_h11(
    read_timeout: float, max_connections: int, base: type[H11Protocol] = H11Protocol
) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol (or ``base``, a subclass of it such as the TLS one) with a
    request read deadline and a connection cap."""
    return type(
        "GuardedH11",
        (_GuardedH11, base),
        {"read_timeout": read_timeout, "max_connections": max_connections, "_reading": {}},
    )


Scope = dict[str, Any]


class BodyLimit:
    """ASGI wrapper: a request body over ``max_bytes`` is answered 413 (JSON), unread by
    the app.  The body is read here first (bodies are small JSON documents, and bounded),
    then handed to the app as it arrived."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is None and not chunked:
            await self.app(scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(send, int(length) if length.isdigit() else None)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any, declared: int | None) -> None:
        size = f" ({declared} bytes)" if declared is not None else ""
        message = (
            f"the request body{size} is larger than this server's limit of "
            f"{self.max_bytes} bytes (--max-request-body)"
        )
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def local_names(bind_host: str, extra: list[str]) -> set[str]:
    """The names and addresses this server answers to: its bind address (every local
    interface's address when it listens on all), loopback, the machine's host names, and
    ``extra`` (--advertise, --allowed-hosts).  Lower case, without ports or brackets."""
    import socket

    import psutil

    names = {"localhost", "127.0.0.1", "::1", bind_host.lower()}
    names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    if bind_host in WILDCARDS:
        for addrs in psutil.net_if_addrs().values():
            names |= {a.address.split("%")[0].lower() for a in addrs if a.family in _INET}
    names |= {e.strip().lower().strip("[]") for e in extra if e.strip()}
    return names - {""}


_INET = (2, 10)  # AF_INET, AF_INET6


def host_of(header: bytes) -> str:
    """The host part of a Host header (``[::1]:80`` -> ``::1``, ``Name:80`` -> ``name``)."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


class HostCheck:
    """ASGI wrapper against DNS rebinding: a request whose ``Host`` is not one of this
    server's names is answered 421 (JSON), so a web page whose domain was re-pointed at
    127.0.0.1 cannot drive an API that has no tokens.  ``*`` in ``allowed`` turns it off;
    a request without a Host header (HTTP/1.0, not a browser) passes."""

    def __init__(self, app: Any, allowed: set[str]) -> None:
        self.app = app
        self.allowed = allowed
        self.any = "*" in allowed

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", ())).get(b"host")
        if header is None or host_of(header) in self.allowed:
            await self.app(scope, receive, send)
            return
        message = (
            f"this server does not answer to the host {host_of(header)!r} (a DNS rebinding "
            "guard while ACLs are off): use one of its own names or addresses, or start it "
            "with --allowed-hosts NAME"
        )
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 421,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
