"""The HTTP API's routes, one module per resource, composed by
:func:`podium.server.api.create_app`.

Each module's ``add_routes(router, ctx)`` declares its resource's routes on the app's own
router, given an :class:`~podium.server.routes.common.ApiContext`; the agents' routes
(:mod:`.agent`, through ``install``) also put their fast Starlette routes ahead of the
app's.  They are declared on the app's router rather than built as ``APIRouter``s and
included: FastAPI (0.163) keeps an included router as a nested router that is matched
on every request, which doubled the Python calls of a request through FastAPI (a
heartbeat: 465 to 939; see /work/notes/routers.md), and the hot path must not pay for
the split.  Nothing here holds state of its own: the work is
:class:`podium.server.core.Server`'s."""
