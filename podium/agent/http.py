"""The agent's own small HTTP API: task logs, read where they are written.

Servers proxy ``GET /v1/allocation/{id}/logs`` here, so logs never pass
through the state store.  Reading spans rotated files (oldest first) and the
current one; ``follow`` keeps the response open and streams what is appended,
starting over at the top of the file when a rotation truncates it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from podium.agent.agent import Agent
from podium.drivers.logrotate import log_files

CHUNK = 64 * 1024
FOLLOW_POLL = 0.25


def _segments(path: Path) -> list[Path]:
    return [Path(p) for p in log_files(str(path)) if os.path.exists(p)]


def create_agent_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="Podium agent", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/client/allocation/{alloc_id}/logs")
    async def logs(
        alloc_id: str,
        task: str,
        type: str = "stdout",
        origin: str = "start",
        offset: int = 0,
        follow: bool = False,
    ) -> Response:
        if type not in ("stdout", "stderr"):
            return JSONResponse({"error": "type must be stdout or stderr"}, status_code=400)
        path = agent.alloc_log_path(alloc_id, task, type)
        if not path.parent.exists():
            return JSONResponse(
                {"error": f"no logs for allocation {alloc_id} on this node"}, status_code=404
            )
        if not path.exists() and not _segments(path):
            runner = agent.runners.get(alloc_id)
            tasks = list(runner.machine.tasks) if runner else []
            if runner and task not in tasks:
                return JSONResponse(
                    {
                        "error": f"allocation {alloc_id} has no task {task!r} "
                        f"(tasks: {', '.join(tasks)})"
                    },
                    status_code=404,
                )

        async def stream() -> AsyncIterator[bytes]:
            segments = _segments(path)
            sizes = [p.stat().st_size for p in segments]
            total = sum(sizes)
            start = offset if origin == "start" else max(0, total - offset)
            # the bytes before `start` are skipped across segments
            pos_in_current = 0
            for seg, size in zip(segments, sizes, strict=True):
                if start >= size:
                    start -= size
                    if seg == path:
                        pos_in_current = size
                    continue
                with open(seg, "rb") as f:
                    f.seek(start)
                    while True:
                        data = f.read(CHUNK)
                        if not data:
                            break
                        yield data
                    if seg == path:
                        pos_in_current = f.tell()
                start = 0
            if not follow:
                return
            while True:
                await asyncio.sleep(FOLLOW_POLL)
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    runner = agent.runners.get(alloc_id)
                    if runner is None:
                        return
                    continue
                if size < pos_in_current:
                    # Rotated (copy-truncate): what was written after our last read went
                    # into the newest rotated copy; send that tail, then the new file.
                    rotated = [p for p in _segments(path) if p != path]
                    if rotated:
                        with open(rotated[-1], "rb") as f:
                            f.seek(pos_in_current)
                            tail = f.read()
                        if tail:
                            yield tail
                    pos_in_current = 0
                if size > pos_in_current:
                    with open(path, "rb") as f:
                        f.seek(pos_in_current)
                        data = f.read(size - pos_in_current)
                    pos_in_current += len(data)
                    yield data
                runner = agent.runners.get(alloc_id)
                if runner is None or (runner.machine.terminal() and size == pos_in_current):
                    return

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")

    @app.get("/v1/client/status")
    async def status() -> JSONResponse:
        return JSONResponse({"node_id": agent.node_id, "allocs": len(agent.runners)})

    return app
