"""The agent's day-two routes: restart and signal a task, read an allocation's files, and
this process's live log (issue 16).

Servers relay ``/v1/allocation/{id}/restart|signal|fs/...`` and ``/v1/agent/monitor``
(``node_id=``) here after their own checks (ACL, the task's name, the signal's); this side
checks again, since it is what acts.  Routes under ``/v1/client/allocation/{id}``:

- ``POST restart`` ``{task?, all_tasks?}``: the task(s) are killed and started again in
  place (:class:`~podium.agent.allocrunner.RestartRequested` with ``operator=True``: neither
  the restart policy's attempts nor the task's ``restarts`` count it; the task event
  ``Restart Signaled`` records it);
- ``POST signal`` ``{signal, task?}``: the driver delivers the signal (every running task
  without ``task``); the task event ``Signaling`` records it;
- ``GET fs/ls|stat|cat?path=``: files *within the allocation's directory*, opened from its
  directory fd with no symlink followed (:mod:`podium.drivers.beneath`): an absolute path,
  ``..`` and a symlink anywhere on the way are refused, so a task that links
  ``/etc/shadow`` into its directory cannot make the agent (root) read it; nor can a
  hard link (a file with more than one link is refused: it may be one from outside, on
  a kernel that lets a user link a file it cannot read).  A task's
  ``secrets/`` directory is never served (its workload token lives there), as Nomad's
  ``alloc fs`` refuses it.

Writes want ``Content-Type: application/json`` (a browser's cross-site form cannot send it
without a preflight this endpoint never answers): without TLS the agent's endpoint is
guarded only by its Host check; with TLS only a server's certificate reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from podium import logstream
from podium.agent.agent import Agent
from podium.agent.allocrunner import Phase, RestartRequested, TaskSignaled
from podium.agent.runner import AllocRunner
from podium.drivers.beneath import open_beneath, open_dir
from podium.errors import DriverError
from podium.models import parse_duration
from podium.models.job import signal_name

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
FOLLOW_POLL = 0.25
SECRETS_DIR = "secrets"
MAX_LIST = 10_000
"""Entries one listing answers at most (a directory a task filled is cut, and says so)."""


class FsError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request, shape: str) -> dict[str, Any] | JSONResponse:
    """The request's JSON object, or the error answer: 415 for another content type (a
    cross-site form), 400 for a body that is not a JSON object of the route's ``shape``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return _error(415, "this route takes a JSON body (Content-Type: application/json)")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _error(400, f"the body must be a JSON object: {shape}")
    return body


# --------------------------------------------------------------------------- paths


def check_path(path: str, tasks: list[str]) -> str:
    """``path`` as a plain relative path below the allocation's directory ("" for the
    directory itself), or :class:`FsError` saying what is wrong with it."""
    if "\x00" in path:
        raise FsError(400, "path has a NUL byte: refused")
    if path in ("", ".", "/"):
        return ""
    if path.startswith("/"):
        raise FsError(
            400,
            f"path {path!r} is absolute: give a path relative to the allocation's "
            "directory (for example alloc/logs, or a task's name)",
        )
    trimmed = path.rstrip("/")
    parts = trimmed.split("/")
    if any(p == ".." for p in parts):
        raise FsError(400, f"path {path!r} climbs out with '..': refused")
    if any(p in ("", ".") for p in parts):
        raise FsError(400, f"path {path!r} has an empty or '.' part: write it plainly")
    if len(parts) >= 2 and parts[0] in tasks and parts[1] == SECRETS_DIR:
        raise FsError(403, f"{parts[0]}/{SECRETS_DIR} holds the task's secrets: not served")
    return trimmed


