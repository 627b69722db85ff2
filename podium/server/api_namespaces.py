"""``/v1/namespaces`` and ``/v1/namespace/{name}``: a router of its own, included by
:func:`podium.server.api.create_app`.  The work is :class:`podium.server.namespaces.Namespaces`;
this only translates requests.  Answers carry each namespace's figures (see
:class:`podium.models.namespace.NamespaceInfo`).

With ACLs on, reading needs a token, and a token sees the namespaces it may read jobs in
(others are left out of the list, and "not found" alone); applying and deleting need a
management token (``podium.server.acl.RULES``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, TypeAdapter

from podium.errors import NotFound
from podium.models.acl import READ_JOB
from podium.models.api import IndexAnswer
from podium.models.namespace import NamespaceInfo, Quota
from podium.server import acl
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND
from podium.server.core import Server
from podium.state.store import ALLOCS, JOBS, NAMESPACES

INDEX_HEADER = "X-Podium-Index"


class NamespaceRequest(BaseModel):
    """``PUT /v1/namespace/{name}``: what is left out stays as it was (a new namespace:
    no description, no quota)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    quota: Quota | None = None


_LIST = TypeAdapter(list[NamespaceInfo])
_ONE = TypeAdapter(NamespaceInfo)
_DICT = TypeAdapter(dict[str, Any])


def _answer(adapter: TypeAdapter[Any], value: Any, index: int) -> Response:
    return Response(
        content=adapter.dump_json(value),
        media_type="application/json",
        headers={INDEX_HEADER: str(index)},
    )


def namespace_routes(server: Server) -> APIRouter:
    router = APIRouter(tags=["namespaces"], responses=NOT_FOUND)
    store = server.store

    def index() -> int:
        return store.table_index(NAMESPACES, JOBS, ALLOCS)

    @router.get("/v1/namespaces", response_model=list[NamespaceInfo])
    async def list_namespaces(prefix: str = "") -> Response:
        """Every namespace (``default`` included) with its usage and desired figures."""
        found = [
            ns
            for ns in server.namespaces.list()
            if ns.name.startswith(prefix) and acl.can(READ_JOB, ns.name)
        ]
        return _answer(_LIST, found, index())

    @router.get("/v1/namespace/{name}", response_model=NamespaceInfo)
    async def get_namespace(name: str) -> Response:
        if not acl.can(READ_JOB, name):
            raise NotFound(f"namespace {name!r} not found")
        return _answer(_ONE, server.namespaces.info(name), index())

    @router.put(
        "/v1/namespace/{name}", response_model=NamespaceInfo, responses={**CONFLICT, **BODY}
    )
    async def put_namespace(name: str, body: NamespaceRequest | None = None) -> Response:
        """Create ``name``, or change its description and quota."""
        body = body or NamespaceRequest()
        info = server.namespaces.apply(name, body.description, body.quota)
        return _answer(_ONE, info, index())

    @router.delete("/v1/namespace/{name}", response_model=IndexAnswer, responses=CONFLICT)
    async def delete_namespace(name: str) -> Response:
        """Refused (409) while it holds jobs that are not stopped, running allocations
        or variables; ``default`` cannot be deleted (400)."""
        idx = server.namespaces.delete(name)
        return _answer(_DICT, {"index": idx}, idx)

    return router
