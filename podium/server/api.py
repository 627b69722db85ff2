"""The HTTP API (``/v1``): a thin FastAPI layer over :class:`podium.server.core.Server`.

Responses are serialised straight from the stored pydantic models (no second
validation pass), every response carries ``X-Podium-Index``, list endpoints
take blocking queries (``?index=N&wait=30s``), and every ``/{id}`` path takes
a unique id prefix.  docs/api.md is the contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from podium import __version__
from podium.errors import AmbiguousPrefix, Conflict, Forbidden, NotFound, SpecError
from podium.models import (
    Allocation,
    AllocClientUpdate,
    Deployment,
    Evaluation,
    Job,
    JobSpec,
    JobStatus,
    JobVersion,
    Node,
    NodeResources,
    ServiceRegistration,
    ServiceSummary,
    parse_duration,
)
from podium.models.acl import LIST_JOBS, NODE_SECRET_HEADER, READ_JOB
from podium.models.api import (
    EvalAnswer,
    HeartbeatAnswer,
    IndexAnswer,
    NodeRegisterAnswer,
    RegisterAnswer,
    ScaleAnswer,
    StatusAnswer,
)
from podium.models.namespace import spec_key
from podium.models.node import check_node_names
from podium.models.variable import Variable, VariableMetadata, check_var_path
from podium.models.views import GroupSummary, JobInfo, JobListItem, JobPlanResult, NodeInfo
from podium.server import acl, acl_api, api_docs, catalog, snapshot, workload
from podium.server.api_docs import (
    BODY,
    CONFLICT,
    LOG_STREAM,
    NOT_FOUND,
    Index,
    SchemaOf,
    Since,
    Wait,
    errors,
)
from podium.server.api_namespaces import namespace_routes
from podium.server.audit import AuditLog, AuditMiddleware
from podium.server.core import RegisterResult, Server
from podium.server.keyring import KeyringError
from podium.server.namespaces import check_request_namespace as _ns
from podium.server.namespaces import many_namespaces as _ns_many
from podium.server.namespaces import require_namespace
from podium.server.proxy import DEFAULT_MAX_STREAMS, AgentProxy
from podium.spec import validate_job_dict
from podium.state import ALLOCS, EVALS, JOBS, NODES, VERSIONS
from podium.state.errors import StoreError, StoreFull
from podium.state.store import DEPLOYMENTS, SERVICES, VARIABLES

if TYPE_CHECKING:
    from podium.tls.server import ServerTLS

T = TypeVar("T")
_M = TypeVar("_M", bound=BaseModel)
INDEX_HEADER = "X-Podium-Index"
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0


# --------------------------------------------------------------------------- bodies
class JobRegisterRequest(BaseModel):
    job: Annotated[dict[str, Any], SchemaOf(JobSpec)]
    """The job file as data; checked by podium.spec (400 with ``issues``)."""
    check_index: StrictInt | None = None
    force_reschedule: StrictBool = False


class JobPlanRequest(BaseModel):
    job: Annotated[dict[str, Any], SchemaOf(JobSpec)]
    diff: StrictBool = True


class RevertRequest(BaseModel):
    version: StrictInt
    enforce_prior_version: StrictInt | None = None
    reason: str = ""


class VarPutRequest(BaseModel):
    items: dict[str, str]


class PromoteRequest(BaseModel):
    groups: list[str] = []
    """Only these groups (default: every group with canaries)."""


class ScaleRequest(BaseModel):
    group: str
    count: int = Field(ge=0, strict=True)
    """Bounded by the server's --max-count (podium.server.limits)."""


class ReportOrder(BaseModel):
    session: str = ""
    """The agent's run (any string it picks at start); empty: the request is unordered."""
    seq: int = 0
    """The run's count of report requests (from 1): a request with an older one than the
    newest taken from the node is refused with 409 (see ``Server.client_update_batched``)."""

    @model_validator(mode="after")
    def _seq_with_session(self) -> ReportOrder:
        if self.session and self.seq < 1:
            raise ValueError("seq: a request with a session needs its sequence number (>= 1)")
        return self


class ClientUpdateRequest(ReportOrder):
    node_id: str
    updates: list[AllocClientUpdate]


class NodeSyncRequest(ReportOrder):
    """A sync that carries the agent's reports (``POST`` on the sync path): they are
    committed, durably, before the sync is answered, so a busy node costs the server one
    request per change instead of a sync and a report."""

    updates: list[AllocClientUpdate] = Field(default_factory=list)
    have: list[str] = Field(default_factory=list)
    """As the ``GET`` sync's ``have`` query parameter, as a list (no length limit)."""


class EligibilityRequest(BaseModel):
    eligible: StrictBool


class DrainRequest(BaseModel):
    enable: StrictBool = True
    deadline: str | float = "1h"
    """How long service and batch allocations may take to leave; then everything stops."""
    ignore_system: StrictBool = False


