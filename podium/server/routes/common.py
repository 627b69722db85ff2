"""What every router of ``/v1`` shares: the JSON answer with its index header, blocking
queries, and the lookup of an object by id or unique id prefix within the request's
namespace.

These were closures inside ``create_app``; an :class:`ApiContext` built once per app
carries the server instead, so each resource's routes are a module of their own, a plain
function of it (issue 15 gives the agents' routes and the leader's work their own seams).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from starlette.types import Message, Receive

from podium.errors import AmbiguousPrefix, NotFound
from podium.models import Allocation, Deployment, Evaluation, Job, Node, parse_duration
from podium.server import acl
from podium.server.core import RegisterResult, Server
from podium.server.namespaces import check_request_namespace as _ns
from podium.state import StateStore

T = TypeVar("T")
INDEX_HEADER = "X-Podium-Index"
CHILD_SLASH = "%2F"
"""How a '/' inside a path segment (a child job's id, ``web/periodic-1700000000``) reaches
the routes: :class:`podium.server.routes.jobtypes.ChildIdPaths` keeps it encoded so that
``{job_id}`` still matches one segment; ``resolve_job`` decodes it."""
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0

_adapters: dict[Any, TypeAdapter[Any]] = {}


def json_answer(value: Any, tp: Any, index: int, status: int = 200) -> Response:
    """``value`` serialised as ``tp`` straight from the stored models (no second
    validation pass), with the index it was read at."""
    adapter = _adapters.get(tp)
    if adapter is None:
        adapter = _adapters[tp] = TypeAdapter(tp)
    return Response(
        content=adapter.dump_json(value),
        media_type="application/json",
        status_code=status,
        headers={INDEX_HEADER: str(index)},
    )


def registered(r: RegisterResult) -> Response:
    """The answer of a registration (a job file, or a revert)."""
    return json_answer(
        {
            "eval_id": r.eval_id,
            "version": r.version,
            "job_modify_index": r.job_modify_index,
            "index": r.index,
            "changed": r.changed,
            "warnings": r.warnings,
        },
        dict[str, Any],
        r.index,
    )


def error_answer(status: int, message: str, **extra: Any) -> JSONResponse:
    """The API's one error shape: ``{"error": message, ...}``."""
    return JSONResponse({"error": message, **extra}, status_code=status)


def resolve(kind: str, ident: str, exact: Callable[[str], T | None], ids: Iterable[str]) -> T:
    """An object by exact id or unique id prefix; with ACLs on, only one in the request's
    namespace (the edge checked the caller's rights there, and only there)."""
    found = resolve_any(kind, ident, exact, ids)
    namespace = getattr(found, "namespace", None)
    if isinstance(namespace, str) and not acl.in_request_namespace(namespace):
        raise NotFound(f"{kind} {ident!r} not found in this namespace")
    return found


def resolve_any(kind: str, ident: str, exact: Callable[[str], T | None], ids: Iterable[str]) -> T:
    found = exact(ident)
    if found is not None:
        return found
    matches = sorted(i for i in ids if i.startswith(ident))
    if not matches:
        raise NotFound(f"{kind} {ident!r} not found")
    if len(matches) > 1:
        raise AmbiguousPrefix(
            f"{kind} id prefix {ident!r} matches {len(matches)} {kind}s: "
            + ", ".join(matches[:10])
            + ("…" if len(matches) > 10 else "")
        )
    result = exact(matches[0])
    assert result is not None
    return result


def parse_wait(wait: str | None) -> float:
    """A blocking query's ``wait`` in seconds (default 300 s, at most 600 s)."""
    if wait is None:
        return DEFAULT_WAIT
    return min(parse_duration(wait), MAX_WAIT)


def sorted_allocs(allocs: Sequence[Allocation]) -> list[Allocation]:
    return sorted(allocs, key=lambda a: (a.create_index, a.name))


@dataclass(frozen=True)
class ApiContext:
    """What the routers take: the server, and the lookups they share.

    Every lookup by id or id prefix is within one namespace (``?namespace=``, default
    ``default``): an object of another namespace is not found."""

    server: Server
    store: StateStore = field(init=False)
    """The server's store, bound once (the sync reads it on every request)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", self.server.store)

    async def blocking(self, index: int | None, wait: str | None, *tables: str) -> int:
        """With ``index``: wait (up to ``wait``) until one of ``tables`` passes it; the
        tables' index either way."""
        store = self.store
        if index is not None:
            return await store.wait_for(index, parse_wait(wait), tables=tables)
        return store.table_index(*tables)

    def resolve_job(self, ident: str, namespace: str = "default") -> Job:
        ident = ident.replace(CHILD_SLASH, "/")  # a child's id (routes/jobtypes.py)
        store = self.store
        ns = _ns(namespace)
        return resolve("job", ident, lambda i: store.job(i, ns), (j.id for j in store.jobs(ns)))

    def resolve_alloc(self, ident: str, namespace: str = "default") -> Allocation:
        store = self.store
        ns = _ns(namespace)

        def exact(i: str) -> Allocation | None:
            found = store.alloc(i)
            return found if found is not None and found.namespace == ns else None

        return resolve(
            "allocation", ident, exact, (a.id for a in store.allocs() if a.namespace == ns)
        )

    def resolve_node(self, ident: str) -> Node:
        store = self.store

        def exact(i: str) -> Node | None:
            node = store.node(i)
            if node is not None:
                return node
            by_name = [n for n in store.nodes() if n.name == i]
            return by_name[0] if len(by_name) == 1 else None

        return resolve("node", ident, exact, (n.id for n in store.nodes()))

    def resolve_eval(self, ident: str, namespace: str = "default") -> Evaluation:
        store = self.store
        ns = _ns(namespace)

        def exact(i: str) -> Evaluation | None:
            found = store.evaluation(i)
            return found if found is not None and found.namespace == ns else None

        ids = (e.id for e in store.evaluations() if e.namespace == ns)
        return resolve("evaluation", ident, exact, ids)

    def resolve_deployment(self, ident: str, namespace: str = "default") -> Deployment:
        store = self.store
        ns = _ns(namespace)

        def exact(i: str) -> Deployment | None:
            found = store.deployment(i)
            return found if found is not None and found.namespace == ns else None

        ids = (d.id for d in store.deployments() if d.namespace == ns)
        return resolve("deployment", ident, exact, ids)


async def read_body(receive: Receive) -> bytes | None:
    """The request's whole body; None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` (already read) once, then defers to the real one."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
