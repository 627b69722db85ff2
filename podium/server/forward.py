"""Writes sent to a follower go to the leader; every answer says how fresh it is.

Servers on etcd all answer the API, but only the leader commits (its commits carry the
election's fence; a follower's would be refused by etcd).  So that a client, an agent or
``curl`` may talk to any server, as Nomad's servers forward RPCs to their leader, this
ASGI middleware (servers on etcd only; docs/ha.md, "Servers on etcd"):

- passes reads (``GET``, ``HEAD``, ``OPTIONS``) to this server's own routes: they answer
  from its replica, blocking queries included;
- passes writes through when this server leads (waiting out a new leader's catch-up,
  a few seconds at most), and otherwise **forwards** them to the leader it knows: the
  same method, path, query, body and headers (the ACL token and a node's secret with
  them: the leader checks them again), and returns the leader's answer as it came.
  Before answering, it waits (briefly) until its own replica has applied the index
  the leader answered, so that a client's next read on this server sees its write;
- answers 503 with ``Retry-After`` when no leader is known (etcd lost its quorum, an
  election is under way) or the leader did not answer: nothing was written by this
  server, and a write that reached the leader may have been carried out (the answer
  says so; the client decides whether to repeat it, as after any lost answer);
- never forwards twice: a request forwarded to a server that no longer leads is
  refused with 503 rather than sent on again (``X-Podium-Forwarded-By``).

Every answer carries ``X-Podium-Known-Leader`` (true/false) and
``X-Podium-Last-Contact`` (milliseconds since this server's store was last known to
hold every commit; 0 on the leader), Nomad's staleness headers.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podium.server.routes.common import INDEX_HEADER, read_body, replay

if TYPE_CHECKING:
    from podium.server.cluster import ClusterView
    from podium.state import StateStore

log = logging.getLogger("podium.server")

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
FORWARDED_BY = "x-podium-forwarded-by"
KNOWN_LEADER = b"x-podium-known-leader"
LAST_CONTACT = b"x-podium-last-contact"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
SERVER_SET = frozenset({b"date", b"server"})
"""Headers this server's HTTP layer writes itself (not copied from the leader's answer)."""
SYNC_PATH = re.compile(r"^/v1/client/node/[^/]+/allocations$")
"""An agent's sync (``POST``: with its reports): split by :meth:`LeaderForward._sync`."""
CATCH_UP = 5.0
"""Seconds a write waits for a newly elected leader's catch-up before it is refused."""
READ_YOUR_WRITE = 5.0
"""Seconds a forwarded write's answer waits for this server's replica to apply it."""


class LeaderForward:
    def __init__(
        self,
        app: ASGIApp,
        cluster: ClusterView,
        store: StateStore,
        *,
        url: str,
        verify: Any = True,
        timeout: float = 360.0,
    ) -> None:
        self.app = app
        self.cluster = cluster
        self.store = store
        self.url = url
        self._client = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=5.0),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=64),
        )
        self.forwarded = 0
        """How many writes this server sent to a leader."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._stamped(send)
        if scope["method"] in SAFE:
            await self.app(scope, receive, send)
            return
        if self.cluster.is_leader() or await self.cluster.wait_leading(CATCH_UP):
            await self.app(scope, receive, send)
            return
        leader = self.cluster.leader_url()
        headers = dict(scope["headers"])
        via = headers.get(FORWARDED_BY.encode(), b"").decode("latin-1")
        if not leader or leader == self.url:
            await _refuse(
                send,
                "no leader is elected now (an election is under way, or etcd "
                "has no quorum); nothing was written: try again",
            )
            return
        if via:
            await _refuse(
                send,
                f"{self.url} does not lead (the write came from {via}, "
                "which took it for the leader); nothing was written: try again",
            )
            return
        await self._forward(scope, receive, send, leader)

    def _stamped(self, send: Send) -> Send:
        cluster = self.cluster

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                stale = cluster.staleness()
                known = b"true" if cluster.leader_url() else b"false"
                ms = b"" if stale is None else str(int(stale * 1000)).encode()
                extra = [(KNOWN_LEADER, known)] + ([(LAST_CONTACT, ms)] if ms else [])
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return stamped

    async def _forward(self, scope: Scope, receive: Receive, send: Send, leader: str) -> None:
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        path = scope.get("raw_path") or scope["path"].encode()
        if SYNC_PATH.match(scope["path"]):
            await self._sync(scope, receive, send, leader, body)
            return
        query = scope.get("query_string", b"")
        target = path.decode("latin-1") + ("?" + query.decode() if query else "")
        answer = await self._to_leader(scope, send, leader, scope["method"], target, body)
        if answer is None:
            return
        await answer.send(send)

    async def _sync(
        self, scope: Scope, receive: Receive, send: Send, leader: str, body: bytes
    ) -> None:
        """An agent's sync that carries reports: the reports go to the leader (as ``POST
        /v1/client/allocations``), the sync, a blocking query, is answered here from this
        server's replica once it holds them: followers carry their share of the agents'
        long polls instead of holding a connection to the leader for each."""
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("updates"):
            node_id = scope["path"].split("/")[4]
            report = {
                "node_id": node_id,
                "updates": doc["updates"],
                "session": doc.get("session", ""),
                "seq": doc.get("seq", 0),
            }
            answer = await self._to_leader(
                scope, send, leader, "POST", "/v1/client/allocations", json.dumps(report).encode()
            )
            if answer is None:
                return
            if not answer.ok:
                await answer.send(send)
                return
            doc = {**doc, "updates": [], "session": "", "seq": 0}
            body = json.dumps(doc).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay(body, receive), send)

    async def _to_leader(
        self, scope: Scope, send: Send, leader: str, method: str, target: str, body: bytes
    ) -> _Answer | None:
        """The leader's answer to ``method target`` with the request's own headers (None:
        it did not answer, and the refusal was sent)."""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        headers.append((FORWARDED_BY.encode(), self.url.encode()))
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", str(client[0]).encode()))
        try:
            request = self._client.build_request(
                method, leader.rstrip("/") + target, headers=headers, content=body
            )
            response = await self._client.send(request, stream=True)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            log.warning("forwarding %s %s to the leader %s failed: %s", method, target, leader, exc)
            sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            outcome = (
                "the write may or may not have been carried out" if sent else "nothing was written"
            )
            await _refuse(
                send, f"the leader {leader} did not answer ({type(exc).__name__}: {exc}); {outcome}"
            )
            return None
        self.forwarded += 1
        index = response.headers.get(INDEX_HEADER)
        if response.is_success and index and index.isdigit():
            await self._applied(int(index))
        raw = [
            (k, v)
            for k, v in response.headers.raw
            if k.lower() not in HOP_BY_HOP
            and k.lower() not in SERVER_SET
            and k.lower() not in (KNOWN_LEADER, LAST_CONTACT)
        ]
        raw.append((b"content-length", str(len(content)).encode()))
        return _Answer(response.status_code, raw, content)

    async def _applied(self, index: int) -> None:
        """Wait until this server's store holds ``index`` (or a few seconds went by)."""
        store = self.store
        until = time.monotonic() + READ_YOUR_WRITE
        while store.index < index:
            left = until - time.monotonic()
            if left <= 0:
                return
            await store.wait_for(store.index, left)


@dataclass
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.content})


async def _refuse(send: Send, error: str) -> None:
    body = json.dumps({"error": error, "code": "no_leader"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
