"""The agent's end of ``podium alloc exec``: ``/v1/client/allocation/{id}/exec``, a WebSocket.

Only a server reaches it with a valid request: the server relays the user's session here
(podium.server.exec_relay) with a *grant* (:mod:`podium.models.execproto`) that only this
node's servers can compute, for exactly this allocation, task, command and TTY, good for
seconds and accepted once.  Under TLS the endpoint also wants a server's certificate, as
every route of the agent.  Then the task's driver runs the command in the task's context
(:meth:`podium.drivers.base.Driver.exec`) and this module pumps frames both ways:
client frames to the command's stdin and terminal, its output back, and finally
``{"exited": true, "result": {"exit_code": n}}``.  A client that goes away ends the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from podium.agent.agent import Agent
from podium.agent.allocrunner import Phase
from podium.drivers.base import ExecSession
from podium.errors import DriverError
from podium.models.acl import hash_secret
from podium.models.execproto import (
    GRANT_HEADER,
    ProtocolError,
    check_grant,
    error_frame,
    exited_frame,
    output_frame,
    parse_client_frame,
    parse_command,
)

log = logging.getLogger(__name__)


class _Nonces:
    """Grants already used, until they expire: a grant starts one session, never two."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def use(self, nonce: str, expires: int, now: float) -> bool:
        if len(self._seen) > 1024:
            self._seen = {n: e for n, e in self._seen.items() if e >= now}
        if nonce in self._seen:
            return False
        self._seen[nonce] = expires
        return True


async def deny(ws: WebSocket, status: int, message: str) -> None:
    """Refuse the upgrade with an HTTP answer (JSON ``{"error"}``) the client can show."""
    await ws.send_denial_response(JSONResponse({"error": message}, status_code=status))


def truthy(raw: str | None) -> bool:
    return (raw or "").lower() in ("1", "true", "yes")


def add_exec_route(app: FastAPI, agent: Agent) -> None:
    nonces = _Nonces()

    @app.websocket("/v1/client/allocation/{alloc_id}/exec")
    async def exec_ws(ws: WebSocket, alloc_id: str) -> None:
        task = ws.query_params.get("task", "")
        tty = truthy(ws.query_params.get("tty"))
        try:
            command = parse_command(ws.query_params.get("command"))
        except ProtocolError as exc:
            await deny(ws, 400, str(exc))
            return
        secret = agent.state.get("node_secret")
        if not secret:
            await deny(ws, 503, "this agent has no node secret yet (not registered)")
            return
        now = time.time()
        try:
            nonce, expires = check_grant(
                ws.headers.get(GRANT_HEADER),
                hash_secret(secret),
                alloc_id,
                task,
                command,
                tty,
                now,
            )
        except ProtocolError as exc:
            await deny(ws, 403, str(exc))
            return
        if not nonces.use(nonce, expires, now):
            await deny(ws, 403, "this exec grant was used already")
            return
        runner = agent.runners.get(alloc_id)
        if runner is None:
            await deny(ws, 404, f"allocation {alloc_id} is not on this node")
            return
        tracks = runner.machine.tasks
        if task not in tracks:
            await deny(
                ws, 404, f"allocation {alloc_id} has no task {task!r} (tasks: {', '.join(tracks)})"
            )
            return
        handle = runner.handles.get(task)
        if tracks[task].phase != Phase.RUNNING or handle is None:
            await deny(
                ws,
                409,
                f"task {task} of allocation {alloc_id} is not running "
                f"({tracks[task].phase.value}): there is nothing to run a command in",
            )
            return
        try:
            session = await runner.driver_for(task).exec(handle, runner.context(task), command, tty)
        except DriverError as exc:
            await deny(ws, 400, str(exc))
            return
        log.info("exec in %s/%s: %s (tty=%s)", alloc_id, task, command, tty)
        try:
            await ws.accept()
            await pump(ws, session)
        finally:
            await session.kill()


async def pump(ws: WebSocket, session: ExecSession) -> None:
    """Frames both ways until the command exits (``exited`` sent) or the client leaves."""

    async def inbound() -> None:
        while True:
            try:
                text = await ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            frame = parse_client_frame(text)
            if frame.data is not None:
                await session.write(frame.data)
            elif frame.close:
                await session.close_stdin()
            elif frame.size is not None:
                await session.resize(*frame.size)

    async def outbound() -> None:
        while (item := await session.read()) is not None:
            stream, data = item
            await ws.send_text(output_frame(stream, data))
        code = await session.wait()
        await ws.send_text(exited_frame(code))

    reader = asyncio.create_task(inbound())
    writer = asyncio.create_task(outbound())
    try:
        done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done and reader.exception() is None and not writer.done():
            # the client left (or closed the socket): end the command
            return
        for t in done:
            exc = t.exception()
            if isinstance(exc, ProtocolError):
                with contextlib.suppress(Exception):
                    await ws.send_text(error_frame(f"bad frame: {exc}"))
                    await ws.close(code=1008)
                return
            if exc is not None and not isinstance(exc, (WebSocketDisconnect, OSError)):
                with contextlib.suppress(Exception):
                    await ws.send_text(error_frame(f"exec failed: {exc}"))
                    await ws.close(code=1011)
                return
        with contextlib.suppress(Exception):
            await ws.close(code=1000)
    finally:
        for t in (reader, writer):
            t.cancel()
        for t in (reader, writer):
            with contextlib.suppress(BaseException):
                await t