class NodeSyncResponse(BaseModel):
    index: int
    allocations: list[Allocation]
    jobs: dict[str, JobSpec]
    alloc_indexes: dict[str, int] | None = None
    """Delta answers only (``since`` given): every allocation on the node with the index
    of its last change the agent must hear of; ``allocations`` holds only those changed
    past ``since``, and ``jobs`` only the specs the agent said it lacks."""
    job_indexes: dict[str, int] = {}
    """The stored version's modify index of each spec in ``jobs`` (the agent names what it
    holds as ``job@version@index`` in ``have``)."""
    alloc_count: int | None = None
    """Set when no allocation left the node past ``since``: ``alloc_indexes`` then lists
    only the allocations in ``allocations`` (the ones that stayed are not listed again),
    and the node holds ``alloc_count`` allocations in all."""


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _json(value: Any, tp: Any, index: int, status: int = 200) -> Response:
    adapter = _adapters.get(tp)
    if adapter is None:
        adapter = _adapters[tp] = TypeAdapter(tp)
    return Response(
        content=adapter.dump_json(value),
        media_type="application/json",
        status_code=status,
        headers={INDEX_HEADER: str(index)},
    )


def _registered(r: RegisterResult) -> Response:
    """The answer of a registration (a job file, or a revert)."""
    return _json(
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


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _resolve(kind: str, ident: str, exact: Callable[[str], T | None], ids: Iterable[str]) -> T:
    """An object by exact id or unique id prefix; with ACLs on, only one in the request's
    namespace (the edge checked the caller's rights there, and only there)."""
    found = _resolve_any(kind, ident, exact, ids)
    namespace = getattr(found, "namespace", None)
    if isinstance(namespace, str) and not acl.in_request_namespace(namespace):
        raise NotFound(f"{kind} {ident!r} not found in this namespace")
    return found


def _resolve_any(kind: str, ident: str, exact: Callable[[str], T | None], ids: Iterable[str]) -> T:
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


def _parse_wait(wait: str | None) -> float:
    if wait is None:
        return DEFAULT_WAIT
    return min(parse_duration(wait), MAX_WAIT)


# --------------------------------------------------------------------------- app
def create_app(
    server: Server,
    *,
    audit: AuditLog | None = None,
    tls: ServerTLS | None = None,
    max_log_streams: int = DEFAULT_MAX_STREAMS,
) -> FastAPI:
    """The API over ``server``; with ``audit``, every write is recorded there (outermost);
    with ``tls``, the certificate routes and the agent routes' guard (tls_routes)."""
    store = server.store
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

    async def blocking(index: int | None, wait: str | None, *tables: str) -> int:
        if index is not None:
            return await store.wait_for(index, _parse_wait(wait), tables=tables)
        return store.table_index(*tables)

    # ---------------------------------------------------------------- errors
    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(AmbiguousPrefix)
    async def _ambiguous(_: Request, exc: AmbiguousPrefix) -> JSONResponse:
        text = str(exc)
        matches = text.split(": ", 1)[1].rstrip("…").split(", ") if ": " in text else []
        return _error(400, text, matches=matches)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError) -> JSONResponse:
        return _error(
            400,
            "invalid job specification: "
            + "; ".join(
                f"{i.path}: {i.message}" + (f" ({i.hint})" if i.hint else "") for i in exc.issues
            ),
            issues=[i.as_dict() for i in exc.issues],
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, str(exc))

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        # 507 Insufficient Storage for a full disk, 503 for any other store failure;
        # nothing was changed (the store applies a write only once it is durable)
        return _error(
            507 if isinstance(exc, StoreFull) else 503,
            f"the server could not store this change, so nothing changed: {exc}",
            cause=exc.cause,
        )

    @app.exception_handler(KeyringError)
    async def _keyring(_: Request, exc: KeyringError) -> JSONResponse:
        return _error(500, str(exc))

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        """FastAPI's and Starlette's own refusals (a body that is not JSON, an unknown
        route, a method it lacks) in the API's one error shape, not ``{"detail"}``."""
        message = str(exc.detail)
        if exc.status_code == 400:
            message = f"invalid request body: {message} (it must be JSON, in UTF-8)"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
        return _error(400, "invalid request: " + "; ".join(parts))

    # ---------------------------------------------------------------- helpers
    def summarize(job: Job) -> dict[str, GroupSummary]:
        out = {g: GroupSummary() for g in job.spec.groups}
        for group, by_status in store.job_alloc_counts(job.id, job.namespace).items():
            out[group] = GroupSummary(**by_status)
        for ev in store.evals_by_job(job.id, job.namespace):
            if ev.status.value == "blocked":
                for g, n in ev.queued_allocations.items():
                    if g in out:
                        out[g].queued += n
        return out

    def job_status(job: Job, summary: dict[str, GroupSummary]) -> JobStatus:
        live = sum(s.pending + s.running for s in summary.values())
        if live:
            return JobStatus.RUNNING
        if job.stop:
            return JobStatus.DEAD
        if job.type == "batch":
            done = all(
                s.complete >= job.spec.groups[g].count
                for g, s in summary.items()
                if g in job.spec.groups
            )
            if done:
                return JobStatus.DEAD
        return JobStatus.PENDING

    def job_item(job: Job) -> JobListItem:
        summary = summarize(job)
        return JobListItem(
            id=job.id,
            namespace=job.namespace,
            type=job.type,
            priority=job.priority,
            status=job_status(job, summary),
            version=job.version,
            stop=job.stop,
            submit_time=job.submit_time,
            modify_index=job.modify_index,
            job_modify_index=job.job_modify_index,
            summary=summary,
        )

    # Every lookup by id or id prefix is within one namespace (``?namespace=``, default
    # ``default``): an object of another namespace is not found.
    def resolve_job(ident: str, namespace: str = "default") -> Job:
        ns = _ns(namespace)
        return _resolve("job", ident, lambda i: store.job(i, ns), (j.id for j in store.jobs(ns)))

    def resolve_alloc(ident: str, namespace: str = "default") -> Allocation:
        ns = _ns(namespace)

        def exact(i: str) -> Allocation | None:
            found = store.alloc(i)
            return found if found is not None and found.namespace == ns else None

        return _resolve(
            "allocation", ident, exact, (a.id for a in store.allocs() if a.namespace == ns)
        )

    def resolve_node(ident: str) -> Node:
        def exact(i: str) -> Node | None:
            node = store.node(i)
            if node is not None:
                return node
            by_name = [n for n in store.nodes() if n.name == i]
            return by_name[0] if len(by_name) == 1 else None

        return _resolve("node", ident, exact, (n.id for n in store.nodes()))

    def resolve_eval(ident: str, namespace: str = "default") -> Evaluation:
        ns = _ns(namespace)

        def exact(i: str) -> Evaluation | None:
            found = store.evaluation(i)
            return found if found is not None and found.namespace == ns else None

        ids = (e.id for e in store.evaluations() if e.namespace == ns)
        return _resolve("evaluation", ident, exact, ids)

    def node_detail(node: Node) -> NodeInfo:
        cpu, mem = store.node_usage(node.id)
        count = 0
        ports: set[int] = set()
        for a in store.allocs_by_node(node.id):
            if a.uses_resources():
                ports.update(p.value for p in a.ports.values())
            if not a.terminal():
                count += 1
        return NodeInfo(
            **node.model_dump(),
            alloc_count=count,
            allocated=NodeResources(cpu=cpu, memory=mem),
            ports_in_use=sorted(ports),
        )

    def sorted_allocs(allocs: Sequence[Allocation]) -> list[Allocation]:
        return sorted(allocs, key=lambda a: (a.create_index, a.name))

    # ---------------------------------------------------------------- jobs
    @app.post(
        "/v1/jobs",
        tags=["jobs"],
        response_model=RegisterAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def register_job(body: JobRegisterRequest, namespace: str = "default") -> Response:
        """``namespace`` (default ``default``) is where the job goes: a job file that names
        another one is refused (400), so the query alone says which namespace a request
        touches (what an access check reads).  The CLI and SDK send a file's own."""
        spec = validate_job_dict(body.job)
        r = server.register_job(
            spec, body.check_index, force_reschedule=body.force_reschedule, namespace=namespace
        )
        return _registered(r)

    @app.get("/v1/jobs", tags=["jobs"], response_model=list[JobListItem])
    async def list_jobs(
        prefix: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's jobs."""
        idx = await blocking(index, wait, JOBS, ALLOCS)
        jobs = sorted(store.jobs(_ns_many(namespace)), key=lambda j: (j.id, j.namespace))
        jobs = [j for j in jobs if acl.can(LIST_JOBS, j.namespace)]
        items = [job_item(j) for j in jobs if prefix is None or j.id.startswith(prefix)]
        return _json(items, list[JobListItem], idx)

    @app.get("/v1/job/{job_id}", tags=["jobs"], response_model=JobInfo, responses=NOT_FOUND)
    async def get_job(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = resolve_job(job_id, namespace)
        if index is not None:
            await store.wait_for(index, _parse_wait(wait), tables=(JOBS, ALLOCS))
            job = resolve_job(job.id, namespace)
        summary = summarize(job)
        detail = JobInfo(**{**job.model_dump(), "spec": job.spec}, summary=summary)
        detail.status = job_status(job, summary)
        return _json(detail, JobInfo, store.table_index(JOBS, ALLOCS))

    @app.delete("/v1/job/{job_id}", tags=["jobs"], response_model=EvalAnswer, responses=NOT_FOUND)
    async def stop_job(job_id: str, purge: bool = False, namespace: str = "default") -> Response:
        job = resolve_job(job_id, namespace)
        eval_id, idx = server.stop_job(job.id, purge=purge, namespace=job.namespace)
        return _json({"eval_id": eval_id, "index": idx}, dict[str, Any], idx)

    @app.get(
        "/v1/job/{job_id}/allocations",
        tags=["jobs"],
        response_model=list[Allocation],
        responses=NOT_FOUND,
    )
    async def job_allocs(
        job_id: str,
        all: bool = True,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        job = resolve_job(job_id, namespace)
        idx = await blocking(index, wait, ALLOCS)
        allocs = store.allocs_by_job(job.id, job.namespace)
        if not all:
            allocs = [a for a in allocs if not a.terminal()]
        return _json(sorted_allocs(allocs), list[Allocation], idx)

    @app.get(
        "/v1/job/{job_id}/versions",
        tags=["jobs"],
        response_model=list[JobVersion],
        responses=NOT_FOUND,
    )
    async def job_versions(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = resolve_job(job_id, namespace)
        idx = await blocking(index, wait, VERSIONS)
        return _json(store.job_versions(job.id, job.namespace), list[JobVersion], idx)

    @app.get(
        "/v1/job/{job_id}/evaluations",
        tags=["jobs"],
        response_model=list[Evaluation],
        responses=NOT_FOUND,
    )
    async def job_evals(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = resolve_job(job_id, namespace)
        idx = await blocking(index, wait, EVALS)
        evs = sorted(store.evals_by_job(job.id, job.namespace), key=lambda e: -e.create_index)
        return _json(evs, list[Evaluation], idx)

    @app.post(
        "/v1/job/{job_id}/scale",
        tags=["jobs"],
        response_model=ScaleAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def scale_job(job_id: str, body: ScaleRequest, namespace: str = "default") -> Response:
        job = resolve_job(job_id, namespace)
        r = server.scale_job(job.id, body.group, body.count, namespace=job.namespace)
        return _json(
            {
                "eval_id": r.eval_id,
                "version": r.version,
                "index": r.index,
                "job_modify_index": r.job_modify_index,
                "changed": r.changed,
            },
            dict[str, Any],
            r.index,
        )

    @app.post(
        "/v1/job/{job_id}/plan",
        tags=["jobs"],
        response_model=JobPlanResult,
        responses={**NOT_FOUND, **BODY},
    )
    async def plan_job(job_id: str, body: JobPlanRequest, namespace: str = "default") -> Response:
        """A dry run of registering the spec: diff, scheduler outcome, index; writes nothing."""
        spec = validate_job_dict(body.job)
        if spec.job != job_id:
            raise ValueError(f"the path names job {job_id!r} but the spec is job {spec.job!r}")
        plan = server.plan_job(spec, diff=body.diff, namespace=namespace)
        return _json(plan, JobPlanResult, plan.index)

    @app.post(
        "/v1/job/{job_id}/revert",
        tags=["jobs"],
        response_model=RegisterAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def revert_job(job_id: str, body: RevertRequest, namespace: str = "default") -> Response:
        job = resolve_job(job_id, namespace)
        try:
            r = server.revert_job(
                job.id,
                body.version,
                body.enforce_prior_version,
                body.reason,
                namespace=job.namespace,
            )
        except NotFound as exc:
            versions = [v.version for v in store.job_versions(job.id, job.namespace)]
            return _error(404, str(exc), versions=versions)
        return _registered(r)

    # ---------------------------------------------------------------- allocations
    @app.get("/v1/allocations", tags=["allocations"], response_model=list[Allocation])
    async def list_allocs(
        prefix: str | None = None,
        job_id: str | None = None,
        node_id: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's allocations."""
        idx = await blocking(index, wait, ALLOCS)
        ns = _ns_many(namespace)
        if job_id is not None and ns is not None:
            allocs = store.allocs_by_job(job_id, ns)
        elif node_id is not None:
            allocs = store.allocs_by_node(node_id)
        else:
            allocs = store.allocs()
        if job_id is not None and ns is None:
            allocs = [a for a in allocs if a.job_id == job_id]
        if ns is not None:
            allocs = [a for a in allocs if a.namespace == ns]
        if prefix:
            allocs = [a for a in allocs if a.id.startswith(prefix)]
        allocs = [a for a in allocs if acl.can(READ_JOB, a.namespace)]
        return _json(sorted_allocs(allocs), list[Allocation], idx)

    @app.get(
        "/v1/allocation/{alloc_id}",
        tags=["allocations"],
        response_model=Allocation,
        responses=NOT_FOUND,
    )
    async def get_alloc(
        alloc_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        alloc = resolve_alloc(alloc_id, namespace)
        if index is not None:
            await store.wait_for(index, _parse_wait(wait), tables=(ALLOCS,))
            alloc = resolve_alloc(alloc.id, namespace)
        return _json(alloc, Allocation, store.table_index(ALLOCS))

    @app.get(
        "/v1/allocation/{alloc_id}/logs",
        tags=["allocations"],
        responses={200: LOG_STREAM, **NOT_FOUND, **errors(429, 502)},
    )
    async def alloc_logs(
        alloc_id: str,
        task: str | None = None,
        type: str = "stdout",
        origin: str = "start",
        offset: int = 0,
        follow: bool = False,
        namespace: str = "default",
    ) -> Response:
        alloc = resolve_alloc(alloc_id, namespace)
        if type not in ("stdout", "stderr"):
            raise ValueError("type must be 'stdout' or 'stderr'")
        if task is None:
            tasks = list(alloc.task_states) or list(alloc.task_resources)
            if len(tasks) != 1:
                raise ValueError(
                    f"allocation {alloc.id} has several tasks; name one of: " + ", ".join(tasks)
                )
            task = tasks[0]
        # Only a task of the allocation's job, and a sane offset: the agent reads files by
        # these, so nothing else is passed on to it (it checks the same again).
        spec = store.job_spec(alloc.job_id, alloc.job_version, alloc.namespace)
        group = spec.groups.get(alloc.group) if spec is not None else None
        known = set(alloc.task_states) | set(alloc.task_resources)
        if group is not None:
            known |= set(group.tasks)
        if task not in known:
            raise NotFound(
                f"allocation {alloc.id} has no task {task!r} (tasks: {', '.join(sorted(known))})"
            )
        if offset < 0:
            raise ValueError(f"offset must be a non-negative number of bytes, not {offset}")
        if origin not in ("start", "end"):
            raise ValueError(f"origin must be 'start' or 'end', not {origin!r}")
        node = store.node(alloc.node_id)
        if node is None or not node.http_addr:
            raise NotFound(f"node {alloc.node_id} of allocation {alloc.id} cannot be reached")
        url = f"{node.http_addr.rstrip('/')}/v1/client/allocation/{alloc.id}/logs"
        params = {
            "task": task,
            "type": type,
            "origin": origin,
            "offset": str(offset),
            "follow": "true" if follow else "false",
        }
        return await agent_proxy.relay(
            url,
            params,
            relay_ext(node.id),
            f"cannot reach the agent of node {node.name} at {node.http_addr}",
        )

    # ---------------------------------------------------------------- nodes
    @app.get("/v1/nodes", tags=["nodes"], response_model=list[NodeInfo])
    async def list_nodes(
        prefix: str | None = None, index: Index = None, wait: Wait = None
    ) -> Response:
        idx = await blocking(index, wait, NODES)
        nodes = sorted(store.nodes(), key=lambda n: n.name)
        if prefix:
            nodes = [n for n in nodes if n.id.startswith(prefix)]
        return _json([node_detail(n) for n in nodes], list[NodeInfo], idx)

    @app.get("/v1/node/{node_id}", tags=["nodes"], response_model=NodeInfo, responses=NOT_FOUND)
    async def get_node(node_id: str) -> Response:
        return _json(node_detail(resolve_node(node_id)), NodeInfo, store.table_index(NODES))

    @app.get(
        "/v1/node/{node_id}/allocations",
        tags=["nodes"],
        response_model=list[Allocation],
        responses=NOT_FOUND,
    )
    async def node_allocs(node_id: str, index: Index = None, wait: Wait = None) -> Response:
        node = resolve_node(node_id)
        idx = await blocking(index, wait, ALLOCS)
        allocs = [a for a in store.allocs_by_node(node.id) if acl.can(READ_JOB, a.namespace)]
        return _json(sorted_allocs(allocs), list[Allocation], idx)

    @app.put("/v1/node/register", tags=["agent"], response_model=NodeRegisterAnswer, responses=BODY)
    async def register_node(node: Node, request: Request) -> Response:
        """A node's (re-)registration: a known node id needs its node secret; a new node
        gets one in the answer (``node_secret``, shown once; its agent keeps it)."""
        check_node_names(node)
        trust = server.trust
        presented = request.headers.get(NODE_SECRET_HEADER)
        secret = trust.registration(node.id, presented, acl.may_register_node(node.id))
        record = trust.node_secret_record(node.id, secret, 0) if secret else None
        idx = server.register_node(node, record)
        answer = {"node_id": node.id, "index": idx, "heartbeat_ttl": server.config.heartbeat_ttl}
        if secret:
            answer["node_secret"] = secret
        return _json(answer, dict[str, Any], idx)

    @app.put(
        "/v1/node/{node_id}/heartbeat",
        tags=["agent"],
        response_model=HeartbeatAnswer,
        responses=NOT_FOUND,
    )
    async def heartbeat(node_id: str) -> Response:
        idx = server.heartbeat(node_id)
        return _json(
            {"index": idx, "heartbeat_ttl": server.config.heartbeat_ttl}, dict[str, Any], idx
        )

    @app.put(
        "/v1/node/{node_id}/eligibility",
        tags=["nodes"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **BODY},
    )
    async def eligibility(node_id: str, body: EligibilityRequest) -> Response:
        node = resolve_node(node_id)
        idx = server.set_eligibility(node.id, body.eligible)
        return _json({"index": idx}, dict[str, Any], idx)

    @app.put(
        "/v1/node/{node_id}/drain",
        tags=["nodes"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **BODY},
    )
    async def drain(node_id: str, body: DrainRequest) -> Response:
        node = resolve_node(node_id)
        idx = server.drain_node(
            node.id,
            enable=body.enable,
            deadline=parse_duration(body.deadline),
            ignore_system=body.ignore_system,
        )
        return _json({"index": idx}, dict[str, Any], idx)

    async def sync_answer(
        node_id: str,
        index: int | None,
        wait: str | None,
        since: int | None,
        have: str | list[str] | None,
    ) -> Response:
        seconds = _parse_wait(wait)  # checked even without ``index`` (the fast path's too)
        if index is not None:
            await store.wait_for(index, seconds, node_allocs=node_id)
        idx = store.node_alloc_index(node_id)
        indexes: dict[str, int] | None = None
        count: int | None = None
        known: set[str] = set()
        allocs: list[Allocation]
        if since is None:
            allocs = store.allocs_by_node(node_id)
        else:
            if since > idx:
                since = 0  # an index from another history (a reset store): everything
            # Nothing left the node past ``since``: only what changed is listed, with the
            # node's count (the agent checks it); else every id, so removals show.
            ids = store.alloc_ids_by_node(node_id)
            every = since == 0 or store.node_removal_index(node_id) > since
            sync_index = store.alloc_sync_index
            indexes = {}
            changed = []
            if every:
                for alloc_id in ids:
                    at = indexes[alloc_id] = sync_index(alloc_id)
                    if at > since:
                        changed.append(alloc_id)
            else:
                changed = store.changed_alloc_ids(node_id, since)
                indexes = {alloc_id: sync_index(alloc_id) for alloc_id in changed}
                count = len(ids)
            allocs = [a for a in map(store.alloc, changed) if a is not None]
            if have:
                known = set(have.split(",") if isinstance(have, str) else have)
        jobs: dict[str, JobSpec] = {}
        job_indexes: dict[str, int] = {}
        for a in allocs:
            key = spec_key(a.namespace, a.job_id, a.job_version)
            if key in jobs:
                continue
            version = store.job_version(a.job_id, a.job_version, a.namespace)
            if version is None:
                continue
            # The version's own index tells a purged and re-registered job's version 0
            # from the old one, which the agent may still hold under the same key.
            if f"{key}@{version.modify_index}" in known:
                continue
            jobs[key] = version.spec
            job_indexes[key] = version.modify_index
        answer = NodeSyncResponse.model_construct(
            index=idx,
            allocations=allocs,
            jobs=jobs,
            alloc_indexes=indexes,
            job_indexes=job_indexes,
            alloc_count=count,
        )
        return _json(answer, NodeSyncResponse, idx)

    async def sync_with_reports(
        node_id: str, index: int | None, wait: str | None, since: int | None, body: NodeSyncRequest
    ) -> Response:
        _parse_wait(wait)  # a bad query is refused before anything is written
        if body.updates:
            await server.client_update_batched(
                node_id, body.updates, session=body.session, seq=body.seq
            )
        return await sync_answer(node_id, index, wait, since, body.have)

    @app.get(
        "/v1/client/node/{node_id}/allocations",
        tags=["agent"],
        response_model=NodeSyncResponse,
        responses=NOT_FOUND,
    )
    async def node_sync(
        node_id: str,
        index: Index = None,
        wait: Wait = None,
        since: Since = None,
        have: str | None = None,
    ) -> Response:
        """The node's allocations and their job specs.  With ``since`` (Nomad's delta
        sync): only the allocations changed past it in full, every id with its index, and
        specs only for the versions not listed in ``have`` (comma-separated
        ``job@version@index``: the index tells a re-registered job's version from a purged
        one's)."""
        return await sync_answer(node_id, index, wait, since, have)

    @app.post(
        "/v1/client/node/{node_id}/allocations",
        tags=["agent"],
        response_model=NodeSyncResponse,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def node_sync_with_reports(
        node_id: str,
        body: NodeSyncRequest,
        index: Index = None,
        wait: Wait = None,
        since: Since = None,
    ) -> Response:
        """The ``GET`` sync with the agent's reports riding on it: ``updates`` are committed
        as ``POST /v1/client/allocations`` commits them (durable before any answer; an
        error answers the request and commits none of them), then the sync is answered
        as the ``GET`` answers it, ``have`` taken from the body."""
        return await sync_with_reports(node_id, index, wait, since, body)

    @app.post(
        "/v1/client/allocations",
        tags=["agent"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def client_update(body: ClientUpdateRequest) -> Response:
        acl.reporting_node(body.node_id)
        idx = await server.client_update_batched(
            body.node_id, body.updates, session=body.session, seq=body.seq
        )
        return _json({"index": idx}, dict[str, Any], idx)

    # ---------------------------------------------------------------- service catalog
    @app.get("/v1/services", tags=["services"], response_model=list[ServiceSummary])
    async def list_services(
        index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        """``namespace=*``: every namespace's services."""
        idx = await blocking(index, wait, SERVICES)
        found = [
            s
            for s in catalog.summaries(store, _ns_many(namespace))
            if acl.can_read_services(s.namespace)
        ]
        return _json(found, list[ServiceSummary], idx)

    @app.get("/v1/service/{name}", tags=["services"], response_model=list[ServiceRegistration])
    async def get_service(
        name: str,
        healthy: bool | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        ns = _ns(namespace)
        idx = await blocking(index, wait, SERVICES)
        found = catalog.instances(store, name, healthy=healthy, namespace=ns)
        return _json(found, list[ServiceRegistration], idx)

    # ---------------------------------------------------------------- evaluations
    @app.get("/v1/evaluations", tags=["evaluations"], response_model=list[Evaluation])
    async def list_evals(
        job_id: str | None = None,
        prefix: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's evaluations."""
        idx = await blocking(index, wait, EVALS)
        ns = _ns_many(namespace)
        if job_id and ns is not None:
            evs = store.evals_by_job(job_id, ns)
        else:
            evs = store.evaluations()
            if job_id:
                evs = [e for e in evs if e.job_id == job_id]
            if ns is not None:
                evs = [e for e in evs if e.namespace == ns]
        if prefix:
            evs = [e for e in evs if e.id.startswith(prefix)]
        evs = [e for e in evs if acl.can(READ_JOB, e.namespace)]
        evs = sorted(evs, key=lambda e: -e.create_index)
        return _json(evs, list[Evaluation], idx)

    @app.get(
        "/v1/evaluation/{eval_id}",
        tags=["evaluations"],
        response_model=Evaluation,
        responses=NOT_FOUND,
    )
    async def get_eval(
        eval_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        ev = resolve_eval(eval_id, namespace)
        if index is not None:
            await store.wait_for(index, _parse_wait(wait), tables=(EVALS,))
            ev = resolve_eval(ev.id, namespace)
        return _json(ev, Evaluation, store.table_index(EVALS))

    # ---------------------------------------------------------------- variables
    @app.get("/v1/vars", tags=["variables"], response_model=list[VariableMetadata])
    async def list_vars(
        prefix: str = "",
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """Paths and indexes only: a listing never carries a value.  ``namespace=*``:
        every namespace's."""
        idx = await blocking(index, wait, VARIABLES)
        ns = _ns_many(namespace)
        names = [ns] if ns is not None else [n.name for n in store.namespaces()]
        found = [v for name in names for v in server.variables.list(prefix, name)]
        found = [v for v in found if acl.can_list_variable(v.namespace, v.path)]
        return _json(found, list[VariableMetadata], idx)

    @app.get(
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
            await server.variables.wait(path, index, _parse_wait(wait), ns)
        var = server.variables.get(path, ns)
        return _json(var, Variable, store.table_index(VARIABLES))

    @app.put(
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
        return _json(var, Variable, var.modify_index)

    @app.delete(
        "/v1/var/{path:path}",
        tags=["variables"],
        response_model=IndexAnswer,
        responses={**NOT_FOUND, **CONFLICT},
    )
    async def delete_var(path: str, cas: int | None = None, namespace: str = "default") -> Response:
        idx = server.variables.delete(path, cas=cas, namespace=_ns(namespace))
        return _json({"index": idx}, dict[str, Any], idx)

    # ---------------------------------------------------------------- deployments
    def resolve_deployment(ident: str, namespace: str = "default") -> Deployment:
        ns = _ns(namespace)

        def exact(i: str) -> Deployment | None:
            found = store.deployment(i)
            return found if found is not None and found.namespace == ns else None

        ids = (d.id for d in store.deployments() if d.namespace == ns)
        return _resolve("deployment", ident, exact, ids)

    @app.get(
        "/v1/deployments",
        tags=["deployments"],
        response_model=list[Deployment],
        responses=NOT_FOUND,
    )
    async def list_deployments(
        job: str | None = None,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        """``namespace=*``: every namespace's deployments (``job`` needs one namespace)."""
        idx = await blocking(index, wait, DEPLOYMENTS)
        ns = _ns_many(namespace)
        if job is not None:
            found_job = resolve_job(job, namespace)
            found = store.deployments_by_job(found_job.id, found_job.namespace)
        else:
            found = sorted(
                (d for d in store.deployments() if ns is None or d.namespace == ns),
                key=lambda d: (d.create_index, d.id),
                reverse=True,
            )
        found = [d for d in found if acl.can(READ_JOB, d.namespace)]
        return _json(found, list[Deployment], idx)

    @app.get(
        "/v1/deployment/{deployment_id}",
        tags=["deployments"],
        response_model=Deployment,
        responses=NOT_FOUND,
    )
    async def get_deployment(
        deployment_id: str,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        dep = resolve_deployment(deployment_id, namespace)
        idx = await blocking(index, wait, DEPLOYMENTS)
        return _json(store.deployment(dep.id) or dep, Deployment, idx)

    @app.get(
        "/v1/deployment/{deployment_id}/allocations",
        tags=["deployments"],
        response_model=list[Allocation],
        responses=NOT_FOUND,
    )
    async def deployment_allocs(
        deployment_id: str,
        index: Index = None,
        wait: Wait = None,
        namespace: str = "default",
    ) -> Response:
        dep = resolve_deployment(deployment_id, namespace)
        idx = await blocking(index, wait, ALLOCS)
        allocs = [
            a for a in store.allocs_by_job(dep.job_id, dep.namespace) if a.deployment_id == dep.id
        ]
        return _json(sorted_allocs(allocs), list[Allocation], idx)

    @app.get(
        "/v1/job/{job_id}/deployment",
        tags=["jobs"],
        response_model=Deployment | None,
        responses=NOT_FOUND,
    )
    async def job_latest_deployment(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = resolve_job(job_id, namespace)
        idx = await blocking(index, wait, DEPLOYMENTS)
        return _json(store.latest_deployment(job.id, job.namespace), Deployment | None, idx)

    @app.get(
        "/v1/job/{job_id}/deployments",
        tags=["jobs"],
        response_model=list[Deployment],
        responses=NOT_FOUND,
    )
    async def job_deployments(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        job = resolve_job(job_id, namespace)
        idx = await blocking(index, wait, DEPLOYMENTS)
        return _json(store.deployments_by_job(job.id, job.namespace), list[Deployment], idx)

    @app.post(
        "/v1/deployment/{deployment_id}/promote",
        tags=["deployments"],
        response_model=EvalAnswer,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    async def promote_deployment(
        deployment_id: str, body: PromoteRequest | None = None, namespace: str = "default"
    ) -> Response:
        dep = resolve_deployment(deployment_id, namespace)
        groups = body.groups if body is not None else None
        eval_id, idx = server.promote_deployment(dep.id, groups or None)
        return _json({"eval_id": eval_id, "index": idx}, dict[str, Any], idx)

    @app.post(
        "/v1/deployment/{deployment_id}/fail",
        tags=["deployments"],
        response_model=EvalAnswer,
        responses={**NOT_FOUND, **CONFLICT},
    )
    async def fail_deployment(deployment_id: str, namespace: str = "default") -> Response:
        dep = resolve_deployment(deployment_id, namespace)
        eval_id, idx = server.fail_deployment(dep.id)
        return _json({"eval_id": eval_id, "index": idx}, dict[str, Any], idx)

    # ---------------------------------------------------------------- status
    @app.get("/v1/status", tags=["status"], response_model=StatusAnswer)
    async def status() -> Response:
        return _json(
            {
                "version": __version__,
                "index": store.index,
                "nodes": len(store.nodes()),
                "jobs": len(store.jobs()),
                "broker": server.broker.stats(),
            },
            dict[str, Any],
            store.index,
        )

    app.include_router(namespace_routes(server))
    _fast_agent_routes(app, server, sync_answer, sync_with_reports)
    app.include_router(acl_api.router(server.trust))
    app.include_router(workload.router(server))
    app.include_router(snapshot.router(server))
    # Middleware: the last added is the outermost.  A request meets the audit log, then
    # the TLS guard (a machine's route needs its certificate), then the ACL edge.
    acl.install(app, server.trust, enabled=server.config.acl)
    if tls is not None:
        tls_routes.install_tls(app, tls)
    if audit is not None:
        app.add_middleware(AuditMiddleware, log=audit)  # added last: outermost
    return app


# --------------------------------------------------------------------------- agents' hot routes
class _AsgiEndpoint:
    """A Starlette route endpoint that is an ASGI callable (not a request handler)."""

    def __init__(self, fn: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.fn = fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fn(scope, receive, send)


def _fast_agent_routes(
    app: FastAPI,
    server: Server,
    sync_answer: Callable[
        [str, int | None, str | None, int | None, str | list[str] | None], Awaitable[Response]
    ],
    sync_with_reports: Callable[
        [str, int | None, str | None, int | None, NodeSyncRequest], Awaitable[Response]
    ],
) -> None:
    """Plain Starlette routes, ahead of FastAPI's, for the requests every placement costs
    an agent (its allocation sync, with or without its reports riding on it, and a report
    on its own).

    FastAPI's per-request parameter solving and the route scan ahead of them cost as much
    as the work behind them (profiled at 5,000 nodes).  These do the same work with the
    same answers; anything they do not parse plainly (an odd query, an invalid body, a
    repeated parameter) is handed to the FastAPI route, which answers it as before.  The
    FastAPI routes stay in the OpenAPI document."""
    routes = {
        (r.path, m): r for r in app.routes if isinstance(r, APIRoute) for m in r.methods or ()
    }
    sync_path = "/v1/client/node/{node_id}/allocations"
    sync_route = routes[(sync_path, "GET")]
    sync_post_route = routes[(sync_path, "POST")]
    update_route = routes[("/v1/client/allocations", "POST")]

    def sync_query(scope: Scope) -> dict[str, str] | None:
        """``index``, ``wait``, ``since`` and ``have``, or None where FastAPI should judge."""
        args: dict[str, str] = {}
        for key, value in parse_qsl(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        ):
            if key in args or (key in ("index", "since") and not _is_digits(value)):
                return None
            args[key] = value
        return args

    def number(args: dict[str, str], key: str) -> int | None:
        value = args.get(key)
        return int(value) if value is not None else None

    async def node_sync(scope: Scope, receive: Receive, send: Send) -> None:
        args = sync_query(scope)
        if args is None:
            await sync_route.app(scope, receive, send)
            return
        response = await sync_answer(
            scope["path_params"]["node_id"],
            number(args, "index"),
            args.get("wait"),
            number(args, "since"),
            args.get("have"),
        )
        await response(scope, receive, send)

    async def node_sync_with_reports(scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        args = sync_query(scope)
        request = _parse_json_body(scope, body, NodeSyncRequest) if args is not None else None
        if args is None or request is None:
            await sync_post_route.app(scope, _replay(body, receive), send)
            return
        del body  # not held through the blocking wait (thousands of parked agents)
        response = await sync_with_reports(
            scope["path_params"]["node_id"],
            number(args, "index"),
            args.get("wait"),
            number(args, "since"),
            request,
        )
        await response(scope, receive, send)

    async def client_update(scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        request = _parse_json_body(scope, body, ClientUpdateRequest)
        if request is None:
            await update_route.app(scope, _replay(body, receive), send)
            return
        acl.reporting_node(request.node_id)
        idx = await server.client_update_batched(
            request.node_id, request.updates, session=request.session, seq=request.seq
        )
        await _json({"index": idx}, dict[str, Any], idx)(scope, receive, send)

    fast = [
        Route(sync_path, _AsgiEndpoint(node_sync), methods=["GET"], include_in_schema=False),
        Route(
            sync_path,
            _AsgiEndpoint(node_sync_with_reports),
            methods=["POST"],
            include_in_schema=False,
        ),
        Route(
            update_route.path,
            _AsgiEndpoint(client_update),
            methods=["POST"],
            include_in_schema=False,
        ),
    ]
    app.router.routes[:0] = fast


async def _read_body(receive: Receive) -> bytes | None:
    """The request's whole body; None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse_json_body(scope: Scope, body: bytes, model: type[_M]) -> _M | None:
    """``body`` as ``model`` when it is valid JSON sent as such; None for FastAPI to judge
    (and answer with its usual 422 or 415)."""
    content_type = dict(scope.get("headers", ())).get(b"content-type", b"application/json")
    if content_type.split(b";")[0].strip() != b"application/json":
        return None
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` (already read) once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _is_digits(value: str) -> bool:
    return bool(value) and value.isascii() and value.isdigit()
