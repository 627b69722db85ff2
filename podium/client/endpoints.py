"""Every call of the HTTP API described once, as data (see docs/api.md).

An :class:`Endpoint` says which request to send and how to read the answer;
it performs no I/O.  :class:`podium.client.Client` and
:class:`podium.client.AsyncClient` both execute the same endpoints, so the two
clients cannot drift apart, and the request side of the SDK can be tested
without a server.

Most callers use the client's named methods (``client.job("web")``).  Build
an endpoint yourself when you need the store index with the answer, e.g. to
write a blocking-query loop::

    result = client.query(endpoints.job_allocations("web"))
    while True:
        result = client.query(endpoints.job_allocations("web"), index=result.index, wait="30s")
        ...
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import TypeAdapter

from podium.client.results import (
    DeploymentActionResult,
    JobInfo,
    JobListItem,
    JobPlanResult,
    NodeInfo,
    NodeSync,
    RegisterResult,
    ScaleResult,
    ServerStatus,
    SpecCache,
    StopResult,
)
from podium.errors import APIError
from podium.models import (
    Allocation,
    AllocClientUpdate,
    Deployment,
    Evaluation,
    JobSpec,
    JobVersion,
    Node,
    ServiceRegistration,
    ServiceSummary,
)
from podium.models.api import LeaderAnswer, MembersAnswer, PeersAnswer
from podium.models.events import Event
from podium.models.identity import IdentitiesAnswer
from podium.models.namespace import NamespaceInfo, Quota
from podium.models.scaling import JobScaleStatus
from podium.models.schedconfig import PreemptionConfig, SchedulerConfiguration
from podium.models.stats import AllocResourceUsage
from podium.models.variable import Variable, VariableMetadata, check_var_path

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint(Generic[T]):
    """One API call: method, path, query parameters, JSON body and answer parser."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    parse_json: Callable[[bytes], T] | None = None
    """Parse the answer straight from its bytes (pydantic's JSON parser), where it is
    big and frequent enough for ``json.loads`` then ``parse`` to show: an agent's sync."""
    file_namespace: str | None = None
    """A job file's own ``namespace:``: sent as the request's namespace when neither the
    call nor the client names one (the server takes the namespace from the query alone,
    and refuses a file that disagrees with it)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers of this request only (a node's secret on the agents' routes)."""


def _adapter(tp: Any) -> Callable[[Any], Any]:
    return TypeAdapter(tp).validate_python


_ALLOCS: Callable[[Any], list[Allocation]] = _adapter(list[Allocation])
_EVALS: Callable[[Any], list[Evaluation]] = _adapter(list[Evaluation])
_DEPLOYMENTS: Callable[[Any], list[Deployment]] = _adapter(list[Deployment])
_MAYBE_DEPLOYMENT: Callable[[Any], Deployment | None] = _adapter(Deployment | None)
_VERSIONS: Callable[[Any], list[JobVersion]] = _adapter(list[JobVersion])
_JOB_LIST: Callable[[Any], list[JobListItem]] = _adapter(list[JobListItem])
_NODES: Callable[[Any], list[NodeInfo]] = _adapter(list[NodeInfo])


def _seg(value: str) -> str:
    """Quote one path segment: ids are user input and may hold anything."""
    if not value:
        raise ValueError("an id (or id prefix) cannot be empty")
    return quote(value, safe="")


NAMESPACED = (
    "/v1/job",
    "/v1/allocation",
    "/v1/evaluation",
    "/v1/deployment",
    "/v1/var",
    "/v1/service",
)
"""Paths (prefixes) of the routes whose objects belong to a namespace: a client's own
``namespace`` is sent to these unless the endpoint names one (see :func:`in_namespace`)."""


def namespaced(path: str) -> bool:
    return path.startswith(NAMESPACED)


def in_namespace(endpoint: Endpoint[T], namespace: str | None) -> Endpoint[T]:
    """``endpoint`` sent to ``namespace`` (None: left as it is; ``*``: every namespace,
    on listings)."""
    if namespace is None:
        return endpoint
    return replace(endpoint, params={**endpoint.params, "namespace": namespace})


