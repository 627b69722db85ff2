"""``alloc exec`` in the SDK: a WebSocket to ``/v1/allocation/{id}/exec`` (docs/api.md).

httpx speaks no WebSocket, so this uses ``websockets`` (docs/dependencies.md says why):
its threaded client for :class:`ExecSession` (``Client.exec_session``), its asyncio client
for :class:`AsyncExecSession` (``AsyncClient.exec_session``).  Both send the client's token
and verify TLS as the HTTP client does.  A refused upgrade raises what any refused request
raises (``NotFound``, ``Conflict``, ``APIError(403, …)``); an unreachable server,
:class:`~podium.client.ServerUnreachable`.

Frames (:mod:`podium.models.execproto`): stdin, its end and the terminal size go up; output
(``stdout``/``stderr`` bytes) comes down, then the exit code.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from podium.client._http import ServerUnreachable, error_for
from podium.errors import APIError, PodiumError
from podium.models.execproto import (
    MAX_FRAME_BYTES,
    stdin_close_frame,
    stdin_frame,
    tty_size_frame,
)

OPEN_TIMEOUT = 15.0
STDIN_CHUNK = 32 * 1024
"""Bytes of stdin per frame: large input goes as many small frames (a frame is bounded)."""
_OWN_HEADERS = frozenset(
    {"user-agent", "connection", "upgrade", "host", "accept", "accept-encoding", "content-length"}
)
"""The HTTP client's headers the WebSocket handshake sets itself (httpx's keep-alive would
replace its ``Connection: Upgrade``); the rest (the token) go along."""


@dataclass(frozen=True)
class ExecOutput:
    stream: str
    """``stdout`` or ``stderr`` (with a TTY, everything is ``stdout``)."""
    data: bytes


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    output: list[ExecOutput] = field(default_factory=list)


def exec_url(
    address: str,
    alloc_id: str,
    command: list[str],
    task: str | None,
    tty: bool,
    namespace: str | None,
) -> str:
    if not command:
        raise PodiumError("exec needs a command")
    params: dict[str, str] = {"command": json.dumps(command), "tty": "true" if tty else "false"}
    if task:
        params["task"] = task
    if namespace:
        params["namespace"] = namespace
    base = address.rstrip("/")
    scheme, rest = base.split("://", 1)
    ws = "wss" if scheme == "https" else "ws"
    return f"{ws}://{rest}/v1/allocation/{alloc_id}/exec?{urlencode(params)}"


def connect_kwargs(url: str, headers: Mapping[str, str], verify: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "additional_headers": {k: v for k, v in headers.items() if k.lower() not in _OWN_HEADERS},
        "open_timeout": OPEN_TIMEOUT,
        "max_size": MAX_FRAME_BYTES * 2,
        "compression": None,
        "user_agent_header": "podium-sdk",
    }
    if url.startswith("wss://"):
        kwargs["ssl"] = (
            verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
        )
    return kwargs


def refused(exc: Exception, address: str) -> PodiumError:
    """The exception a failed upgrade (or dial) is raised as."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        r = exc.response
        return error_for(httpx.Response(r.status_code, content=bytes(r.body or b"")))
    return ServerUnreachable(f"cannot open an exec session at {address}: {exc}", address)


def parse_server_frame(text: str | bytes) -> ExecOutput | int | None:
    """An output frame, the exit code (``exited``), or None for a frame to skip; an
    ``error`` frame raises."""
    import base64

    msg = json.loads(text)
    if not isinstance(msg, dict):
        return None
    if msg.get("exited"):
        result = msg.get("result") or {}
        return int(result.get("exit_code", -1))
    if "error" in msg:
        raise APIError(500, f"exec: {msg['error']}")
    for stream in ("stdout", "stderr"):
        if stream in msg:
            return ExecOutput(stream, base64.b64decode(msg[stream].get("data", "")))
    return None


class ExecSession:
    """A command running in a task (blocking).  Iterate it for output; then
    ``exit_code`` is set.  ``send_stdin``/``close_stdin``/``resize`` may be called from
    another thread while one iterates."""

    def __init__(self, url: str, headers: Mapping[str, str], verify: Any, address: str) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        try:
            # entered at once (websockets wants its sync connection used as a context
            # manager; this object is the context the caller holds): exited in close()
            self._ws = connect(url, **connect_kwargs(url, headers, verify)).__enter__()
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise refused(exc, address) from None
        self.exit_code: int | None = None

    def _send(self, frame: str) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):  # it ended: iterating says how
            self._ws.send(frame)

    def send_stdin(self, data: bytes) -> None:
        for chunk in chunks(data):
            self._send(stdin_frame(chunk))

    def close_stdin(self) -> None:
        self._send(stdin_close_frame())

    def resize(self, height: int, width: int) -> None:
        self._send(tty_size_frame(height, width))

    def __iter__(self) -> Iterator[ExecOutput]:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self._ws:
                got = parse_server_frame(message)
                if isinstance(got, int):
                    self.exit_code = got
                    return
                if got is not None:
                    yield got
        except ConnectionClosed:
            pass
        if self.exit_code is None:
            raise APIError(502, "the exec session ended without an exit code")

    def close(self) -> None:
        self._ws.__exit__(None, None, None)

    def __enter__(self) -> ExecSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncExecSession:
    """:class:`ExecSession` for asyncio: ``await AsyncExecSession.open(...)``."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self.exit_code: int | None = None

    @classmethod
    async def open(
        cls, url: str, headers: Mapping[str, str], verify: Any, address: str
    ) -> AsyncExecSession:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        try:
            ws = await connect(url, **connect_kwargs(url, headers, verify))
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise refused(exc, address) from None
        return cls(ws)

    async def _send(self, frame: str) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):  # it ended: iterating says how
            await self._ws.send(frame)

    async def send_stdin(self, data: bytes) -> None:
        for chunk in chunks(data):
            await self._send(stdin_frame(chunk))

    async def close_stdin(self) -> None:
        await self._send(stdin_close_frame())

    async def resize(self, height: int, width: int) -> None:
        await self._send(tty_size_frame(height, width))

    async def __aiter__(self) -> AsyncIterator[ExecOutput]:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self._ws:
                got = parse_server_frame(message)
                if isinstance(got, int):
                    self.exit_code = got
                    return
                if got is not None:
                    yield got
        except ConnectionClosed:
            pass
        if self.exit_code is None:
            raise APIError(502, "the exec session ended without an exit code")

    async def close(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> AsyncExecSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(view), STDIN_CHUNK):
        yield bytes(view[i : i + STDIN_CHUNK])


def collect(outputs: list[ExecOutput], code: int) -> ExecResult:
    return ExecResult(
        exit_code=code,
        stdout=b"".join(o.data for o in outputs if o.stream == "stdout"),
        stderr=b"".join(o.data for o in outputs if o.stream == "stderr"),
        output=outputs,
    )
