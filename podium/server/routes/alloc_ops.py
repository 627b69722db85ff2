"""Day-two operations on one allocation (issue 16): restart, signal, stop, and its files.

- ``POST /v1/allocation/{id}/restart`` ``{task?, all_tasks?}`` and ``POST .../signal``
  ``{signal, task?}`` are checked here (the task is the allocation's, the signal a
  signal) and relayed to the node's agent, as the logs are (podium.server.proxy: the
  server's pooled client and TLS settings), which acts on the task in place
  (podium.agent.ops_http);
- ``POST .../stop`` is a write of the store: the allocation is marked to stop and an
  evaluation replaces it (podium.server.allocstop), so the job keeps its count;
- ``GET .../fs/ls|stat|cat?path=`` relay a listing, a file's details or its bytes from the
  agent, which serves only what lies within the allocation's directory.

The access rules (podium.server.acl): ``alloc-lifecycle`` for the writes, ``read-logs``
for the files (Nomad's ``read-fs``), in the allocation's namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

from podium.errors import Conflict, NotFound
from podium.models import Allocation, DesiredStatus, Node
from podium.models.alloc_ops import FileInfo, FsListing, RestartAnswer, SignalAnswer
from podium.models.api import EvalAnswer
from podium.models.job import signal_name
from podium.server import allocstop
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND, errors
from podium.server.proxy import AgentProxy
from podium.server.routes.common import ApiContext, json_answer

log = logging.getLogger(__name__)

FILE_BYTES: dict[str, Any] = {
    "description": "The file's bytes, streamed (with `follow`, until the allocation ends).",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


class RestartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: StrictStr | None = None
    """One task; without it, every running task of the allocation."""
    all_tasks: StrictBool = False
    """Every task (each must be running); not with ``task``."""


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: StrictStr
    """A signal's name: ``SIGUSR1``, ``usr1``, ``HUP``."""
    task: StrictStr | None = None
    """One task; without it, every running task of the allocation."""


