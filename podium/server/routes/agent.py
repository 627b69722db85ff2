"""The agents' routes: node registration, heartbeats, the allocation sync (with or without
reports riding on it) and reports on their own.  They are the server's hot path (every
placement costs an agent a sync and a report), and issue 15 gives heartbeats and syncs
their own admission, so they live apart from the people's routes.

:func:`add_routes` declares the FastAPI routes (what the OpenAPI document and the ACL
table list); :func:`install` also puts plain Starlette routes ahead of them for the
sync and the reports, which skip FastAPI's per-request validation on purpose and hand
anything they do not parse plainly back to the FastAPI route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError, model_validator
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from podium.models import Allocation, AllocClientUpdate, JobSpec, Node
from podium.models.acl import NODE_SECRET_HEADER
from podium.models.api import HeartbeatAnswer, IndexAnswer, NodeRegisterAnswer
from podium.models.namespace import spec_key
from podium.models.node import check_node_names
from podium.server import acl
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND, Index, Since, Wait
from podium.server.routes.common import ApiContext, json_answer, parse_wait, read_body, replay

_M = TypeVar("_M", bound=BaseModel)


# --------------------------------------------------------------------------- bodies
class ReportOrder(BaseModel):
    session: str = ""
    """The agent's run (any string it picks at start); empty: the request is unordered."""
    seq: int = 0
    """The run's count of report requests (from 1): a request with an older one than the
    newest taken from the node is refused with 409 (see ``Server.client_update_batched``)."""

    @model_validator(mode="after")
    def _seq_with_session(self) -> ReportOrder:
        if self.session and self.seq < 1:
            raise ValueError("seq: a request with a session needs its sequence number (>= 1)")
        return self


class ClientUpdateRequest(ReportOrder):
    node_id: str
    updates: list[AllocClientUpdate]


class NodeSyncRequest(ReportOrder):
    """A sync that carries the agent's reports (``POST`` on the sync path): they are
    committed, durably, before the sync is answered, so a busy node costs the server one
    request per change instead of a sync and a report."""

    updates: list[AllocClientUpdate] = Field(default_factory=list)
    have: list[str] = Field(default_factory=list)
    """As the ``GET`` sync's ``have`` query parameter, as a list (no length limit)."""


class NodeSyncResponse(BaseModel):
    index: int
    allocations: list[Allocation]
    jobs: dict[str, JobSpec]
    alloc_indexes: dict[str, int] | None = None
    """Delta answers only (``since`` given): every allocation on the node with the index
    of its last change the agent must hear of; ``allocations`` holds only those changed
    past ``since``, and ``jobs`` only the specs the agent said it lacks."""
    job_indexes: dict[str, int] = {}
    """The stored version's modify index of each spec in ``jobs`` (the agent names what it
    holds as ``job@version@index`` in ``have``)."""
    alloc_count: int | None = None
    """Set when no allocation left the node past ``since``: ``alloc_indexes`` then lists
    only the allocations in ``allocations`` (the ones that stayed are not listed again),
    and the node holds ``alloc_count`` allocations in all."""


# --------------------------------------------------------------------------- the sync
async def sync_answer(
    ctx: ApiContext,
    node_id: str,
    index: int | None,
    wait: str | None,
    since: int | None,
    have: str | list[str] | None,
) -> Response:
    """The node's allocations (all, or the delta past ``since``) and the job specs the
    agent lacks; with ``index``, once the node's allocations passed it."""
    store = ctx.store
    seconds = parse_wait(wait)  # checked even without ``index`` (the fast path's too)
    if index is not None:
        await store.wait_for(index, seconds, node_allocs=node_id)
    idx = store.node_alloc_index(node_id)
    indexes: dict[str, int] | None = None
    count: int | None = None
    known: set[str] = set()
    allocs: list[Allocation]
    if since is None:
        allocs = store.allocs_by_node(node_id)
    else:
        if since > idx:
            since = 0  # an index from another history (a reset store): everything
        # Nothing left the node past ``since``: only what changed is listed, with the
        # node's count (the agent checks it); else every id, so removals show.
        ids = store.alloc_ids_by_node(node_id)
        every = since == 0 or store.node_removal_index(node_id) > since
        sync_index = store.alloc_sync_index
        indexes = {}
        changed = []
        if every:
            for alloc_id in ids:
                at = indexes[alloc_id] = sync_index(alloc_id)
                if at > since:
                    changed.append(alloc_id)
        else:
            changed = store.changed_alloc_ids(node_id, since)
            indexes = {alloc_id: sync_index(alloc_id) for alloc_id in changed}
            count = len(ids)
        allocs = [a for a in map(store.alloc, changed) if a is not None]
        if have:
            known = set(have.split(",") if isinstance(have, str) else have)
    jobs: dict[str, JobSpec] = {}
    job_indexes: dict[str, int] = {}
    for a in allocs:
        key = spec_key(a.namespace, a.job_id, a.job_version)
        if key in jobs:
            continue
        version = store.job_version(a.job_id, a.job_version, a.namespace)
        if version is None:
            continue
        # The version's own index tells a purged and re-registered job's version 0
        # from the old one, which the agent may still hold under the same key.
        if f"{key}@{version.modify_index}" in known:
            continue
        jobs[key] = version.spec
        job_indexes[key] = version.modify_index
    answer = NodeSyncResponse.model_construct(
        index=idx,
        allocations=allocs,
        jobs=jobs,
        alloc_indexes=indexes,
        job_indexes=job_indexes,
        alloc_count=count,
    )
    return json_answer(answer, NodeSyncResponse, idx)