def _params(**values: str | int | bool | None) -> dict[str, str]:
    """Query parameters, leaving out what is unset; booleans as ``true``."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None or value is False:
            continue
        out[key] = "true" if value is True else str(value)
    return out


def _dict(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _job_info(body: Any) -> JobInfo:
    data = _dict(body)
    # The contract is the job's fields plus "summary"; accept the job nested
    # under "job" too, so a server that wraps it still reads the same.
    if isinstance(data.get("job"), dict) and "id" not in data:
        data = {**data["job"], "summary": data.get("summary", {})}
    return JobInfo.model_validate(data)


def _index(body: Any) -> int:
    return int(_dict(body)["index"])


# -- jobs ------------------------------------------------------------------------------


def jobs(prefix: str | None = None) -> Endpoint[list[JobListItem]]:
    return Endpoint("GET", "/v1/jobs", _JOB_LIST, _params(prefix=prefix))


def job(job_id: str) -> Endpoint[JobInfo]:
    return Endpoint("GET", f"/v1/job/{_seg(job_id)}", _job_info)


def register_job(
    spec: JobSpec | Mapping[str, Any],
    check_index: int | None = None,
    force_reschedule: bool = False,
) -> Endpoint[RegisterResult]:
    """Register ``spec``; ``force_reschedule`` also replaces its failed allocations now,
    even those their reschedule policy gave up on."""
    doc = (
        spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else dict(spec)
    )
    body: dict[str, Any] = {"job": doc}
    if check_index is not None:
        body["check_index"] = check_index
    if force_reschedule:
        body["force_reschedule"] = True
    return Endpoint(
        "POST",
        "/v1/jobs",
        RegisterResult.model_validate,
        body=body,
        file_namespace=_file_namespace(doc),
    )


def _file_namespace(doc: Mapping[str, Any]) -> str | None:
    named = doc.get("namespace")
    return named if isinstance(named, str) and named else None


def plan_job(spec: JobSpec | Mapping[str, Any], diff: bool = True) -> Endpoint[JobPlanResult]:
    """A dry run of :func:`register_job`: the diff, the scheduler's outcome, and the
    ``job_modify_index`` to pass back as ``check_index``.  Changes nothing."""
    doc = (
        spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else dict(spec)
    )
    job_id = str(doc.get("job") or "")
    return Endpoint(
        "POST",
        f"/v1/job/{_seg(job_id)}/plan",
        JobPlanResult.model_validate,
        body={"job": doc, "diff": diff},
        file_namespace=_file_namespace(doc),
    )


def revert_job(
    job_id: str, version: int, enforce_prior_version: int | None = None, reason: str = ""
) -> Endpoint[RegisterResult]:
    """Register the spec of an older ``version`` again as a new version (and evaluate it)."""
    body: dict[str, Any] = {"version": version}
    if enforce_prior_version is not None:
        body["enforce_prior_version"] = enforce_prior_version
    if reason:
        body["reason"] = reason
    return Endpoint(
        "POST", f"/v1/job/{_seg(job_id)}/revert", RegisterResult.model_validate, body=body
    )


def stop_job(job_id: str, purge: bool = False) -> Endpoint[StopResult]:
    return Endpoint(
        "DELETE", f"/v1/job/{_seg(job_id)}", StopResult.model_validate, _params(purge=purge)
    )


def job_allocations(job_id: str, all: bool = False) -> Endpoint[list[Allocation]]:
    return Endpoint("GET", f"/v1/job/{_seg(job_id)}/allocations", _ALLOCS, _params(all=all))


def job_versions(job_id: str) -> Endpoint[list[JobVersion]]:
    return Endpoint("GET", f"/v1/job/{_seg(job_id)}/versions", _VERSIONS)


def job_evaluations(job_id: str) -> Endpoint[list[Evaluation]]:
    return Endpoint("GET", f"/v1/job/{_seg(job_id)}/evaluations", _EVALS)


def scale_job(job_id: str, group: str, count: int, message: str = "") -> Endpoint[ScaleResult]:
    body: dict[str, Any] = {"group": group, "count": count}
    if message:
        body["message"] = message
    return Endpoint("POST", f"/v1/job/{_seg(job_id)}/scale", ScaleResult.model_validate, body=body)


def job_scale_status(job_id: str) -> Endpoint[JobScaleStatus]:
    """Each group's count, scaling bounds and policy, and newest scaling events."""
    return Endpoint("GET", f"/v1/job/{_seg(job_id)}/scale", JobScaleStatus.model_validate)


