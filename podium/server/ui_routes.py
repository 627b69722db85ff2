"""The web UI's routes: ``/ui/`` (a static shell), ``/ui/static/*`` and
``/ui/fragment/<page>`` (server-rendered HTML from this server's in-memory state).

The shell carries no data, so anyone may load it; its script fetches the visible
page's fragment with the caller's token and swaps it in, and fetches it again when the
event stream says something it shows changed.  Each fragment route is classified in
:data:`podium.server.acl.RULES` with the capability of what it shows, so the same edge
that guards ``/v1`` guards the UI, and list fragments drop what the caller may not see
with :func:`podium.server.acl.can`, as the list handlers do.  Fragments are
``Cache-Control: no-store``: the browser keeps nothing that the token would not let it
fetch again.  Templates and view arithmetic are podium.ui's; docs/ui.md is the guide.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from podium import __version__
from podium.errors import NotFound
from podium.models import Allocation, JobStatus
from podium.models.acl import LIST_JOBS, READ_JOB
from podium.models.diff import spec_diff
from podium.server import acl, catalog
from podium.server.namespaces import many_namespaces
from podium.server.routes.common import INDEX_HEADER, ApiContext, error_answer
from podium.server.routes.jobs import job_item, job_status, summarize
from podium.ui import STATIC, views
from podium.ui.render import render

NO_STORE = {"Cache-Control": "no-store"}
SHELL_SECURITY = {
    # only this server's own script and requests; no framing (the page has scale and stop
    # buttons: another site must not overlay it); the bars' widths are style attributes
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_FILES = {
    "podium.js": "text/javascript; charset=utf-8",
    "podium.css": "text/css; charset=utf-8",
}
JOBS_PER_PAGE = 100
"""Rows per page of the jobs list (Nomad's UI shows 25): the page stays fast to lay out at
any number of jobs, and the search and filters span them all."""
MAX_JOB_ALLOCS = 200
"""A job's or node's page lists this many allocations (live first, then newest)."""
MAX_EVALS = 200
"""The evaluations page shows the newest this many (the API lists them all)."""


def _namespaces(store: Any, capability: str) -> list[str]:
    """The namespaces the caller may list in, for a page's namespace filter."""
    names = {"default", *(n.name for n in store.namespaces())}
    return sorted(n for n in names if acl.can(capability, n))


def add_routes(router: APIRouter, ctx: ApiContext, *, acl_enabled: bool) -> None:
    server, store = ctx.server, ctx.store

    def _fragment(template: str, **context: Any) -> HTMLResponse:
        """A fragment, with the index it was rendered at: the page's event stream resumes
        from there, so no change between the render and the stream's start is missed."""
        index = store.index
        return HTMLResponse(
            render(template, **context), headers={**NO_STORE, INDEX_HEADER: str(index)}
        )

    # ---------------------------------------------------------------- the shell
    @router.get("/", include_in_schema=False)
    async def root(request: Request) -> Response:
        """Browsers (``Accept: text/html``) go to the UI; API clients get the 404 they
        always got here."""
        if "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/ui/", status_code=307)
        return error_answer(404, "no route GET /: the API is under /v1 (see /v1/docs)")

    @router.get("/ui", include_in_schema=False)
    async def ui_bare() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            raise NotFound(f"no UI file {name!r} (there are: {', '.join(STATIC_FILES)})")
        return FileResponse(
            STATIC / name, media_type=media, headers={"Cache-Control": "public, max-age=300"}
        )

    # ---------------------------------------------------------------- jobs
    @router.get("/ui/fragment/jobs", include_in_schema=False)
    async def jobs_fragment(
        namespace: str = "*", status: str = "", q: str = "", page: int = 1
    ) -> Response:
        if status and status not in {s.value for s in JobStatus}:
            raise ValueError(
                f"status {status!r} is not a job status: one of "
                + ", ".join(s.value for s in JobStatus)
            )
        jobs = sorted(store.jobs(many_namespaces(namespace)), key=lambda j: (j.id, j.namespace))
        if page < 1:
            raise ValueError(f"page: a page number from 1, not {page}")
        items = [job_item(store, j) for j in jobs if acl.can(LIST_JOBS, j.namespace)]
        rows = views.job_rows(items, status=status, search=q)
        pages = max(1, -(-len(rows) // JOBS_PER_PAGE))
        page = min(page, pages)
        first = (page - 1) * JOBS_PER_PAGE
        keep = {"namespace": namespace, "status": status, "q": q}
        return _fragment(
            "fragments/jobs.html",
            rows=rows[first : first + JOBS_PER_PAGE],
            matched=len(rows),
            first=first,
            page=page,
            pages=pages,
            page_query=lambda n: urlencode({**{k: v for k, v in keep.items() if v}, "page": n}),
            total=len(items),
            namespace=namespace,
            namespaces=_namespaces(store, LIST_JOBS),
            status=status,
            statuses=[s.value for s in JobStatus],
            q=q,
            states=views.STATES,
        )

    @router.get("/ui/fragment/job/{job_id}", include_in_schema=False)
    async def job_fragment(job_id: str, namespace: str = "default") -> Response:
        job = ctx.resolve_job(job_id, namespace)
        summary = summarize(store, job)
        every = store.allocs_by_job(job.id, job.namespace)
        # the live ones first, then the newest: what a person looks for on a big job
        allocs = sorted(every, key=lambda a: (a.terminal(), -a.create_index, a.name))[
            :MAX_JOB_ALLOCS
        ]
        evals = store.evals_by_job(job.id, job.namespace)
        deployment = store.latest_deployment(job.id, job.namespace)
        versions = sorted(
            store.job_versions(job.id, job.namespace), key=lambda v: v.version, reverse=True
        )
        diffs = {}
        for i, v in enumerate(versions):
            older = versions[i + 1] if i + 1 < len(versions) else None
            diffs[v.version] = v.diff or (spec_diff(older.spec, v.spec) if older else [])
        nodes = {a.node_id: store.node(a.node_id) for a in allocs}
        return _fragment(
            "fragments/job.html",
            job=job,
            status=job_status(job, summary).value,
            summary=summary,
            counts=views.counts(summary.values()),
            states=views.STATES,
            allocs=allocs,
            alloc_total=len(every),
            nodes=nodes,
            deployment=deployment,
            progress=views.deployment_progress(deployment) if deployment else [],
            failures=views.placement_failures(evals),
            evals=sorted(evals, key=lambda e: e.modify_index, reverse=True)[:10],
            versions=versions,
            diffs=diffs,
        )

    # ---------------------------------------------------------------- allocations
    @router.get("/ui/fragment/allocation/{alloc_id}", include_in_schema=False)
    async def alloc_fragment(alloc_id: str, namespace: str = "default") -> Response:
        alloc = ctx.resolve_alloc(alloc_id, namespace)
        spec = store.job_spec(alloc.job_id, alloc.job_version, alloc.namespace)
        group = spec.groups.get(alloc.group) if spec is not None else None
        tasks = sorted(set(alloc.task_states) | set(group.tasks if group else ()))
        return _fragment(
            "fragments/allocation.html",
            alloc=alloc,
            node=store.node(alloc.node_id),
            tasks=tasks,
            services=store.services_by_alloc(alloc.id),
        )

    # ---------------------------------------------------------------- nodes
    def _by_node() -> dict[str, list[Allocation]]:
        return {n.id: store.allocs_by_node(n.id) for n in store.nodes()}

    @router.get("/ui/fragment/nodes", include_in_schema=False)
    async def nodes_fragment() -> Response:
        by_node = _by_node()
        rows = [
            views.node_row(n, store.node_usage(n.id), by_node.get(n.id, []))
            for n in sorted(store.nodes(), key=lambda n: (n.name, n.id))
        ]
        return _fragment("fragments/nodes.html", rows=rows)

    @router.get("/ui/fragment/node/{node_id}", include_in_schema=False)
    async def node_fragment(node_id: str) -> Response:
        node = ctx.resolve_node(node_id)
        allocs = store.allocs_by_node(node.id)
        row = views.node_row(node, store.node_usage(node.id), allocs)
        readable = sorted(
            (a for a in allocs if acl.can(READ_JOB, a.namespace)),
            key=lambda a: (a.terminal(), -a.create_index, a.name),
        )
        return _fragment(
            "fragments/node.html",
            row=row,
            node=node,
            allocs=readable[:MAX_JOB_ALLOCS],
            shown_of=len(readable),
            hidden=len(allocs) - len(readable),
        )

    @router.get("/ui/fragment/topology", include_in_schema=False)
    async def topology_fragment() -> Response:
        boxes = views.topology(store.nodes(), _by_node())
        for box in boxes:  # a node reader sees the space taken, not whose it is
            box.blocks = [
                b
                if acl.can(READ_JOB, b.alloc.namespace)
                else views.Block(
                    alloc=b.alloc.model_copy(update={"job_id": "(hidden)", "name": "(hidden)"}),
                    cpu_percent=b.cpu_percent,
                    memory_percent=b.memory_percent,
                    hue=0,
                )
                for b in box.blocks
            ]
        return _fragment("fragments/topology.html", boxes=boxes)

    # ---------------------------------------------------------------- the rest
    @router.get("/ui/fragment/services", include_in_schema=False)
    async def services_fragment(namespace: str = "*") -> Response:
        ns = many_namespaces(namespace)
        regs = [
            r
            for r in store.service_registrations()
            if (ns is None or r.namespace == ns) and acl.can_read_services(r.namespace)
        ]
        summaries = [s for s in catalog.summaries(store, ns) if acl.can_read_services(s.namespace)]
        by_name: dict[tuple[str, str], list[Any]] = {}
        for r in sorted(regs, key=lambda r: (r.alloc_id, r.address, r.port)):
            by_name.setdefault((r.namespace, r.service_name), []).append(r)
        return _fragment("fragments/services.html", summaries=summaries, regs=by_name)

    @router.get("/ui/fragment/evaluations", include_in_schema=False)
    async def evals_fragment(namespace: str = "*", status: str = "") -> Response:
        ns = many_namespaces(namespace)
        evals = [
            e
            for e in store.evaluations()
            if (ns is None or e.namespace == ns)
            and acl.can(READ_JOB, e.namespace)
            and (not status or e.status.value == status)
        ]
        evals.sort(key=lambda e: e.modify_index, reverse=True)
        return _fragment(
            "fragments/evaluations.html", evals=evals[:MAX_EVALS], total=len(evals), status=status
        )

    @router.get("/ui/fragment/variables", include_in_schema=False)
    async def vars_fragment(namespace: str = "*", prefix: str = "") -> Response:
        ns = many_namespaces(namespace)
        names = (
            [ns] if ns is not None else sorted({"default", *(n.name for n in store.namespaces())})
        )
        found = [v for name in names for v in server.variables.list(prefix, name)]
        found = [v for v in found if acl.can_list_variable(v.namespace, v.path)]
        return _fragment("fragments/variables.html", variables=found, prefix=prefix)

    @router.get("/ui/fragment/variable/{path:path}", include_in_schema=False)
    async def var_fragment(path: str, namespace: str = "default") -> Response:
        """A variable's values: the edge let this through only with ``read`` on the path."""
        variable = server.variables.get(path, many_namespaces(namespace) or "default")
        return _fragment("fragments/variable.html", variable=variable)

    # ---------------------------------------------------------------- last: the catch-all
    @router.get("/ui/", include_in_schema=False)
    @router.get("/ui/{page:path}", include_in_schema=False)
    async def shell(page: str = "") -> Response:
        """The same static page for every UI path: its script reads the path."""
        if page.startswith(("fragment/", "static/")):
            raise NotFound(f"no UI route /ui/{page}")
        return HTMLResponse(
            render("shell.html", acl=acl_enabled, version=__version__),
            headers={"Cache-Control": "no-cache", **SHELL_SECURITY},
        )