def _os_refusal(path: str, exc: OSError) -> FsError:
    if exc.errno == errno.ENOENT:
        return FsError(404, f"{path!r} does not exist in the allocation's directory")
    if exc.errno == errno.ENOTDIR:
        return FsError(400, f"a part of {path!r} is not a directory")
    if exc.errno in (errno.ELOOP, errno.EXDEV, errno.EMLINK):
        return FsError(
            403, f"{path!r} goes through a symlink: refused (only real files are served)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FsError(403, f"{path!r} cannot be read: {exc.strerror}")
    return FsError(400, f"{path!r} cannot be opened: {exc.strerror}")


def _open(root: int, path: str, flags: int) -> int:
    if not path:
        return os.dup(root)
    try:
        return open_beneath(root, path, flags)
    except OSError as exc:
        raise _os_refusal(path, exc) from None


def _parent(root: int, path: str) -> tuple[int, str]:
    """An fd for ``path``'s directory (beneath ``root``) and its last name."""
    head, _, name = path.rpartition("/")
    return _open(root, head, os.O_RDONLY | os.O_DIRECTORY), name


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _info(name: str, path: str, st: os.stat_result, target: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": name,
        "path": path,
        "type": _kind(st.st_mode),
        "is_dir": stat.S_ISDIR(st.st_mode),
        "size": st.st_size,
        "mode": stat.filemode(st.st_mode),
        "mod_time": st.st_mtime,
    }
    if target is not None:
        info["link_target"] = target
    return info


def _entry(dir_fd: int, name: str, path: str) -> dict[str, Any]:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    target = None
    if stat.S_ISLNK(st.st_mode):
        with contextlib.suppress(OSError):
            target = os.readlink(name, dir_fd=dir_fd)
    return _info(name, path, st, target)


def fs_stat(root: int, path: str) -> dict[str, Any]:
    if not path:
        return _info("/", "", os.fstat(root))
    parent, name = _parent(root, path)
    try:
        return _entry(parent, name, path)
    except OSError as exc:
        raise _os_refusal(path, exc) from None
    finally:
        os.close(parent)


def fs_list(root: int, path: str) -> dict[str, Any]:
    fd = _open(root, path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = sorted(os.listdir(fd))
        entries = []
        for name in names[:MAX_LIST]:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                entries.append(_entry(fd, name, f"{path}/{name}" if path else name))
        return {"path": path, "entries": entries, "truncated": len(names) > MAX_LIST}
    finally:
        os.close(fd)


def fs_open_file(root: int, path: str) -> int:
    """A regular file's fd (non-blocking open: a FIFO the task made cannot hang us)."""
    if not path:
        raise FsError(400, "the allocation's directory is a directory: list it instead")
    fd = _open(root, path, os.O_RDONLY | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory: list it instead" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise FsError(400, f"{path!r} is {kind}")
    if st.st_nlink > 1:
        # A hard link is the same file as one elsewhere: where protected_hardlinks is off,
        # a task could link a file it cannot read (/etc/shadow) and have root read it.
        os.close(fd)
        raise FsError(
            403, f"{path!r} has other hard links: refused (it may be a file from outside)"
        )
    return fd


# --------------------------------------------------------------------------- routes


def add_routes(app: FastAPI, agent: Agent) -> None:
    """Declare the routes on the agent's app (:func:`podium.agent.http.create_agent_app`)."""

    def runner_of(alloc_id: str) -> AllocRunner | JSONResponse:
        runner = agent.runners.get(alloc_id)
        if runner is None:
            return _error(404, f"allocation {alloc_id} does not run on this node")
        return runner

    def tasks_of(runner: AllocRunner, task: str | None) -> list[str] | JSONResponse:
        tasks = list(runner.machine.tasks)
        if task is not None and task not in tasks:
            return _error(
                404,
                f"allocation {runner.id} has no task {task!r} (tasks: {', '.join(tasks)})",
            )
        return tasks

    @app.post("/v1/client/allocation/{alloc_id}/restart")
    async def restart(alloc_id: str, request: Request) -> Response:
        body = await _json_body(request, "{task?, all_tasks?}")
        if isinstance(body, JSONResponse):
            return body
        task, all_tasks = body.get("task"), bool(body.get("all_tasks", False))
        runner = runner_of(alloc_id)
        if isinstance(runner, JSONResponse):
            return runner
        tasks = tasks_of(runner, task)
        if isinstance(tasks, JSONResponse):
            return tasks
        machine = runner.machine
        if machine.stopping or machine.terminal():
            return _error(409, f"allocation {alloc_id} is stopping or done: nothing to restart")
        running = [t for t in tasks if machine.tasks[t].phase == Phase.RUNNING]
        if task is not None:
            wanted = [task]
        elif all_tasks:
            wanted = tasks
        else:
            wanted = running
        idle = [t for t in wanted if t not in running]
        if idle or not wanted:
            phases = ", ".join(f"{t}: {machine.tasks[t].phase.value}" for t in idle or tasks)
            return _error(409, f"only running tasks can be restarted ({phases})")
        for t in wanted:
            log.info("alloc %s task %s: restart requested by an operator", alloc_id, t)
            runner.dispatch(
                RestartRequested(
                    runner.now(), t, reason="restart requested by an operator", operator=True
                )
            )
        return JSONResponse({"restarted": wanted})

    @app.post("/v1/client/allocation/{alloc_id}/signal")
    async def send_signal(alloc_id: str, request: Request) -> Response:
        body = await _json_body(request, "{signal, task?}")
        if isinstance(body, JSONResponse):
            return body
        if not isinstance(body.get("signal"), str):
            return _error(400, "the body must be a JSON object: {signal, task?}")
        try:
            sig = signal_name(body["signal"], "for example SIGUSR1, HUP")
        except ValueError as exc:
            return _error(400, str(exc))
        task = body.get("task")
        runner = runner_of(alloc_id)
        if isinstance(runner, JSONResponse):
            return runner
        tasks = tasks_of(runner, task)
        if isinstance(tasks, JSONResponse):
            return tasks
        machine = runner.machine
        wanted = [task] if task is not None else tasks
        targets = [
            t
            for t in wanted
            if machine.tasks[t].phase == Phase.RUNNING and runner.handles.get(t) is not None
        ]
        if not targets or (task is not None and task not in targets):
            return _error(409, f"no running task of allocation {alloc_id} to signal")
        sent: list[str] = []
        for t in targets:
            handle = runner.handles[t]
            try:
                await runner.driver_for(t).signal(handle, sig)
            except DriverError as exc:
                return _error(409, f"task {t}: {exc}")
            log.info("alloc %s task %s: %s sent by an operator", alloc_id, t, sig)
            runner.dispatch(TaskSignaled(runner.now(), t, sig))
            sent.append(t)
        return JSONResponse({"signal": sig, "tasks": sent})

    def fs_root(alloc_id: str, path: str) -> tuple[int, str]:
        runner = agent.runners.get(alloc_id)
        if runner is None:
            raise FsError(404, f"allocation {alloc_id} does not run on this node")
        clean = check_path(path, list(runner.machine.tasks))
        try:
            return open_dir(runner.alloc_path), clean
        except FileNotFoundError:
            raise FsError(404, f"allocation {alloc_id} has no directory on this node") from None
        except OSError as exc:
            raise FsError(403, f"the directory of allocation {alloc_id} is unsafe: {exc}") from None

    def fs_json(alloc_id: str, path: str, read: Callable[[int, str], Any]) -> Response:
        """``read(root fd, clean path)`` of the allocation's directory as JSON."""
        try:
            root, clean = fs_root(alloc_id, path)
            try:
                return JSONResponse(read(root, clean))
            finally:
                os.close(root)
        except FsError as exc:
            return _error(exc.status, str(exc))

    @app.get("/v1/client/allocation/{alloc_id}/fs/ls")
    async def fs_ls(alloc_id: str, path: str = "") -> Response:
        return fs_json(alloc_id, path, fs_list)

    @app.get("/v1/client/allocation/{alloc_id}/fs/stat")
    async def fs_stat_route(alloc_id: str, path: str = "") -> Response:
        return fs_json(alloc_id, path, fs_stat)

    @app.get("/v1/client/allocation/{alloc_id}/fs/cat")
    async def fs_cat(
        alloc_id: str, path: str = "", offset: int = 0, limit: int = 0, follow: bool = False
    ) -> Response:
        if offset < 0 or limit < 0:
            return _error(400, "offset and limit are non-negative numbers of bytes")
        try:
            root, clean = fs_root(alloc_id, path)
            try:
                fd = fs_open_file(root, clean)
            finally:
                os.close(root)
        except FsError as exc:
            return _error(exc.status, str(exc))
        return StreamingResponse(
            _cat(fd, alloc_id, offset, limit, follow),
            media_type="application/octet-stream",
        )

    async def _cat(
        fd: int, alloc_id: str, offset: int, limit: int, follow: bool
    ) -> AsyncIterator[bytes]:
        left = limit or -1
        pos = offset
        try:
            while True:
                size = os.fstat(fd).st_size
                while pos < size and left != 0:
                    want = CHUNK if left < 0 else min(CHUNK, left)
                    data = os.pread(fd, want, pos)
                    if not data:
                        break
                    pos += len(data)
                    if left > 0:
                        left -= len(data)
                    yield data
                if not follow or left == 0:
                    return
                runner = agent.runners.get(alloc_id)
                if runner is None or runner.machine.terminal():
                    return
                await asyncio.sleep(FOLLOW_POLL)
        finally:
            os.close(fd)

    @app.get("/v1/client/monitor")
    async def monitor(log_level: str = "info", duration: str | None = None) -> Response:
        try:
            level = logstream.parse_level(log_level)
            seconds = None if duration is None else parse_duration(duration)
        except ValueError as exc:
            return _error(400, str(exc))
        return logstream.hub().response(level, f"agent {agent.node_name}", duration=seconds)