# -- allocations -----------------------------------------------------------------------


def allocations(
    prefix: str | None = None, job_id: str | None = None, node_id: str | None = None
) -> Endpoint[list[Allocation]]:
    return Endpoint(
        "GET", "/v1/allocations", _ALLOCS, _params(prefix=prefix, job_id=job_id, node_id=node_id)
    )


def allocation(alloc_id: str) -> Endpoint[Allocation]:
    return Endpoint("GET", f"/v1/allocation/{_seg(alloc_id)}", Allocation.model_validate)


def alloc_stats(alloc_id: str) -> Endpoint[AllocResourceUsage]:
    """The allocation's resource usage, as its agent measures it now."""
    return Endpoint(
        "GET", f"/v1/allocation/{_seg(alloc_id)}/stats", AllocResourceUsage.model_validate
    )


SNAPSHOT = "/v1/operator/snapshot"
"""The store's snapshot streams a file, so it is not an :class:`Endpoint` either."""


def alloc_logs_path(alloc_id: str) -> str:
    """The logs endpoint streams text, so it is not an :class:`Endpoint`; this is its path."""
    return f"/v1/allocation/{_seg(alloc_id)}/logs"


def alloc_logs_params(
    task: str, type: str = "stdout", origin: str = "start", offset: int = 0, follow: bool = False
) -> dict[str, str]:
    if type not in ("stdout", "stderr"):
        raise ValueError(f"log type must be 'stdout' or 'stderr', not {type!r}")
    if origin not in ("start", "end"):
        raise ValueError(f"log origin must be 'start' or 'end', not {origin!r}")
    if offset < 0:
        raise ValueError("a log offset cannot be negative")
    params = {"task": task, "type": type, "origin": origin, "offset": str(offset)}
    if follow:
        params["follow"] = "true"
    return params


# -- nodes, evaluations, status --------------------------------------------------------


def nodes(prefix: str | None = None) -> Endpoint[list[NodeInfo]]:
    return Endpoint("GET", "/v1/nodes", _NODES, _params(prefix=prefix))


def node(node_id: str) -> Endpoint[NodeInfo]:
    return Endpoint("GET", f"/v1/node/{_seg(node_id)}", NodeInfo.model_validate)


def drain_node(
    node_id: str, *, enable: bool = True, deadline: str | float = "1h", ignore_system: bool = False
) -> Endpoint[int]:
    """Start (or, with ``enable=False``, cancel) draining a node; answers the index."""
    body = {"enable": enable, "deadline": deadline, "ignore_system": ignore_system}
    return Endpoint("PUT", f"/v1/node/{_seg(node_id)}/drain", _index, body=body)


def node_eligibility(node_id: str, eligible: bool) -> Endpoint[int]:
    """Mark a node eligible (or not) for new placements; answers the index."""
    return Endpoint(
        "PUT", f"/v1/node/{_seg(node_id)}/eligibility", _index, body={"eligible": eligible}
    )


def node_allocations(node_id: str) -> Endpoint[list[Allocation]]:
    return Endpoint("GET", f"/v1/node/{_seg(node_id)}/allocations", _ALLOCS)


def evaluations(job_id: str | None = None, prefix: str | None = None) -> Endpoint[list[Evaluation]]:
    return Endpoint("GET", "/v1/evaluations", _EVALS, _params(job_id=job_id, prefix=prefix))


def evaluation(eval_id: str) -> Endpoint[Evaluation]:
    return Endpoint("GET", f"/v1/evaluation/{_seg(eval_id)}", Evaluation.model_validate)


