"""The audit log: every write to the API, who made it, from where, and what came of it.

One JSON object per line, appended to a file only the server's user can read (0600), rotated
by size (``RotatingFileHandler``: the current file is renamed ``.1``, ``.1`` to ``.2`` and so
on, the oldest dropped), so a person reading it never sees a line rewritten.  A line::

    {"time": "2026-12-04T20:41:07.512Z", "method": "POST", "path": "/v1/jobs",
     "query": "namespace=team-a", "remote": "10.0.0.7:51234", "identity": {...},
     "status": 403, "outcome": "refused", "duration_ms": 1.8}

``outcome`` is ``allowed`` (2xx/3xx), ``refused`` (401, 403: the caller may not),
``rejected`` (another 4xx: the request was wrong) or ``error`` (5xx, or no answer).
``identity`` is what the authorization edge put in the request's scope under
:data:`IDENTITY_KEY` (a token's accessor and name, or a node's id), absent when no one
was identified.

What is a write: every method but GET, HEAD and OPTIONS.  The agents' protocol is the
exception made for volume (thousands of nodes heartbeat and report every few seconds; the
node table and the allocations already record what they say): a heartbeat, a sync or a
report is logged only when it is refused or fails.  A node's registration is always logged.

The middleware is pure ASGI and outermost, so it sees the final status of every request,
refusals by the authorization edge included; writing a line is a few microseconds, done on
the event loop (the file is line-buffered, not fsynced: an audit line can be lost in a power
cut, never reordered).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

IDENTITY_KEY = "podium.identity"
"""Where the authorization edge leaves who made a request (a JSON-able dict) in the ASGI scope."""
READS = frozenset({"GET", "HEAD", "OPTIONS"})
AGENT_PROTOCOL_PREFIXES = ("/v1/client/",)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_BACKUPS = 10


def _is_agent_protocol(method: str, path: str) -> bool:
    if path.startswith(AGENT_PROTOCOL_PREFIXES):
        return True
    return method == "PUT" and path.startswith("/v1/node/") and path.endswith("/heartbeat")


def outcome(status: int | None) -> str:
    if status is None or status >= 500:
        return "error"
    if status in (401, 403):
        return "refused"
    if status >= 400:
        return "rejected"
    return "allowed"


class AuditLog:
    """An append-only JSON-lines file, rotated at ``max_bytes`` with ``backups`` kept."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 before the handler opens it for appending (it keeps an existing mode).
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, mode="a", maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler.rotator = _rotate_private

    def write(self, entry: dict[str, Any]) -> None:
        record = logging.LogRecord(
            "podium.audit", logging.INFO, __file__, 0, json.dumps(entry, default=str), None, None
        )
        self._handler.emit(record)

    def close(self) -> None:
        self._handler.close()


def _rotate_private(source: str, dest: str) -> None:
    """Rename as the handler would; the file it opens next is made 0600 first."""
    os.replace(source, dest)
    fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)


class AuditMiddleware:
    """Records each write's request and outcome in an :class:`AuditLog`."""

    def __init__(self, app: ASGIApp, log: AuditLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] in READS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method, path = scope["method"], scope["path"]
            verdict = outcome(status)
            if verdict in ("refused", "error") or not _is_agent_protocol(method, path):
                self.log.write(_entry(scope, status, verdict, time.perf_counter() - started))

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket (``alloc exec``) acts: it is recorded as a write, once, when the
        upgrade is answered (101 accepted, or the refusal's status), not when it ends."""
        started = time.perf_counter()
        written = False

        def record(status: int | None) -> None:
            nonlocal written
            if not written:
                written = True
                entry = _entry(scope, status, outcome(status), time.perf_counter() - started)
                entry["websocket"] = True
                self.log.write(entry)

        async def send_status(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                record(101)
            elif kind == "websocket.http.response.start":
                record(int(message["status"]))
            elif kind == "websocket.close":
                record(403)  # closed before it was accepted: refused
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            record(None)


def _entry(scope: Scope, status: int | None, verdict: str, seconds: float) -> dict[str, Any]:
    client = scope.get("client")
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "method": scope.get("method", "GET"),
        "path": scope["path"],
    }
    query = scope.get("query_string", b"")
    if query:
        entry["query"] = query.decode("latin-1")
    if client:
        entry["remote"] = f"{client[0]}:{client[1]}"
    identity = scope.get(IDENTITY_KEY)
    if identity is not None:
        entry["identity"] = identity
    entry["status"] = status
    entry["outcome"] = verdict
    entry["duration_ms"] = round(seconds * 1000, 2)
    return entry
