"""The server's relay of allocation logs from agents: pooled, and bounded (issue 14).

Each ``GET /v1/allocation/<id>/logs`` used to build its own ``httpx.AsyncClient`` (an SSL
context each, ~23 ms of the event loop under --secure), so 1,000 ``follow=true`` requests
held the loop until heartbeats went unanswered and a node was marked down.  Here one client
per server holds a connection pool to the agents (the TLS settings of the server's relay),
at most ``max_streams`` relays run at once (more are answered 429 with ``Retry-After``),
and the client is closed when the server stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse

DEFAULT_MAX_STREAMS = 256
"""Log relays open at once: each holds a connection to an agent and one to a client."""
RETRY_AFTER = 5
"""Seconds a refused client is told to wait."""
FETCH_TIMEOUT = 15.0
"""Seconds a short answer from an agent may take (docker stats samples for a second or two)."""


class AgentProxy:
    def __init__(self, verify: Any = True, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self.active = 0
        self._verify = verify
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, read=None),
                verify=self._verify,
                limits=httpx.Limits(max_connections=self.max_streams, max_keepalive_connections=32),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def busy(self) -> JSONResponse:
        return JSONResponse(
            {
                "error": f"{self.active} log streams are open, the most this server relays "
                f"at once ({self.max_streams}, --max-log-streams); try again in "
                f"{RETRY_AFTER}s"
            },
            status_code=429,
            headers={"Retry-After": str(RETRY_AFTER)},
        )

    async def call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        extensions: dict[str, Any],
        unreachable: str,
    ) -> Response:
        """One short request to an agent (restart, signal, a file listing), its answer
        passed back as it came; 502 (``unreachable``, and why) when the agent cannot be
        reached.  Not counted against the streams: it ends within the client's timeout."""
        client = self.client()
        try:
            answer = await client.request(
                method,
                url,
                params=params,
                json=body,
                extensions=extensions,
                timeout=httpx.Timeout(30.0),
            )
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"{unreachable}: {exc}"}, status_code=502)
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    async def relay(
        self,
        url: str,
        params: dict[str, str],
        extensions: dict[str, Any],
        unreachable: str,
        media_type: str = "text/plain; charset=utf-8",
    ) -> Response:
        """The agent's answer to ``GET url``, streamed through; 429 when the relays are
        all taken, 502 (``unreachable``, and why) when the agent cannot be reached."""
        if self.active >= self.max_streams:
            return self.busy()
        self.active += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active -= 1

        try:
            client = self.client()
            upstream = await client.send(
                client.build_request("GET", url, params=params, extensions=extensions),
                stream=True,
            )
        except httpx.HTTPError as exc:
            release()
            return JSONResponse({"error": f"{unreachable}: {exc}"}, status_code=502)
        except BaseException:
            release()
            raise
        if upstream.status_code != 200:
            try:
                body = await upstream.aread()
            finally:
                await upstream.aclose()
                release()
            return Response(
                content=body,
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type"),
            )

        async def close() -> None:
            try:
                await upstream.aclose()
            finally:
                release()

        return _Relay(upstream.aiter_raw(), close, media_type)

    async def fetch(
        self, url: str, params: dict[str, str], extensions: dict[str, Any], unreachable: str
    ) -> Response:
        """The agent's short answer to ``GET url`` (an allocation's stats), read whole and
        passed on with its status and content type: it takes no stream slot.  502
        (``unreachable``, and why) when the agent cannot be reached."""
        client = self.client()
        try:
            answer = await client.send(
                client.build_request(
                    "GET", url, params=params, extensions=extensions, timeout=FETCH_TIMEOUT
                )
            )
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"{unreachable}: {exc}"}, status_code=502)
        return Response(
            content=answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )


class _Relay(StreamingResponse):
    """A streamed agent answer that closes its upstream however the stream ends (the
    client went away before the first chunk, too: a generator's ``finally`` would not run)."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        media_type: str = "text/plain; charset=utf-8",
    ) -> None:
        super().__init__(chunks, media_type=media_type)
        self._close = close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._close()
