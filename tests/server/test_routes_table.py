"""The per-resource route modules (podium/server/routes) keep the app's route table flat.

FastAPI keeps a router added with ``include_router`` nested and matches it on every
request (measured: twice the Python calls for a heartbeat), so ``create_app`` declares
each resource's routes on the app's own router, the agents' first, behind only their
fast Starlette routes.  Each test here fails if the routes are included as routers."""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.routing import Route

from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore

AGENT = [
    ("PUT", "/v1/node/register"),
    ("PUT", "/v1/node/{node_id}/heartbeat"),
    ("GET", "/v1/client/node/{node_id}/allocations"),
    ("POST", "/v1/client/node/{node_id}/allocations"),
    ("POST", "/v1/client/allocations"),
]
PEOPLE = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/job/{job_id}/deployments"),
    ("GET", "/v1/allocation/{alloc_id}/logs"),
    ("PUT", "/v1/node/{node_id}/drain"),
    ("GET", "/v1/services"),
    ("GET", "/v1/evaluation/{eval_id}"),
    ("PUT", "/v1/var/{path:path}"),
    ("POST", "/v1/deployment/{deployment_id}/promote"),
    ("GET", "/v1/status"),
]


def _positions() -> dict[tuple[str, str], int]:
    app = create_app(Server(StateStore()))
    found: dict[tuple[str, str], int] = {}
    for i, route in enumerate(app.router.routes):
        if isinstance(route, APIRoute):
            for method in route.methods:
                found.setdefault((method, route.path), i)
    return found


def test_every_resource_route_is_the_apps_own() -> None:
    found = _positions()
    missing = [r for r in AGENT + PEOPLE if r not in found]
    assert not missing, f"not on the app's own router (nested in an included one?): {missing}"


def test_the_agents_routes_come_first_behind_their_fast_routes() -> None:
    app = create_app(Server(StateStore()))
    fast = [r for r in app.router.routes[:3] if isinstance(r, Route)]
    assert [r.path for r in fast] == [
        "/v1/client/node/{node_id}/allocations",
        "/v1/client/node/{node_id}/allocations",
        "/v1/client/allocations",
    ]
    assert not any(isinstance(r, APIRoute) for r in fast)
    found = _positions()
    assert max(found[r] for r in AGENT) < min(found[r] for r in PEOPLE)