def status() -> Endpoint[ServerStatus]:
    return Endpoint("GET", "/v1/status", ServerStatus.model_validate)


SCHEDULER_CONFIG_PATH = "/v1/operator/scheduler/configuration"


def scheduler_config() -> Endpoint[SchedulerConfiguration]:
    """``GET /v1/operator/scheduler/configuration``: which job types may preempt."""
    return Endpoint("GET", SCHEDULER_CONFIG_PATH, SchedulerConfiguration.model_validate)


def set_scheduler_config(
    preemption: PreemptionConfig, check_index: int | None = None
) -> Endpoint[SchedulerConfiguration]:
    """``PUT /v1/operator/scheduler/configuration``; ``check_index``: only if unchanged."""
    body: dict[str, Any] = {"preemption_config": preemption.model_dump()}
    if check_index is not None:
        body["check_index"] = check_index
    return Endpoint("PUT", SCHEDULER_CONFIG_PATH, SchedulerConfiguration.model_validate, body=body)


def leader() -> Endpoint[LeaderAnswer]:
    return Endpoint("GET", "/v1/status/leader", LeaderAnswer.model_validate)


def members() -> Endpoint[MembersAnswer]:
    return Endpoint("GET", "/v1/status/members", MembersAnswer.model_validate)


def peers() -> Endpoint[list[str]]:
    return Endpoint(
        "GET", "/v1/status/peers", lambda raw: list(PeersAnswer.model_validate(raw).servers)
    )


# -- service catalog -------------------------------------------------------------------

_SERVICES: Callable[[Any], list[ServiceSummary]] = _adapter(list[ServiceSummary])
_INSTANCES: Callable[[Any], list[ServiceRegistration]] = _adapter(list[ServiceRegistration])


def services() -> Endpoint[list[ServiceSummary]]:
    """Every service in the catalog with its instance counts and tags."""
    return Endpoint("GET", "/v1/services", _SERVICES)


def service(name: str, healthy: bool | None = None) -> Endpoint[list[ServiceRegistration]]:
    """The instances of one service (only the healthy ones with ``healthy=True``)."""
    params = {} if healthy is None else {"healthy": "true" if healthy else "false"}
    return Endpoint("GET", f"/v1/service/{_seg(name)}", _INSTANCES, params)


# -- variables -------------------------------------------------------------------------

_VAR_LIST: Callable[[Any], list[VariableMetadata]] = _adapter(list[VariableMetadata])


def _var_path(path: str) -> str:
    """A variable path in the URL, checked first: a '..' segment must never reach a URL."""
    return quote(check_var_path(path), safe="/")


def var_get(path: str) -> Endpoint[Variable]:
    """One variable with its items (blocking: until that variable changes)."""
    return Endpoint("GET", f"/v1/var/{_var_path(path)}", Variable.model_validate)


def var_list(prefix: str | None = None) -> Endpoint[list[VariableMetadata]]:
    """Variables under ``prefix``: paths and indexes, never values."""
    return Endpoint("GET", "/v1/vars", _VAR_LIST, _params(prefix=prefix))


def var_put(path: str, items: Mapping[str, str], cas: int | None = None) -> Endpoint[Variable]:
    """Create or replace a variable; with ``cas``, only if it is still at that modify
    index (0: only if it does not exist yet), else :class:`~podium.errors.Conflict`."""
    return Endpoint(
        "PUT",
        f"/v1/var/{_var_path(path)}",
        Variable.model_validate,
        _params(cas=cas),
        body={"items": dict(items)},
    )


def var_delete(path: str, cas: int | None = None) -> Endpoint[int]:
    """Delete a variable (check-and-set with ``cas``); answers the store index."""
    return Endpoint("DELETE", f"/v1/var/{_var_path(path)}", _index, _params(cas=cas))


# -- agent <-> server ------------------------------------------------------------------


NODE_SECRET_HEADER = "X-Podium-Node-Secret"
"""The header a node's agent proves itself with (podium.models.acl.NODE_SECRET_HEADER)."""


