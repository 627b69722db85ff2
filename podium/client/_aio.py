"""The async client's HTTP exchanges over aiohttp.

Why not httpx here, as everywhere else in the SDK: an agent sends a request or
two for every allocation it runs (its blocking sync, its state report), and on
a node with hundreds of allocations, or a simulator holding thousands of
agents, the HTTP client's own CPU is the agent's main cost.  Measured on the
development VM (bench/http_client.py): one keep-alive GET of a 2 KB answer
costs ~650-950 µs of CPU through httpx, httpcore, anyio and h11, ~75-120 µs
through aiohttp (C parser, no per-request cancel scopes).
httpx stays for the sync client, for the ASGI transport the tests and the
in-process simulator use, and for log streaming.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from podium.client._http import Prepared, unreachable

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class AioAnswer:
    """A read answer: what :func:`podium.client._http.finish` reads of a response."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _headers(json_body: bool, extra: Mapping[str, str]) -> Mapping[str, str] | None:
    if not extra:
        return JSON_HEADERS if json_body else None
    return {**JSON_HEADERS, **extra} if json_body else extra


class AioSender:
    """One aiohttp session (its connection pool, keep-alive) made on first use, inside
    the running loop as aiohttp asks; closed with :meth:`aclose`."""

    def __init__(
        self,
        address: str,
        headers: Mapping[str, str],
        keepalive: float,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.address = address
        self._ssl: ssl.SSLContext | bool = verify
        self._headers = dict(headers)
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None
        self._closing: list[aiohttp.ClientSession] = []
        """Sessions replaced by :meth:`set_headers`, closed by :meth:`aclose`."""
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def set_headers(self, headers: Mapping[str, str]) -> None:
        """Send ``headers`` with every request from now on (the session's too, if open)."""
        self._headers = dict(headers)
        if self._session is not None:
            session, self._session = self._session, None
            self._closing.append(session)

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            cookie_jar=aiohttp.DummyCookieJar(),  # the API sets no cookies
            skip_auto_headers=("Accept-Encoding",),  # answers are small JSON on a LAN
        )
        return self._session

    def set_ssl(self, verify: ssl.SSLContext) -> None:
        """New connections use ``verify`` (the pool keys connections by it)."""
        self._ssl = verify

    def _timeout(self, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
        key = (connect, read)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read
            )
        return timeout

    async def send(self, req: Prepared) -> AioAnswer:
        session = self._session or self._open()
        url = self.address + req.url
        if req.params:
            # ',', '@' and ':' may stand in a query as they are (RFC 3986): an agent's
            # `have` list (job@version@index,...) then needs no percent-decoding
            url += "?" + urlencode(req.params, safe=",@:")
        data = None if req.json is None else json.dumps(req.json).encode()
        try:
            async with session.request(
                req.method,
                URL(url, encoded=True),  # paths are quoted already (endpoints._seg)
                data=data,
                headers=_headers(data is not None, req.headers),
                timeout=self._timeout(req.timeout.connect, req.timeout.read),
                ssl=self._ssl,
            ) as response:
                content = await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise unreachable(self.address, "connect", exc) from exc
        except TimeoutError as exc:
            raise unreachable(self.address, "timeout", exc) from exc
        except aiohttp.ClientError as exc:
            raise unreachable(self.address, "lost", exc) from exc
        return AioAnswer(response.status, response.reason or "", response.headers, content)

    async def aclose(self) -> None:
        for old in self._closing:
            await old.close()
        self._closing.clear()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


__all__ = ["AioAnswer", "AioSender"]
