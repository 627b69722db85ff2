"""``GET /v1/operator/snapshot``: a consistent copy of the store, taken online.

The backend writes the snapshot (``Backend.snapshot``: SQLite's online backup API, one
read transaction, so one committed index) into a temporary file on a worker thread: the
event loop goes on serving, and writes go on landing in the WAL meanwhile.  SQLite's
integrity check and the format's tables are checked on that thread too, before a byte
is sent; ``podium operator snapshot restore`` checks every row again before it replaces
anything.  The answer is the file (``application/vnd.sqlite3``), with the index it was
taken at in ``X-Podium-Index``.  It holds everything (sealed variables, token hashes):
only a management token may take one (podium.server.acl RULES).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from podium.server.api_docs import errors
from podium.state.snapshot import verify

if TYPE_CHECKING:
    from podium.server.core import Server

MEDIA_TYPE = "application/vnd.sqlite3"


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def router(server: Server) -> APIRouter:
    r = APIRouter()

    @r.get(
        "/v1/operator/snapshot",
        response_class=FileResponse,
        tags=["operator"],
        responses={
            200: {
                "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                "description": "The snapshot file (a SQLite database).",
            },
            **errors(503, 507),
        },
        summary="Save a consistent snapshot of the server's state",
    )
    async def save_snapshot() -> FileResponse:
        fd, tmp = tempfile.mkstemp(prefix="podium-snapshot-", suffix=".db")
        os.close(fd)
        os.unlink(tmp)  # the backup makes the file; a stale empty one would confuse it
        try:
            await asyncio.to_thread(server.store.backend.snapshot, tmp)
            info = await asyncio.to_thread(verify, tmp, deep=False)
        except BaseException:
            _unlink(tmp)
            raise
        return FileResponse(
            tmp,
            media_type=MEDIA_TYPE,
            filename=f"podium-snapshot-{info.index}.db",
            headers={"X-Podium-Index": str(info.index)},
            background=BackgroundTask(_unlink, tmp),
        )

    return r