def add_routes(
    router: APIRouter,
    ctx: ApiContext,
    agent_proxy: AgentProxy,
    relay_ext: Callable[[str], dict[str, Any]],
) -> None:
    """``relay_ext``: the TLS extensions of a request to a node's agent (none without TLS)."""
    store = ctx.store
    server = ctx.server

    def known_tasks(alloc: Allocation) -> set[str]:
        known = set(alloc.task_states) | set(alloc.task_resources)
        spec = store.job_spec(alloc.job_id, alloc.job_version, alloc.namespace)
        group = spec.groups.get(alloc.group) if spec is not None else None
        if group is not None:
            known |= set(group.tasks)
        return known

    def check_task(alloc: Allocation, task: str | None) -> None:
        if task is None:
            return
        known = known_tasks(alloc)
        if task not in known:
            raise NotFound(
                f"allocation {alloc.id} has no task {task!r} (tasks: {', '.join(sorted(known))})"
            )

    def live_node(alloc: Allocation, what: str) -> Node:
        if alloc.desired_status == DesiredStatus.STOP or alloc.client_status.terminal:
            raise Conflict(
                f"allocation {alloc.id} is not running (desired {alloc.desired_status.value}, "
                f"client {alloc.client_status.value}): nothing to {what}"
            )
        return node_of(alloc)

    def node_of(alloc: Allocation) -> Node:
        node = store.node(alloc.node_id)
        if node is None or not node.http_addr:
            raise NotFound(f"node {alloc.node_id} of allocation {alloc.id} cannot be reached")
        return node

    def agent_url(node: Node, alloc: Allocation, tail: str) -> str:
        return f"{node.http_addr.rstrip('/')}/v1/client/allocation/{alloc.id}/{tail}"

    def unreachable(node: Node) -> str:
        return f"cannot reach the agent of node {node.name} at {node.http_addr}"

    # ---------------------------------------------------------------- lifecycle
    @router.post(
        "/v1/allocation/{alloc_id}/restart",
        tags=["allocations"],
        response_model=RestartAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY, **errors(502)},
    )
    async def restart_alloc(
        alloc_id: str, body: RestartRequest | None = None, namespace: str = "default"
    ) -> Response:
        """Restart the task(s) in place on the agent (not counted by the restart policy)."""
        body = body or RestartRequest()
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        if body.task is not None and body.all_tasks:
            raise ValueError("name a task or ask for all_tasks, not both")
        check_task(alloc, body.task)
        node = live_node(alloc, "restart")
        log.info(
            "allocation %s: restart of %s requested",
            alloc.id,
            body.task or ("every task" if body.all_tasks else "its running tasks"),
        )
        log.debug("relaying a restart of allocation %s to node %s", alloc.id, node.id)
        return await agent_proxy.call(
            "POST",
            agent_url(node, alloc, "restart"),
            body=body.model_dump(),
            extensions=relay_ext(node.id),
            unreachable=unreachable(node),
        )

    @router.post(
        "/v1/allocation/{alloc_id}/signal",
        tags=["allocations"],
        response_model=SignalAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY, **errors(502)},
    )
    async def signal_alloc(
        alloc_id: str, body: SignalRequest, namespace: str = "default"
    ) -> Response:
        """Deliver a signal to the task(s) (process, exec and docker drivers)."""
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        sig = signal_name(body.signal, "for example SIGUSR1, SIGHUP, usr1")
        check_task(alloc, body.task)
        node = live_node(alloc, "signal")
        log.info("allocation %s: %s to %s requested", alloc.id, sig, body.task or "its tasks")
        log.debug("relaying %s for allocation %s to node %s", sig, alloc.id, node.id)
        return await agent_proxy.call(
            "POST",
            agent_url(node, alloc, "signal"),
            body={"signal": sig, "task": body.task},
            extensions=relay_ext(node.id),
            unreachable=unreachable(node),
        )

    @router.post(
        "/v1/allocation/{alloc_id}/stop",
        tags=["allocations"],
        response_model=EvalAnswer,
        responses={**NOT_FOUND, **CONFLICT},
    )
    async def stop_alloc(alloc_id: str, namespace: str = "default") -> Response:
        """Stop the allocation; an evaluation places its replacement (the job keeps its
        count)."""
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        eval_id, index = allocstop.stop_alloc(store, server.broker, alloc, server.clock)
        return json_answer({"eval_id": eval_id, "index": index}, dict[str, Any], index)

    # ---------------------------------------------------------------- files
    async def fs(alloc_id: str, namespace: str, op: str, params: dict[str, str]) -> Response:
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        node = node_of(alloc)
        url = agent_url(node, alloc, f"fs/{op}")
        if op == "cat":
            return await agent_proxy.relay(
                url,
                params,
                relay_ext(node.id),
                unreachable(node),
                media_type="application/octet-stream",
            )
        return await agent_proxy.call(
            "GET", url, params=params, extensions=relay_ext(node.id), unreachable=unreachable(node)
        )

    fs_errors = {**NOT_FOUND, **errors(502)}

    @router.get(
        "/v1/allocation/{alloc_id}/fs/ls",
        tags=["allocations"],
        response_model=FsListing,
        responses=fs_errors,
    )
    async def fs_ls(alloc_id: str, path: str = "", namespace: str = "default") -> Response:
        """The entries of a directory within the allocation's directory (``path`` relative
        to it; absolute paths, ``..`` and symlinks are refused)."""
        return await fs(alloc_id, namespace, "ls", {"path": path})

    @router.get(
        "/v1/allocation/{alloc_id}/fs/stat",
        tags=["allocations"],
        response_model=FileInfo,
        responses=fs_errors,
    )
    async def fs_stat(alloc_id: str, path: str = "", namespace: str = "default") -> Response:
        """One entry's details (type, size, mode, modification time)."""
        return await fs(alloc_id, namespace, "stat", {"path": path})

    @router.get(
        "/v1/allocation/{alloc_id}/fs/cat",
        tags=["allocations"],
        responses={200: FILE_BYTES, **fs_errors, **errors(429)},
    )
    async def fs_cat(
        alloc_id: str,
        path: str,
        offset: int = 0,
        limit: int = 0,
        follow: bool = False,
        namespace: str = "default",
    ) -> Response:
        """A regular file's bytes from ``offset`` (``limit`` bytes at most, 0: all);
        ``follow`` keeps streaming what is appended while the allocation runs."""
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must be >= 0 bytes (got {offset}, {limit})")
        params = {
            "path": path,
            "offset": str(offset),
            "limit": str(limit),
            "follow": "true" if follow else "false",
        }
        return await fs(alloc_id, namespace, "cat", params)