async def sync_with_reports(
    ctx: ApiContext,
    node_id: str,
    index: int | None,
    wait: str | None,
    since: int | None,
    body: NodeSyncRequest,
) -> Response:
    """The agent's reports committed (durably), then the sync answered."""
    parse_wait(wait)  # a bad query is refused before anything is written
    if body.updates:
        await ctx.server.client_update_batched(
            node_id, body.updates, session=body.session, seq=body.seq
        )
    return await sync_answer(ctx, node_id, index, wait, since, body.have)


# --------------------------------------------------------------------------- routes
def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server = ctx.server

    @router.put(
        "/v1/node/register", tags=["agent"], response_model=NodeRegisterAnswer, responses=BODY
    )
    async def register_node(node: Node, request: Request) -> Response:
        """A node's (re-)registration: a known node id needs its node secret; a new node
        gets one in the answer (``node_secret``, shown once; its agent keeps it)."""
        check_node_names(node)
        trust = server.trust
        presented = request.headers.get(NODE_SECRET_HEADER)
        secret = trust.registration(node.id, presented, acl.may_register_node(node.id))
        record = trust.node_secret_record(node.id, secret, 0) if secret else None
        idx = server.register_node(node, record)
        answer = {"node_id": node.id, **server.heartbeat_answer(idx)}
        if secret:
            answer["node_secret"] = secret
        return json_answer(answer, dict[str, Any], idx)

    @router.put(
        "/v1/node/{node_id}/heartbeat",
        tags=["agent"],
        response_model=HeartbeatAnswer,
        responses=NOT_FOUND,
    )
    async def heartbeat(node_id: str) -> Response:
        idx = server.heartbeat(node_id)
        return json_answer(server.heartbeat_answer(idx), dict[str, Any], idx)

    @router.get(
        "/v1/client/node/{node_id}/allocations",
        tags=["agent"],
        response_model=NodeSyncResponse,
        responses=NOT_FOUND,
    )
    async def node_sync(
        node_id: str,
        index: Index = None,
        wait: Wait = None,
        since: Since = None,
        have: str | None = None,
    ) -> Response:
        """The node's allocations and their job specs.  With ``since`` (Nomad's delta
        sync): only the allocations changed past it in full, every id with its index, and
        specs only for the versions not listed in ``have`` (comma-separated
        ``job@version@index``: the index tells a re-registered job's version from a purged
        one's)."""
        return await sync_answer(ctx, node_id, index, wait, since, have)

    @router.post(
        "/v1/client/node/{node_id}/allocations",
        tags=["agent"],
        response_model=NodeSyncResponse,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def node_sync_with_reports(
        node_id: str,
        body: NodeSyncRequest,
        index: Index = None,
        wait: Wait = None,
        since: Since = None,
    ) -> Response:
        """The ``GET`` sync with the agent's reports riding on it: ``updates`` are committed
        as ``POST /v1/client/allocations`` commits them (durable before any answer; an
        error answers the request and commits none of them), then the sync is answered
        as the ``GET`` answers it, ``have`` taken from the body."""
        return await sync_with_reports(ctx, node_id, index, wait, since, body)

    @router.post(
        "/v1/client/allocations",
        tags=["agent"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def client_update(body: ClientUpdateRequest) -> Response:
        acl.reporting_node(body.node_id)
        idx = await server.client_update_batched(
            body.node_id, body.updates, session=body.session, seq=body.seq
        )
        return json_answer({"index": idx}, dict[str, Any], idx)


# --------------------------------------------------------------------------- the fast routes
class _AsgiEndpoint:
    """A Starlette route endpoint that is an ASGI callable (not a request handler)."""

    def __init__(self, fn: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.fn = fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fn(scope, receive, send)


def install(app: FastAPI, ctx: ApiContext) -> None:
    """The agents' FastAPI routes (:func:`add_routes`) on ``app``, and the fast routes
    ahead of every route of it."""
    add_routes(app.router, ctx)
    app.router.routes[:0] = _fast_routes(ctx, app.router)


def _fast_routes(ctx: ApiContext, routes: APIRouter) -> list[Route]:
    """Plain Starlette routes, ahead of FastAPI's, for the requests every placement costs
    an agent (its allocation sync, with or without its reports riding on it, and a report
    on its own).

    FastAPI's per-request parameter solving and the route scan ahead of them cost as much
    as the work behind them (profiled at 5,000 nodes).  These do the same work with the
    same answers; anything they do not parse plainly (an odd query, an invalid body, a
    repeated parameter) is handed to the app's FastAPI route, which answers it as before.
    The FastAPI routes stay in the OpenAPI document."""
    server = ctx.server
    by_path = {
        (r.path, m): r for r in routes.routes if isinstance(r, APIRoute) for m in r.methods or ()
    }
    sync_path = "/v1/client/node/{node_id}/allocations"
    sync_route = by_path[(sync_path, "GET")]
    sync_post_route = by_path[(sync_path, "POST")]
    update_route = by_path[("/v1/client/allocations", "POST")]

    def sync_query(scope: Scope) -> dict[str, str] | None:
        """``index``, ``wait``, ``since`` and ``have``, or None where FastAPI should judge."""
        args: dict[str, str] = {}
        for key, value in parse_qsl(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        ):
            if key in args or (key in ("index", "since") and not _is_digits(value)):
                return None
            args[key] = value
        return args

    def number(args: dict[str, str], key: str) -> int | None:
        value = args.get(key)
        return int(value) if value is not None else None

    async def node_sync(scope: Scope, receive: Receive, send: Send) -> None:
        args = sync_query(scope)
        if args is None:
            await sync_route.app(scope, receive, send)
            return
        response = await sync_answer(
            ctx,
            scope["path_params"]["node_id"],
            number(args, "index"),
            args.get("wait"),
            number(args, "since"),
            args.get("have"),
        )
        await response(scope, receive, send)

    async def node_sync_with_reports(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        args = sync_query(scope)
        request = _parse_json_body(scope, body, NodeSyncRequest) if args is not None else None
        if args is None or request is None:
            await sync_post_route.app(scope, replay(body, receive), send)
            return
        del body  # not held through the blocking wait (thousands of parked agents)
        response = await sync_with_reports(
            ctx,
            scope["path_params"]["node_id"],
            number(args, "index"),
            args.get("wait"),
            number(args, "since"),
            request,
        )
        await response(scope, receive, send)

    async def client_update(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        request = _parse_json_body(scope, body, ClientUpdateRequest)
        if request is None:
            await update_route.app(scope, replay(body, receive), send)
            return
        acl.reporting_node(request.node_id)
        idx = await server.client_update_batched(
            request.node_id, request.updates, session=request.session, seq=request.seq
        )
        await json_answer({"index": idx}, dict[str, Any], idx)(scope, receive, send)

    fast = [
        Route(sync_path, _AsgiEndpoint(node_sync), methods=["GET"], include_in_schema=False),
        Route(
            sync_path,
            _AsgiEndpoint(node_sync_with_reports),
            methods=["POST"],
            include_in_schema=False,
        ),
        Route(
            update_route.path,
            _AsgiEndpoint(client_update),
            methods=["POST"],
            include_in_schema=False,
        ),
    ]
    return fast


def _parse_json_body(scope: Scope, body: bytes, model: type[_M]) -> _M | None:
    """``body`` as ``model`` when it is valid JSON sent as such; None for FastAPI to judge
    (and answer with its usual 422 or 415)."""
    content_type = dict(scope.get("headers", ())).get(b"content-type", b"application/json")
    if content_type.split(b";")[0].strip() != b"application/json":
        return None
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return None


def _is_digits(value: str) -> bool:
    return bool(value) and value.isascii() and value.isdigit()