def node_headers(secret: str | None) -> dict[str, str]:
    return {NODE_SECRET_HEADER: secret} if secret else {}


def with_token(endpoint: Endpoint[T], token: str | None) -> Endpoint[T]:
    """``endpoint`` sent with ``token`` (an ACL or workload token) instead of the client's
    own (None: unchanged)."""
    if not token:
        return endpoint
    return replace(endpoint, headers={**endpoint.headers, "X-Podium-Token": token})


def workload_identities(
    node_id: str, wanted: Mapping[str, Sequence[str]], secret: str | None = None
) -> Endpoint[IdentitiesAnswer]:
    """Workload tokens for tasks of the node's allocations (``alloc id -> task names``)."""
    return Endpoint(
        "POST",
        f"/v1/client/node/{_seg(node_id)}/identities",
        IdentitiesAnswer.model_validate,
        body={"allocations": {a: list(tasks) for a, tasks in wanted.items()}},
        headers=node_headers(secret),
    )


def register_node(node: Node, secret: str | None = None) -> Endpoint[dict[str, Any]]:
    """``secret``: the node's secret from its first registration (none for a new node,
    whose answer carries one in ``node_secret``)."""
    return Endpoint(
        "PUT",
        "/v1/node/register",
        _dict,
        body=node.model_dump(mode="json"),
        headers=node_headers(secret),
    )


def heartbeat(node_id: str, secret: str | None = None) -> Endpoint[dict[str, Any]]:
    return Endpoint(
        "PUT", f"/v1/node/{_seg(node_id)}/heartbeat", _dict, headers=node_headers(secret)
    )


ReportOrder = tuple[str, int]
"""An agent's run (a string it picks at start) and its count of report requests: the
server refuses (409) a request older than the newest it took from that run, so a late
request never writes an older state over a newer one."""


def _order(order: ReportOrder | None) -> dict[str, Any]:
    return {"session": order[0], "seq": order[1]} if order is not None else {}


def node_sync(
    node_id: str,
    since: int | None = None,
    have: Iterable[str] | None = None,
    specs: SpecCache | None = None,
    updates: Sequence[AllocClientUpdate] = (),
    order: ReportOrder | None = None,
    secret: str | None = None,
) -> Endpoint[NodeSync]:
    """The node's allocations; with ``since``, a delta answer (see :class:`NodeSync`) that
    leaves out the job specs named in ``have`` (``job@version@index`` of the versions the
    agent holds).  ``specs``: parsed specs to reuse instead of validating them again.
    ``updates``: the agent's reports, committed before the sync is answered (a ``POST``,
    ``have`` in its body), ordered by ``order`` as :func:`update_allocs` orders them."""
    params: dict[str, str] = {}
    keys = sorted(have or ()) if since is not None else []
    if since is not None:
        params["since"] = str(since)
    context = {"specs": specs} if specs is not None else None

    def parse(body: Any) -> NodeSync:
        return NodeSync.model_validate(body, context=context)

    def parse_json(content: bytes) -> NodeSync:
        return NodeSync.model_validate_json(content, context=context)

    path = f"/v1/client/node/{_seg(node_id)}/allocations"
    if updates:
        body = {
            "updates": [u.model_dump(mode="json") for u in updates],
            "have": keys,
            **_order(order),
        }
        return Endpoint(
            "POST",
            path,
            parse,
            params,
            body=body,
            parse_json=parse_json,
            headers=node_headers(secret),
        )
    if keys:
        params["have"] = ",".join(keys)
    return Endpoint("GET", path, parse, params, parse_json=parse_json, headers=node_headers(secret))


def update_allocs(
    node_id: str,
    updates: Sequence[AllocClientUpdate],
    order: ReportOrder | None = None,
    secret: str | None = None,
) -> Endpoint[int]:
    """Report allocation states (``order``: see :data:`ReportOrder`)."""
    return Endpoint(
        "POST",
        "/v1/client/allocations",
        _index,
        body={
            "node_id": node_id,
            "updates": [u.model_dump(mode="json") for u in updates],
            **_order(order),
        },
        headers=node_headers(secret),
    )


