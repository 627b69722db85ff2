"""The HTTP API's routers, one per resource, composed by :func:`podium.server.api.create_app`.

Each module's ``router(ctx)`` takes an :class:`~podium.server.routes.common.ApiContext`
and returns a FastAPI ``APIRouter``; the agents' routes (:mod:`.agent`) also put their
fast Starlette routes ahead of the app's.  Nothing here holds state of its own: the work
is :class:`podium.server.core.Server`'s."""
