"""The HTTP API (``/v1``): a thin FastAPI layer over :class:`podium.server.core.Server`.

:func:`create_app` is the one entry point: it composes the routers (one per resource, in
podium.server.routes; the namespaces', ACL's, workload identities' and snapshot's beside
it), the error handlers (routes/errors.py), the OpenAPI document's fixes (api_docs) and the
edge's middleware (ACL, TLS guard, audit log).  Responses are serialised straight from
the stored pydantic models (no second validation pass), every response carries
``X-Podium-Index``, list endpoints take blocking queries (``?index=N&wait=30s``), and
every ``/{id}`` path takes a unique id prefix.  docs/api.md is the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from podium import __version__
from podium.server import (
    acl,
    acl_api,
    api_docs,
    api_metrics,
    exec_relay,
    snapshot,
    ui_routes,
    workload,
)
from podium.server.api_namespaces import namespace_routes
from podium.server.audit import AuditLog, AuditMiddleware
from podium.server.core import Server
from podium.server.proxy import DEFAULT_MAX_STREAMS, AgentProxy
from podium.server.routes import (
    agent,
    alloc_ops,
    alloc_stats,
    allocations,
    deployments,
    errors,
    evaluations,
    events,
    jobs,
    jobtypes,
    monitor,
    nodes,
    operator_scheduler,
    scaling,
    services,
    status,
    variables,
)
from podium.server.routes.common import ApiContext
from podium.server.shed import ShedMiddleware

if TYPE_CHECKING:
    from podium.tls.server import ServerTLS


def create_app(
    server: Server,
    *,
    audit: AuditLog | None = None,
    tls: ServerTLS | None = None,
    max_log_streams: int = DEFAULT_MAX_STREAMS,
) -> FastAPI:
    """The API over ``server``; with ``audit``, every write is recorded there (outermost);
    with ``tls``, the certificate routes and the agent routes' guard (tls_routes)."""
    # TLS (and cryptography, ~10 MB) only for a server that has it
    relay_verify: Any = True

    def relay_ext(node_id: str) -> dict[str, Any]:
        return {}

    if tls is not None:
        from podium.server import tls_routes

        relay_verify = tls_routes.agent_verify(tls)

        def relay_ext(node_id: str) -> dict[str, Any]:
            return tls_routes.agent_extensions(tls, node_id)

    app = FastAPI(
        title="Podium",
        version=__version__,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        description="The Podium workload orchestrator's HTTP API.",
        # FastAPI's native OpenTelemetry looks for configured providers on every request
        # (~1% of the server's CPU at 5,000 nodes); Podium exports Prometheus metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        responses=api_docs.COMMON,
    )
    # One pooled client relays logs from agents, a bounded number at once (proxy.py);
    # whoever runs the app closes it (app.state.agent_proxy.aclose()).
    agent_proxy = app.state.agent_proxy = AgentProxy(relay_verify, max_log_streams)
    api_docs.install(app)
    errors.install(app)
    ctx = ApiContext(server)
    # Declared on the app's own router, not included (routes/__init__.py says why), in the
    # order requests scan them (and the OpenAPI document lists them): the agents' first,
    # behind only their fast routes, which go ahead of every route.
    agent.install(app, ctx)
    jobs.add_routes(app.router, ctx)
    jobtypes.add_routes(app.router, ctx)  # dispatch, periodic force, children
    allocations.add_routes(app.router, ctx, agent_proxy, relay_ext)
    exec_relay.add_routes(app, ctx, relay_verify, relay_ext)
    alloc_stats.add_routes(app.router, ctx, agent_proxy, relay_ext)
    scaling.add_routes(app.router, ctx, agent_proxy, relay_ext)  # and the autoscaler's reads
    nodes.add_routes(app.router, ctx)
    services.add_routes(app.router, ctx)
    evaluations.add_routes(app.router, ctx)
    variables.add_routes(app.router, ctx)
    deployments.add_routes(app.router, ctx)
    status.add_routes(app.router, ctx)
    alloc_ops.add_routes(app.router, ctx, agent_proxy, relay_ext)
    monitor.add_routes(app.router, ctx, agent_proxy, relay_ext)
    events.add_routes(app.router, ctx)
    operator_scheduler.add_routes(app.router, ctx)  # preemption settings
    ui_routes.add_routes(app.router, ctx, acl_enabled=server.config.acl)  # the web UI
    app.include_router(namespace_routes(server))
    app.include_router(acl_api.router(server.trust))
    app.include_router(workload.router(server))
    app.include_router(snapshot.router(server))
    app.include_router(api_metrics.router(server.metrics))
    # Middleware: the last added is the outermost.  A request meets the audit log, then
    # the TLS guard (a machine's route needs its certificate), then the ACL edge.
    acl.install(app, server.trust, enabled=server.config.acl)
    jobtypes.install(app)  # outside the ACL edge: it routes children's ids as it will
    if tls is not None:
        tls_routes.install_tls(app, tls)
    # request metrics outside the edges, so that refused requests are counted too
    api_metrics.install(app, server.metrics)
    if audit is not None:
        app.add_middleware(AuditMiddleware, log=audit)
    # outermost: a shed request costs the loop as little as it can (counted apart, in
    # podium_http_shed_total, not by the request metrics)
    app.add_middleware(ShedMiddleware, shedder=server.shedder)
    return app
