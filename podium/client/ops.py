"""The day-two calls of the API as data (issue 16): restart, signal and stop an
allocation, read its files, and follow a server's or an agent's log.

Kept apart from :mod:`podium.client.endpoints` (same :class:`Endpoint` type, same rules)
so that the calls of one feature read together; :class:`podium.client.Client` and
:class:`podium.client.AsyncClient` execute them.  The streamed ones (a file's bytes, the
monitor's lines) are paths and parameters, as the logs are.
"""

from __future__ import annotations

import json
from typing import Any

from podium.client.endpoints import Endpoint, _seg
from podium.client.results import StopResult
from podium.models.alloc_ops import FileInfo, FsListing, RestartAnswer, SignalAnswer

MONITOR = "/v1/agent/monitor"
LOG_LEVELS = ("debug", "info", "warning", "error")


def restart_alloc(
    alloc_id: str, task: str | None = None, all_tasks: bool = False
) -> Endpoint[RestartAnswer]:
    """Restart the task (or the running tasks, or ``all_tasks``) in place."""
    if task is not None and all_tasks:
        raise ValueError("name a task or ask for all tasks, not both")
    body: dict[str, Any] = {"all_tasks": all_tasks}
    if task is not None:
        body["task"] = task
    return Endpoint(
        "POST",
        f"/v1/allocation/{_seg(alloc_id)}/restart",
        RestartAnswer.model_validate,
        body=body,
    )


def signal_alloc(alloc_id: str, signal: str, task: str | None = None) -> Endpoint[SignalAnswer]:
    """Deliver ``signal`` to the task (or every running task)."""
    if not signal.strip():
        raise ValueError("name a signal (for example SIGUSR1)")
    body: dict[str, Any] = {"signal": signal}
    if task is not None:
        body["task"] = task
    return Endpoint(
        "POST", f"/v1/allocation/{_seg(alloc_id)}/signal", SignalAnswer.model_validate, body=body
    )


def stop_alloc(alloc_id: str) -> Endpoint[StopResult]:
    """Stop the allocation; the evaluation it answers places its replacement."""
    return Endpoint("POST", f"/v1/allocation/{_seg(alloc_id)}/stop", StopResult.model_validate)


def alloc_fs_ls(alloc_id: str, path: str = "") -> Endpoint[FsListing]:
    """A directory's entries (``path`` relative to the allocation's directory)."""
    return Endpoint(
        "GET", f"/v1/allocation/{_seg(alloc_id)}/fs/ls", FsListing.model_validate, {"path": path}
    )


def alloc_fs_stat(alloc_id: str, path: str = "") -> Endpoint[FileInfo]:
    return Endpoint(
        "GET", f"/v1/allocation/{_seg(alloc_id)}/fs/stat", FileInfo.model_validate, {"path": path}
    )


def alloc_fs_cat_path(alloc_id: str) -> str:
    return f"/v1/allocation/{_seg(alloc_id)}/fs/cat"


def alloc_fs_cat_params(
    path: str, offset: int = 0, limit: int = 0, follow: bool = False
) -> dict[str, str]:
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit are non-negative numbers of bytes")
    params = {"path": path, "offset": str(offset), "limit": str(limit)}
    if follow:
        params["follow"] = "true"
    return params


def monitor_params(log_level: str = "info", node_id: str | None = None) -> dict[str, str]:
    if log_level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    params = {"log_level": log_level.lower()}
    if node_id:
        params["node_id"] = node_id
    return params


def parse_line(line: str) -> dict[str, Any] | None:
    """One monitor line as a record (None for a blank line)."""
    line = line.strip()
    if not line:
        return None
    record = json.loads(line)
    return record if isinstance(record, dict) else {"message": str(record)}
