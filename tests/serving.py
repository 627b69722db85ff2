"""A Podium app (or any ASGI app) served by a real uvicorn on a loopback socket, in the
test's event loop: for what httpx's ASGI transport cannot show (streams that never end,
real sockets)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


async def start_uvicorn(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """Serve ``app``: the uvicorn server, its task and its ``http://127.0.0.1:PORT``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """``app`` served while the block runs; its address."""
    server, task, address = await start_uvicorn(app)
    try:
        yield address
    finally:
        server.should_exit = True
        server.force_exit = True
        await task
