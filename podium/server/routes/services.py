"""``/v1/services`` and ``/v1/service/{name}``: the service catalog (podium.server.catalog,
derived from allocations), as people and templates read it.  Declared on the app's
router by :func:`podium.server.api.create_app`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from podium.models import ServiceRegistration, ServiceSummary
from podium.server import acl, catalog
from podium.server.api_docs import Index, Wait
from podium.server.namespaces import check_request_namespace as _ns
from podium.server.namespaces import many_namespaces as _ns_many
from podium.server.routes.common import ApiContext, json_answer
from podium.state.store import SERVICES


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    store = ctx.store

    # ---------------------------------------------------------------- service catalog
    @router.get("/v1/services", tags=["services"], response_model=list[ServiceSummary])
    async def list_services(
        index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        """``namespace=*``: every namespace's services."""
        idx = await ctx.blocking(index, wait, SERVICES)
        found = [
            s
            for s in catalog.summaries(store, _ns_many(namespace))
            if acl.can_read_services(s.namespace)
        ]
        return json_answer(found, list[ServiceSummary], idx)

    @router.get("/v1/service/{name}", tags=["services"], response_model=list[ServiceRegistration])
    async def get_service(
        name: str,
        healthy: bool | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        ns = _ns(namespace)
        idx = await ctx.blocking(index, wait, SERVICES)
        found = catalog.instances(store, name, healthy=healthy, namespace=ns)
        return json_answer(found, list[ServiceRegistration], idx)
