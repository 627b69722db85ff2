"""``GET /v1/metrics`` on a server, and the API's request metrics (an ASGI middleware).

Requests are counted by method, route *template* (``/v1/job/{job_id}``, never the raw
path: one series per route, not per job) and status, and timed into a histogram by
method and route.  The template comes from the route the router matched (FastAPI's
``scope["route"]``, or the endpoint of the agents' plain fast routes); a request refused
before routing (the ACL edge) is matched against the app's templates only then, and one
that matches no route is counted as ``unmatched``.  A request is recorded just before its
answer's last byte is sent, so a client that has its answer can scrape it counted.

Cost per request: two ``perf_counter`` calls, one wrapped ``send`` and
:meth:`podium.server.metrics.RequestStats.record` (plain numbers): a few microseconds,
1-2% of a heartbeat's CPU over HTTP (bench/metrics_overhead.py; bench/RESULTS.md).

The route is operator read (as Nomad's ``/v1/metrics`` needs ``agent:read``): it
tells how busy the cluster is, not what runs in it.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podium.metrics import metrics_answer
from podium.server.acl import app_routes
from podium.server.metrics import ServerMetrics

UNMATCHED = "unmatched"
"""The route label of a request that matched no route (a 404 of the router)."""
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
"""Methods labelled as they are; any other is labelled ``other`` (labels stay bounded
whatever clients send: routes are templates, statuses are numbers)."""

METRICS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The server's metrics: Prometheus' text format, or JSON with "
        "`format=json` (docs/metrics.md lists them).",
        "content": {
            CONTENT_TYPE_LATEST: {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def router(metrics: ServerMetrics) -> APIRouter:
    """The ``/v1/metrics`` route over ``metrics``' registry."""
    routes = APIRouter()

    @routes.get(
        "/v1/metrics",
        tags=["operator"],
        responses=METRICS_DOC,
        response_class=Response,
    )
    async def get_metrics(format: Literal["prometheus", "json"] | None = None) -> Response:
        """Every metric of this server (scrape each server: each counts what it did)."""
        metrics.loop_lag.start()
        return metrics_answer(metrics.registry, format)

    return routes


class RequestMetrics:
    """The ASGI middleware that counts and times every HTTP request (see the module)."""

    def __init__(self, app: ASGIApp, api: FastAPI, metrics: ServerMetrics) -> None:
        self.app = app
        self.api = api
        self.metrics = metrics
        self._record = metrics.requests.record
        self._endpoints: dict[Any, str] | None = None
        self._templates: list[tuple[str, str, re.Pattern[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        recorded = False

        async def counted(message: Message) -> None:
            nonlocal status, recorded
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not recorded and not message.get("more_body"):
                recorded = True
                self.record(scope, status, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            if not recorded:  # the app failed, or the client left mid-answer
                self.record(scope, status or 500, time.perf_counter() - started)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        if method not in METHODS:  # a client's made-up method must not make a series
            method = "other"
        self._record(method, self.template(scope), status, seconds)

    def template(self, scope: Scope) -> str:
        """The path template of the route that answered ``scope``."""
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        endpoint = scope.get("endpoint")
        if endpoint is not None:
            if self._endpoints is None:
                self._endpoints = {
                    r.endpoint: str(r.path)
                    for r in self.api.router.routes
                    if isinstance(r, Route) and r.endpoint is not None
                }
            found = self._endpoints.get(endpoint)
            if found is not None:
                return found
        return self._match(scope["method"], scope["path"])

    def _match(self, method: str, path: str) -> str:
        """Refused before routing (rare): the template the path would have matched."""
        if self._templates is None:
            self._templates = app_routes(self.api.routes)
        for m, template, regex in self._templates:
            if (m == method or m == "*") and regex.match(path):
                return template
        return UNMATCHED


def install(app: FastAPI, metrics: ServerMetrics) -> None:
    """Count and time every request of ``app`` (outside the ACL edge, so refusals count)."""
    app.add_middleware(RequestMetrics, api=app, metrics=metrics)
