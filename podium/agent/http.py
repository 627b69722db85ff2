"""The agent's own small HTTP API: task logs, read where they are written; allocations'
resource usage (``/v1/client/allocation/{id}/stats``); the agent's metrics (``/v1/metrics``).

Servers proxy ``GET /v1/allocation/{id}/logs`` here, so logs never pass
through the state store.  The task name must be one of the allocation's tasks
(never a path), and the files are opened through the log directory's fd with no
symlink followed (:mod:`podium.drivers.beneath`): the agent runs as root, the
directory is the task's.  Reading spans rotated files (oldest first) and the
current one; ``follow`` keeps the response open and streams what is appended,
starting over at the top of the file when a rotation truncates it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from podium.agent import ops_http
from podium.agent.agent import Agent
from podium.agent.exec_api import add_exec_route
from podium.agent.usage import alloc_usage, running_tasks
from podium.drivers.logrotate import open_log_dir, open_segment, segment_names
from podium.metrics import metrics_answer
from podium.metrics.exposition import FORMATS

CHUNK = 64 * 1024
FOLLOW_POLL = 0.25


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _read_all(fd: int, start: int) -> Iterator[bytes]:
    os.lseek(fd, start, os.SEEK_SET)
    while data := os.read(fd, CHUNK):
        yield data


class _Logs:
    """One task's log files, read through the log directory's fd: no path component
    below the allocation's directory is followed through a symlink (the task owns it)."""

    def __init__(self, dir_fd: int, base: str) -> None:
        self.dir_fd = dir_fd
        self.base = base

    def open(self, name: str) -> int | None:
        return open_segment(self.dir_fd, name)

    def names(self) -> list[str]:
        return segment_names(self.dir_fd, self.base)

    def close(self) -> None:
        os.close(self.dir_fd)


def parse_offset(raw: str) -> int | None:
    """``offset``: a non-negative integer (bytes), else None."""
    text = raw.strip()
    return int(text) if text.isdigit() else None


def create_agent_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="Podium agent", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/client/allocation/{alloc_id}/logs")
    async def logs(
        alloc_id: str,
        task: str,
        type: str = "stdout",
        origin: str = "start",
        offset: str = "0",
        follow: bool = False,
    ) -> Response:
        if type not in ("stdout", "stderr"):
            return _error(400, "type must be stdout or stderr")
        if origin not in ("start", "end"):
            return _error(400, f"origin must be start or end, not {origin!r}")
        skip = parse_offset(offset)
        if skip is None:
            return _error(400, f"offset must be a non-negative integer (bytes), not {offset!r}")
        runner = agent.runners.get(alloc_id)
        if runner is None:
            return _error(404, f"no logs for allocation {alloc_id} on this node")
        tasks = list(runner.machine.tasks)
        if task not in tasks:
            # only the job's own task names: never a path (../../x) into the node
            return _error(
                404, f"allocation {alloc_id} has no task {task!r} (tasks: {', '.join(tasks)})"
            )
        try:
            dir_fd = open_log_dir(runner.alloc_path)
        except FileNotFoundError:
            return _error(404, f"no logs for allocation {alloc_id} on this node")
        except OSError as exc:
            return _error(403, f"the log directory of allocation {alloc_id} is unsafe: {exc}")
        files = _Logs(dir_fd, f"{task}.{type}")

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in _stream(files, origin, skip, follow, alloc_id):
                    yield chunk
            finally:
                files.close()

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")

    async def _stream(
        files: _Logs, origin: str, offset: int, follow: bool, alloc_id: str
    ) -> AsyncIterator[bytes]:
        base = files.base
        opened = [(n, fd) for n in files.names() if (fd := files.open(n)) is not None]
        try:
            sizes = [os.fstat(fd).st_size for _n, fd in opened]
            total = sum(sizes)
            start = offset if origin == "start" else max(0, total - offset)
            # the bytes before `start` are skipped across segments
            pos_in_current = 0
            for (name, fd), size in zip(opened, sizes, strict=True):
                if start >= size:
                    start -= size
                    if name == base:
                        pos_in_current = size
                    continue
                for data in _read_all(fd, start):
                    yield data
                if name == base:
                    pos_in_current = os.lseek(fd, 0, os.SEEK_CUR)
                start = 0
        finally:
            for _n, fd in opened:
                os.close(fd)
        if not follow:
            return
        while True:
            await asyncio.sleep(FOLLOW_POLL)
            fd = files.open(base)
            if fd is None:
                if agent.runners.get(alloc_id) is None:
                    return
                continue
            try:
                size = os.fstat(fd).st_size
                if size < pos_in_current:
                    # Rotated (copy-truncate): what was written after our last read went
                    # into the newest rotated copy; send that tail, then the new file.
                    rotated = [n for n in files.names() if n != base]
                    old = files.open(rotated[-1]) if rotated else None
                    if old is not None:
                        try:
                            os.lseek(old, pos_in_current, os.SEEK_SET)
                            tail = b"".join(_read_all(old, pos_in_current))
                        finally:
                            os.close(old)
                        if tail:
                            yield tail
                    pos_in_current = 0
                if size > pos_in_current:
                    os.lseek(fd, pos_in_current, os.SEEK_SET)
                    data = os.read(fd, size - pos_in_current)
                    pos_in_current += len(data)
                    yield data
            finally:
                os.close(fd)
            runner = agent.runners.get(alloc_id)
            if runner is None or (runner.machine.terminal() and size == pos_in_current):
                return

    ops_http.add_routes(app, agent)  # restart, signal, fs, monitor (issue 16)
    add_exec_route(app, agent)

    @app.get("/v1/client/allocation/{alloc_id}/stats")
    async def stats(alloc_id: str) -> Response:
        """The allocation's resource usage (podium.agent.usage): what the servers relay as
        ``/v1/allocation/{id}/stats``."""
        runner = agent.runners.get(alloc_id)
        if runner is None:
            return _error(404, f"allocation {alloc_id} is not on this node")
        if not running_tasks(runner):
            return _error(
                409,
                f"allocation {alloc_id} has no running task on this node "
                f"(client status {runner.machine.alloc.client_status.value}): "
                "there is no resource usage to report",
            )
        usage = await alloc_usage(agent, runner)
        return Response(usage.model_dump_json(), media_type="application/json")

    @app.get("/v1/metrics")
    async def metrics(format: str | None = None) -> Response:
        """This agent's metrics (podium.agent.metrics); ``format=json`` for JSON."""
        registry = agent.metrics.registry(agent)
        if format in FORMATS or not format:  # else metrics_answer's 400
            await agent.metrics.sample(agent)
        return metrics_answer(registry, format)

    @app.get("/v1/client/status")
    async def status() -> JSONResponse:
        return JSONResponse({"node_id": agent.node_id, "allocs": len(agent.runners)})

    return app
