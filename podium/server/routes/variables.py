"""``/v1/vars`` and ``/v1/var/{path}``: variables, sealed by the server's keyring before
they are stored (podium.server.variables does the work, with check-and-set and the
blocking wait on one variable).  Declared on the app's router by
:func:`podium.server.api.create_app`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from podium.models.api import IndexAnswer
from podium.models.variable import Variable, VariableMetadata, check_var_path
from podium.server import acl
from podium.server.api_docs import BODY, CONFLICT, NOT_FOUND, Index, Wait, errors
from podium.server.namespaces import check_request_namespace as _ns
from podium.server.namespaces import many_namespaces as _ns_many
from podium.server.namespaces import require_namespace
from podium.server.routes.common import ApiContext, json_answer, parse_wait
from podium.state.store import VARIABLES


class VarPutRequest(BaseModel):
    items: dict[str, str]


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server, store = ctx.server, ctx.store

    # ---------------------------------------------------------------- variables
    @router.get("/v1/vars", tags=["variables"], response_model=list[VariableMetadata])
    async def list_vars(
        prefix: str = "",
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """Paths and indexes only: a listing never carries a value.  ``namespace=*``:
        every namespace's."""
        idx = await ctx.blocking(index, wait, VARIABLES)
        ns = _ns_many(namespace)
        names = [ns] if ns is not None else [n.name for n in store.namespaces()]
        found = [v for name in names for v in server.variables.list(prefix, name)]
        found = [v for v in found if acl.can_list_variable(v.namespace, v.path)]
        return json_answer(found, list[VariableMetadata], idx)

    @router.get(
        "/v1/var/{path:path}",
        tags=["variables"],
        response_model=Variable,
        responses={**NOT_FOUND, **errors(500)},
    )
    async def get_var(
        path: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        check_var_path(path)
        ns = _ns(namespace)
        if index is not None:
            await server.variables.wait(path, index, parse_wait(wait), ns)
        var = server.variables.get(path, ns)
        return json_answer(var, Variable, store.table_index(VARIABLES))

    @router.put(
        "/v1/var/{path:path}",
        tags=["variables"],
        response_model=Variable,
        responses={**NOT_FOUND, **CONFLICT, **BODY, **errors(500)},
    )
    async def put_var(
        path: str, body: VarPutRequest, cas: int | None = None, namespace: str = "default"
    ) -> Response:
        """Create or replace; with ``cas`` only if the variable is still at that
        modify index (0: only if it does not exist), else 409.  The namespace must exist."""
        ns = _ns(namespace)
        require_namespace(store, ns)
        var = server.variables.put(path, body.items, cas=cas, namespace=ns)
        return json_answer(var, Variable, var.modify_index)

    @router.delete(
        "/v1/var/{path:path}",
        tags=["variables"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **CONFLICT},
    )
    async def delete_var(path: str, cas: int | None = None, namespace: str = "default") -> Response:
        idx = server.variables.delete(path, cas=cas, namespace=_ns(namespace))
        return json_answer({"index": idx}, dict[str, Any], idx)