# -- deployments -----------------------------------------------------------------------


def deployments(job_id: str | None = None) -> Endpoint[list[Deployment]]:
    """Every deployment, newest first (only ``job_id``'s when given)."""
    return Endpoint("GET", "/v1/deployments", _DEPLOYMENTS, _params(job=job_id))


def deployment(deployment_id: str) -> Endpoint[Deployment]:
    return Endpoint("GET", f"/v1/deployment/{_seg(deployment_id)}", Deployment.model_validate)


def deployment_allocations(deployment_id: str) -> Endpoint[list[Allocation]]:
    return Endpoint("GET", f"/v1/deployment/{_seg(deployment_id)}/allocations", _ALLOCS)


def job_deployment(job_id: str) -> Endpoint[Deployment | None]:
    """The job's newest deployment (None when it never had one)."""
    return Endpoint("GET", f"/v1/job/{_seg(job_id)}/deployment", _MAYBE_DEPLOYMENT)


def promote_deployment(
    deployment_id: str, groups: list[str] | None = None
) -> Endpoint[DeploymentActionResult]:
    return Endpoint(
        "POST",
        f"/v1/deployment/{_seg(deployment_id)}/promote",
        DeploymentActionResult.model_validate,
        body={"groups": list(groups or [])},
    )


def fail_deployment(deployment_id: str) -> Endpoint[DeploymentActionResult]:
    return Endpoint(
        "POST",
        f"/v1/deployment/{_seg(deployment_id)}/fail",
        DeploymentActionResult.model_validate,
        body={},
    )


# -- namespaces ------------------------------------------------------------------------

_NAMESPACES: Callable[[Any], list[NamespaceInfo]] = _adapter(list[NamespaceInfo])


def namespaces(prefix: str | None = None) -> Endpoint[list[NamespaceInfo]]:
    """Every namespace (``default`` included) with its usage and desired figures."""
    return Endpoint("GET", "/v1/namespaces", _NAMESPACES, _params(prefix=prefix))


def namespace(name: str) -> Endpoint[NamespaceInfo]:
    return Endpoint("GET", f"/v1/namespace/{_seg(name)}", NamespaceInfo.model_validate)


def namespace_apply(
    name: str, description: str | None = None, quota: Quota | None = None
) -> Endpoint[NamespaceInfo]:
    """Create ``name`` or change it; what is None stays as it was."""
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if quota is not None:
        body["quota"] = quota.model_dump(exclude_none=True)
    return Endpoint("PUT", f"/v1/namespace/{_seg(name)}", NamespaceInfo.model_validate, body=body)


def namespace_delete(name: str) -> Endpoint[int]:
    """Delete a namespace (refused while it holds live jobs or variables)."""
    return Endpoint("DELETE", f"/v1/namespace/{_seg(name)}", _index)


EVENT_STREAM = "/v1/event/stream"
"""The event stream is NDJSON without end, so it is not an :class:`Endpoint` either."""


def event_params(
    topics: Sequence[str] = (),
    namespace: str | None = None,
    index: int | None = None,
    heartbeat: float | None = None,
) -> dict[str, str | list[str]]:
    params: dict[str, str | list[str]] = {"topic": list(topics)}
    if namespace is not None:
        params["namespace"] = namespace
    if index is not None:
        params["index"] = str(index)
    if heartbeat is not None:
        params["heartbeat"] = f"{heartbeat}s"
    return params


def parse_event_line(line: str) -> Event | None:
    """One line of the event stream: an :class:`Event`, None for a heartbeat (``{}``) or a
    blank line; the stream's closing error (a subscriber that fell behind the server's
    buffer) raised as :class:`~podium.errors.APIError` (status 410, its ``detail`` the
    server's object, ``code`` ``index_too_old``)."""
    line = line.strip()
    if not line or line == "{}":
        return None
    data = json.loads(line)
    if "error" in data:
        raise APIError(410, str(data["error"]), detail=data)
    return Event.model_validate(data)
