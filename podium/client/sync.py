"""``podium.Client``: the blocking Python SDK over the HTTP API."""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from podium.client import endpoints as ep
from podium.client import jobtypes, ops
from podium.client._http import (
    DEFAULT_TIMEOUT,
    LANE_TIMEOUT,
    OVERLOAD_BUDGET,
    TOKEN_HEADER,
    HeartbeatLane,
    ServerUnreachable,
    auth_headers,
    error_for,
    finish,
    logs_timeout,
    overload_wait,
    prepare,
    resolve_address,
    resolve_namespace,
    resolve_token,
    tls_context,
    transport_error,
)
from podium.client.endpoints import Endpoint
from podium.client.execws import ExecResult, ExecSession, collect, exec_url
from podium.client.results import (
    DeploymentActionResult,
    JobInfo,
    JobListItem,
    JobPlanResult,
    NodeInfo,
    NodeSync,
    QueryResult,
    RegisterResult,
    ScaleResult,
    ServerStatus,
    SpecCache,
    StopResult,
)
from podium.errors import Overloaded
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
from podium.models.alloc_ops import FileInfo, FsListing, RestartAnswer, SignalAnswer
from podium.models.api import LeaderAnswer, MembersAnswer
from podium.models.dispatch import DispatchAnswer
from podium.models.events import Event
from podium.models.identity import IdentitiesAnswer
from podium.models.namespace import NamespaceInfo, Quota
from podium.models.periodic import ForceAnswer
from podium.models.scaling import JobScaleStatus
from podium.models.schedconfig import PreemptionConfig, SchedulerConfiguration
from podium.models.stats import AllocResourceUsage
from podium.models.variable import Variable, VariableMetadata

T = TypeVar("T")
Wait = str | float | None


class Client:
    """A connection to a Podium server.

    ``address`` defaults to ``$PODIUM_ADDR``, else ``http://127.0.0.1:7634``.
    ``transport`` replaces the network (``httpx.MockTransport`` in tests).

    Read methods return the answer itself.  Those that support blocking
    queries take ``index=`` and ``wait=``: the server holds the request until
    its state is newer than ``index`` (or ``wait`` passes).  To learn the index
    to pass, call :meth:`query` with the same endpoint from
    :mod:`podium.client.endpoints`; it returns a :class:`QueryResult` with
    ``value``, ``index`` and the ``raw`` JSON.

    Errors raise :mod:`podium.errors` exceptions: ``NotFound``,
    ``AmbiguousPrefix``, ``SpecError``, ``Conflict``, ``APIError``, and
    :class:`~podium.client.ServerUnreachable` when nothing answered.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        namespace: str | None = None,
        ca_cert: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        """``ca_cert``: the CA file an https server is verified with (default
        ``$PODIUM_CACERT``, else the system's CAs); ``ssl_context`` replaces that (a
        client certificate in it is presented)."""
        self.address = resolve_address(address)
        self.namespace = resolve_namespace(namespace)
        """Sent with every request about namespaced objects that names no namespace of
        its own (``namespace=`` on a method); None (no ``$PODIUM_NAMESPACE`` either): the
        server's ``default``, or a job file's own ``namespace:``."""
        self.timeout = timeout
        self.overload_budget = OVERLOAD_BUDGET
        """Seconds a call waits out a shed server's ``Retry-After`` in all (0: never)."""
        self.node_secrets: dict[str, str] = {}
        """Node id -> the node's secret (learnt from its registration, or set by its
        agent from its own state): sent on that node's agent routes."""
        self._verify = ssl_context or tls_context(self.address, ca_cert)
        self._http = httpx.Client(
            base_url=self.address,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "podium-sdk", **auth_headers(token), **(headers or {})},
            verify=self._verify,
        )
        self._transport = transport
        self.lane = HeartbeatLane()
        """Where heartbeats go (podium.server.lane); not with a ``transport`` of the
        caller's (the tests' ASGI apps have no second listener)."""
        self._lane: httpx.Client | None = None

    def set_token(self, token: str | None) -> None:
        """Send ``token`` (an ACL secret) with every request from now on; None: none."""
        token = resolve_token(token) if token else None
        self._http.headers.pop(TOKEN_HEADER, None)
        if token:
            self._http.headers[TOKEN_HEADER] = token

    def close(self) -> None:
        if self._lane is not None:
            self._lane.close()
        self._http.close()

    # ------------------------------------------------------------ alloc exec (execws.py)
    def exec_session(
        self,
        id: str,
        command: list[str],
        task: str | None = None,
        *,
        tty: bool = False,
        namespace: str | None = None,
    ) -> ExecSession:
        """Run ``command`` in a task of allocation ``id`` (its only task when ``task`` is
        None) over a WebSocket; iterate the session for output, then read ``exit_code``."""
        url = exec_url(self.address, id, command, task, tty, namespace or self.namespace)
        return ExecSession(url, dict(self._http.headers), self._verify, self.address)

    def exec(
        self,
        id: str,
        command: list[str],
        task: str | None = None,
        *,
        stdin: bytes | None = None,
        namespace: str | None = None,
    ) -> ExecResult:
        """Run ``command`` to its end without a TTY: ``stdin`` sent (then closed), the
        output and the exit code returned."""
        with self.exec_session(id, command, task, namespace=namespace) as session:

            def feed() -> None:  # beside the reading: a command may answer as it reads
                if stdin:
                    session.send_stdin(stdin)
                session.close_stdin()

            feeder = threading.Thread(target=feed, name="podium-exec-stdin", daemon=True)
            feeder.start()
            outputs = list(session)
            feeder.join()
            assert session.exit_code is not None
            return collect(outputs, session.exit_code)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    # -- the one place requests are sent ------------------------------------------------

    def query(
        self, endpoint: Endpoint[T], *, index: int | None = None, wait: Wait = None
    ) -> QueryResult[T]:
        """Send ``endpoint``; answer its value with the store index and the raw JSON.  A
        request the server shed (429 ``overloaded``: it did nothing) is sent again after
        the ``Retry-After`` it was given, for up to ``overload_budget`` seconds in all."""
        req = prepare(endpoint, index, wait, self.timeout, self.namespace)
        waited = 0.0
        while True:
            try:
                response = self._http.request(
                    req.method,
                    req.url,
                    params=req.params,
                    json=req.json,
                    timeout=req.timeout,
                    headers=req.headers or None,
                )
            except httpx.TransportError as exc:
                raise transport_error(self.address, exc) from exc
            try:
                return finish(endpoint, response)
            except Overloaded as exc:
                pause = overload_wait(exc, waited, self.overload_budget)
                if pause is None:
                    raise
                time.sleep(pause)
                waited += pause

    def _get(self, endpoint: Endpoint[T], index: int | None, wait: Wait) -> T:
        return self.query(endpoint, index=index, wait=wait).value

    # -- jobs ---------------------------------------------------------------------------

    def register_job(
        self,
        spec: JobSpec | Mapping[str, Any],
        check_index: int | None = None,
        *,
        force_reschedule: bool = False,
        namespace: str | None = None,
    ) -> RegisterResult:
        """Register (or update) a job; a dict is sent as is and validated by the server.
        ``force_reschedule`` also replaces the job's failed allocations now."""
        return self.query(
            ep.in_namespace(ep.register_job(spec, check_index, force_reschedule), namespace)
        ).value

    def plan_job(
        self, spec: JobSpec | Mapping[str, Any], diff: bool = True, *, namespace: str | None = None
    ) -> JobPlanResult:
        """What registering ``spec`` would do (diff, scheduler outcome), changing nothing;
        pass its ``job_modify_index`` to :meth:`register_job` as ``check_index``."""
        return self.query(ep.in_namespace(ep.plan_job(spec, diff), namespace)).value

    def revert_job(
        self,
        id: str,
        version: int,
        enforce_prior_version: int | None = None,
        reason: str = "",
        *,
        namespace: str | None = None,
    ) -> RegisterResult:
        """Register the spec of ``version`` again as the job's newest version."""
        return self.query(
            ep.in_namespace(ep.revert_job(id, version, enforce_prior_version, reason), namespace)
        ).value

    def jobs(
        self,
        prefix: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[JobListItem]:
        return self._get(ep.in_namespace(ep.jobs(prefix), namespace), index, wait)

    def job(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> JobInfo:
        return self._get(ep.in_namespace(ep.job(id), namespace), index, wait)

    def stop_job(self, id: str, purge: bool = False, *, namespace: str | None = None) -> StopResult:
        return self.query(ep.in_namespace(ep.stop_job(id, purge), namespace)).value

    def job_allocations(
        self,
        id: str,
        all: bool = False,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Allocation]:
        """The job's allocations; terminal ones only with ``all=True``."""
        return self._get(ep.in_namespace(ep.job_allocations(id, all), namespace), index, wait)

    def job_versions(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[JobVersion]:
        """Stored versions, newest first."""
        return self._get(ep.in_namespace(ep.job_versions(id), namespace), index, wait)

    def job_evaluations(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[Evaluation]:
        """The job's evaluations, newest first."""
        return self._get(ep.in_namespace(ep.job_evaluations(id), namespace), index, wait)

    def drain_node(
        self,
        id: str,
        *,
        enable: bool = True,
        deadline: str | float = "1h",
        ignore_system: bool = False,
    ) -> int:
        """Drain a node (``enable=False`` cancels); answers the store index."""
        endpoint = ep.drain_node(id, enable=enable, deadline=deadline, ignore_system=ignore_system)
        return (self.query(endpoint)).value

    def node_eligibility(self, id: str, eligible: bool) -> int:
        """Allow or forbid new placements on a node; answers the store index."""
        return (self.query(ep.node_eligibility(id, eligible))).value

    def scale_job(
        self,
        id: str,
        group: str,
        count: int,
        *,
        message: str = "",
        namespace: str | None = None,
    ) -> ScaleResult:
        """Set a group's count (refused outside its ``scaling`` bounds)."""
        return self.query(ep.in_namespace(ep.scale_job(id, group, count, message), namespace)).value

    def job_scale_status(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> JobScaleStatus:
        """Each group's count, bounds, policy and newest scaling events (newest first)."""
        return self._get(ep.in_namespace(ep.job_scale_status(id), namespace), index, wait)

    # -- periodic and parameterized jobs (docs/periodic.md) ------------------------------

    def dispatch_job(
        self,
        id: str,
        meta: Mapping[str, str] | None = None,
        payload: bytes | None = None,
        *,
        idempotency_token: str = "",
        namespace: str | None = None,
    ) -> DispatchAnswer:
        """Dispatch a parameterized job: the child job made (or, for a token already
        used, the one the first dispatch made)."""
        endpoint = jobtypes.dispatch_job(id, meta, payload, idempotency_token)
        return (self.query(ep.in_namespace(endpoint, namespace))).value

    def force_periodic(self, id: str, *, namespace: str | None = None) -> ForceAnswer:
        """Launch a periodic job now (its schedule is unchanged)."""
        return (self.query(ep.in_namespace(jobtypes.force_periodic(id), namespace))).value

    def job_children(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[JobListItem]:
        """A periodic or parameterized job's launches and dispatches, oldest first."""
        return self._get(ep.in_namespace(jobtypes.job_children(id), namespace), index, wait)

    # -- deployments --------------------------------------------------------------------

    def deployments(
        self,
        job_id: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Deployment]:
        """Deployments, newest first; only ``job_id``'s when given."""
        return self._get(ep.in_namespace(ep.deployments(job_id), namespace), index, wait)

    def deployment(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Deployment:
        return self._get(ep.in_namespace(ep.deployment(id), namespace), index, wait)

    def deployment_allocations(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[Allocation]:
        return self._get(ep.in_namespace(ep.deployment_allocations(id), namespace), index, wait)

    def job_deployment(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Deployment | None:
        """The job's newest deployment, or None."""
        return self._get(ep.in_namespace(ep.job_deployment(id), namespace), index, wait)

    def promote_deployment(
        self, id: str, groups: list[str] | None = None, *, namespace: str | None = None
    ) -> DeploymentActionResult:
        """Promote the canaries (of ``groups``, default all): the rest rolls out."""
        return self.query(ep.in_namespace(ep.promote_deployment(id, groups), namespace)).value

    def fail_deployment(self, id: str, *, namespace: str | None = None) -> DeploymentActionResult:
        """Fail a running deployment (rolling back with auto_revert)."""
        return self.query(ep.in_namespace(ep.fail_deployment(id), namespace)).value

    # -- allocations --------------------------------------------------------------------

    def allocations(
        self,
        prefix: str | None = None,
        job_id: str | None = None,
        node_id: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Allocation]:
        return self._get(
            ep.in_namespace(ep.allocations(prefix, job_id, node_id), namespace), index, wait
        )

    def allocation(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Allocation:
        return self._get(ep.in_namespace(ep.allocation(id), namespace), index, wait)

    def alloc_stats(self, id: str, *, namespace: str | None = None) -> AllocResourceUsage:
        """The allocation's CPU (percent of one core) and memory, per running task, as its
        agent measures them now.  NotFound for an unknown allocation, Conflict for one
        that is not running."""
        return self._get(ep.in_namespace(ep.alloc_stats(id), namespace), None, None)

    def alloc_logs(
        self,
        id: str,
        task: str,
        type: str = "stdout",
        origin: str = "start",
        offset: int = 0,
        follow: bool = False,
        *,
        namespace: str | None = None,
    ) -> Iterator[str]:
        """Stream a task's log as text chunks (not lines), as they arrive.

        With ``follow=True`` the stream stays open while the task runs; stop
        iterating (or ``close()`` the iterator) to end it.  Errors are raised
        on the first iteration, as the request is sent only then.
        """
        params = ep.alloc_logs_params(task, type, origin, offset, follow)
        namespace = namespace or self.namespace
        if namespace is not None:
            params["namespace"] = namespace
        try:
            with self._http.stream(
                "GET",
                ep.alloc_logs_path(id),
                params=params,
                timeout=logs_timeout(self.timeout, follow),
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc

    # -- day-two operations (podium.client.ops; issue 16) ---------------------------------

    def restart_alloc(
        self,
        id: str,
        task: str | None = None,
        *,
        all_tasks: bool = False,
        namespace: str | None = None,
    ) -> RestartAnswer:
        """Restart a task (or every running task) in place: the tasks restarted."""
        return self.query(ep.in_namespace(ops.restart_alloc(id, task, all_tasks), namespace)).value

    def signal_alloc(
        self, id: str, signal: str, task: str | None = None, *, namespace: str | None = None
    ) -> SignalAnswer:
        """Deliver ``signal`` to a task (or every running one): the signal and tasks."""
        return self.query(ep.in_namespace(ops.signal_alloc(id, signal, task), namespace)).value

    def stop_alloc(self, id: str, *, namespace: str | None = None) -> StopResult:
        """Stop an allocation; the answer's evaluation places its replacement."""
        return self.query(ep.in_namespace(ops.stop_alloc(id), namespace)).value

    def alloc_fs_ls(self, id: str, path: str = "", *, namespace: str | None = None) -> FsListing:
        """A directory's entries, ``path`` relative to the allocation's directory."""
        return self.query(ep.in_namespace(ops.alloc_fs_ls(id, path), namespace)).value

    def alloc_fs_stat(self, id: str, path: str = "", *, namespace: str | None = None) -> FileInfo:
        return self.query(ep.in_namespace(ops.alloc_fs_stat(id, path), namespace)).value

    def alloc_fs_cat(
        self,
        id: str,
        path: str,
        offset: int = 0,
        limit: int = 0,
        follow: bool = False,
        *,
        namespace: str | None = None,
    ) -> Iterator[bytes]:
        """A file's bytes as they arrive (``follow``: and what is appended after)."""
        params = ops.alloc_fs_cat_params(path, offset, limit, follow)
        namespace = namespace or self.namespace
        if namespace is not None:
            params["namespace"] = namespace
        yield from self._stream(ops.alloc_fs_cat_path(id), params, follow, lines=False)

    def monitor(
        self, log_level: str = "info", node_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The server's (or with ``node_id``, that agent's) log records from now on, as
        they are logged; stop iterating to end it."""
        params = ops.monitor_params(log_level, node_id)
        for line in self._stream(ops.MONITOR, params, True, lines=True):
            record = ops.parse_line(line.decode())
            if record is not None:
                yield record

    def _stream(
        self, path: str, params: dict[str, str], follow: bool, *, lines: bool
    ) -> Iterator[bytes]:
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=logs_timeout(self.timeout, follow)
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                if lines:
                    for text in response.iter_lines():
                        yield text.encode()
                else:
                    yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc

    def events(
        self,
        topics: Sequence[str] = (),
        *,
        index: int | None = None,
        namespace: str | None = None,
        heartbeat: float | None = None,
    ) -> Iterator[Event]:
        """Iterate the cluster's committed changes (``GET /v1/event/stream``) as they
        happen, without end: ``topics`` such as ``["Job", "Allocation:web"]`` (default
        every topic), ``index`` to resume after the last index seen (without it, from now
        on), ``namespace`` (``"*"``: all).  Heartbeats are not yielded.  A resume from an
        index the server no longer holds raises :class:`~podium.errors.APIError` with
        status 410 (code ``index_too_old``), on the first iteration or later."""
        params = ep.event_params(topics, namespace or self.namespace, index, heartbeat)
        try:
            with self._http.stream(
                "GET",
                ep.EVENT_STREAM,
                params=params,
                timeout=httpx.Timeout(self.timeout, read=None),
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                for line in response.iter_lines():
                    event = ep.parse_event_line(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc

    def save_snapshot(self, dest: str | os.PathLike[str]) -> int:
        """Save a consistent snapshot of the server's state (``GET /v1/operator/snapshot``,
        a management token) to ``dest``, written whole or not at all (a temporary file
        beside it, renamed when complete).  Returns the index it was taken at."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.partial")
        try:
            with self._http.stream(
                "GET", ep.SNAPSHOT, timeout=httpx.Timeout(self.timeout, read=None)
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                with open(tmp, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                index = int(response.headers.get("X-Podium-Index", "0"))
            os.replace(tmp, dest)
            return index
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- nodes, evaluations, status -----------------------------------------------------

    def nodes(
        self, prefix: str | None = None, *, index: int | None = None, wait: Wait = None
    ) -> list[NodeInfo]:
        return self._get(ep.nodes(prefix), index, wait)

    def node(self, id: str, *, index: int | None = None, wait: Wait = None) -> NodeInfo:
        return self._get(ep.node(id), index, wait)

    def node_allocations(
        self, id: str, *, index: int | None = None, wait: Wait = None
    ) -> list[Allocation]:
        return self._get(ep.node_allocations(id), index, wait)

    def evaluations(
        self,
        job_id: str | None = None,
        *,
        prefix: str | None = None,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Evaluation]:
        return self._get(ep.in_namespace(ep.evaluations(job_id, prefix), namespace), index, wait)

    def evaluation(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Evaluation:
        return self._get(ep.in_namespace(ep.evaluation(id), namespace), index, wait)

    def status(self) -> ServerStatus:
        return self.query(ep.status()).value

    def scheduler_config(self) -> SchedulerConfiguration:
        """``GET /v1/operator/scheduler/configuration``: which job types may preempt."""
        return (self.query(ep.scheduler_config())).value

    def set_scheduler_config(
        self, preemption: PreemptionConfig, *, check_index: int | None = None
    ) -> SchedulerConfiguration:
        """Replace the cluster's preemption settings (Conflict if ``check_index`` is
        given and the stored configuration is at another index)."""
        return (self.query(ep.set_scheduler_config(preemption, check_index))).value

    def leader(self) -> LeaderAnswer:
        """``GET /v1/status/leader``: the server leading the cluster, and the one asked."""
        return self.query(ep.leader()).value

    def members(self) -> MembersAnswer:
        """``GET /v1/status/members``: every server as it last reported itself."""
        return self.query(ep.members()).value

    def peers(self) -> list[str]:
        """``GET /v1/status/peers``: the URLs of the cluster's servers."""
        return self.query(ep.peers()).value

    # -- service catalog ----------------------------------------------------------------

    def services(
        self, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[ServiceSummary]:
        """Every service name in the catalog, with instance counts and tags."""
        return self._get(ep.in_namespace(ep.services(), namespace), index, wait)

    def service(
        self,
        name: str,
        healthy: bool | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[ServiceRegistration]:
        """The instances of a service: address, port, tags, health (``healthy=True``: only
        the healthy ones)."""
        return self._get(ep.in_namespace(ep.service(name, healthy), namespace), index, wait)

    # -- variables ----------------------------------------------------------------------

    def var_get(
        self,
        path: str,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> Variable:
        """The variable at ``path`` with its items; NotFound when there is none."""
        return self._get(ep.in_namespace(ep.var_get(path), namespace), index, wait)

    def var_list(
        self,
        prefix: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[VariableMetadata]:
        """Paths and indexes of the variables under ``prefix`` (no values)."""
        return self._get(ep.in_namespace(ep.var_list(prefix), namespace), index, wait)

    def var_put(
        self,
        path: str,
        items: Mapping[str, str],
        *,
        cas: int | None = None,
        namespace: str | None = None,
    ) -> Variable:
        """Create or replace; with ``cas`` only if still at that modify index (0: new)."""
        return self.query(ep.in_namespace(ep.var_put(path, items, cas), namespace)).value

    def var_delete(self, path: str, *, cas: int | None = None, namespace: str | None = None) -> int:
        """Delete a variable; answers the store index."""
        return self.query(ep.in_namespace(ep.var_delete(path, cas), namespace)).value

    # -- namespaces ---------------------------------------------------------------------

    def namespaces(self, prefix: str | None = None) -> list[NamespaceInfo]:
        """Every namespace with its figures (usage, desired) and quota."""
        return (self.query(ep.namespaces(prefix))).value

    def namespace_info(self, name: str) -> NamespaceInfo:
        return (self.query(ep.namespace(name))).value

    def namespace_apply(
        self, name: str, *, description: str | None = None, quota: Quota | None = None
    ) -> NamespaceInfo:
        """Create or change a namespace; what is None stays as it was."""
        return (self.query(ep.namespace_apply(name, description, quota))).value

    def namespace_delete(self, name: str) -> int:
        """Delete a namespace; Conflict while it holds live jobs or variables."""
        return (self.query(ep.namespace_delete(name))).value

    # -- agent <-> server ---------------------------------------------------------------

    def register_node(self, node: Node) -> dict[str, Any]:
        """``{"node_id", "index", "heartbeat_ttl"}``, and ``node_secret`` for a new node
        (kept in :attr:`node_secrets` and sent on the node's requests from then on)."""
        endpoint = ep.register_node(node, self.node_secrets.get(node.id))
        answer = (self.query(endpoint)).value
        if isinstance(answer.get("node_secret"), str):
            self.node_secrets[node.id] = answer["node_secret"]
        self._learn_lane(answer)
        return answer

    def heartbeat(self, node_id: str) -> dict[str, Any]:
        """``{"index", "heartbeat_ttl"}``, and ``heartbeat_url`` where the server has a
        heartbeat lane: sent there from then on (:class:`HeartbeatLane`)."""
        endpoint = ep.heartbeat(node_id, self.node_secrets.get(node_id))
        lane = self._lane
        if lane is not None:
            req = prepare(endpoint, None, None, LANE_TIMEOUT, self.namespace)
            try:
                response = lane.request(
                    req.method, req.url, timeout=req.timeout, headers=req.headers or None
                )
            except httpx.TransportError as exc:
                self.lane.failed(transport_error(str(lane.base_url), exc))
                self._follow_lane()
            else:
                answer: dict[str, Any] = finish(endpoint, response).value
                self._learn_lane(answer)
                return answer
        answer = (self.query(endpoint)).value
        self._learn_lane(answer)
        return answer

    def heartbeat_unanswered(self) -> None:
        """Its caller stopped waiting for a heartbeat's answer: when the heartbeat lane
        had it, the next one goes to the API's route (the lane may be stuck)."""
        if self._lane is not None:
            address = str(self._lane.base_url)
            self.lane.failed(ServerUnreachable("no answer in time", address, "timeout"))
            self._follow_lane()

    def _learn_lane(self, answer: dict[str, Any]) -> None:
        if self._transport is None:
            self.lane.learn(answer)
            self._follow_lane()

    def _follow_lane(self) -> None:
        """Send heartbeats where :attr:`lane` says (a new client when its URL changed)."""
        current = str(self._lane.base_url).rstrip("/") if self._lane is not None else None
        if current == self.lane.url:
            return
        if self._lane is not None:
            self._lane.close()
            self._lane = None
        if self.lane.url is not None:
            self._lane = httpx.Client(
                base_url=self.lane.url, headers=self._http.headers, verify=self._verify
            )

    def node_sync(
        self,
        node_id: str,
        index: int = 0,
        wait: Wait = None,
        *,
        since: int | None = None,
        have: Iterable[str] | None = None,
        specs: SpecCache | None = None,
        updates: Sequence[AllocClientUpdate] = (),
        order: ep.ReportOrder | None = None,
    ) -> NodeSync:
        """Block until the node's allocations change past ``index`` (or ``wait`` passes).

        With ``since``: a delta answer (see :class:`NodeSync`), without the specs in ``have``;
        ``specs``: parsed specs to reuse rather than validate again (see :data:`SpecCache`);
        ``updates``: reports committed (durably) before the sync is answered.
        """
        endpoint = ep.node_sync(
            node_id, since, have, specs, updates, order, self.node_secrets.get(node_id)
        )
        return self.query(endpoint, index=index, wait=wait).value

    def workload_identities(
        self, node_id: str, wanted: Mapping[str, Sequence[str]]
    ) -> IdentitiesAnswer:
        """Workload tokens for tasks of the node's allocations (docs/acl.md)."""
        endpoint = ep.workload_identities(node_id, wanted, self.node_secrets.get(node_id))
        return self.query(endpoint).value

    def update_allocs(
        self,
        node_id: str,
        updates: Sequence[AllocClientUpdate],
        order: ep.ReportOrder | None = None,
    ) -> int:
        """Report allocation states; answers the store index of the write.  ``order``: the
        agent's run and request count (see :data:`podium.client.endpoints.ReportOrder`)."""
        endpoint = ep.update_allocs(node_id, updates, order, self.node_secrets.get(node_id))
        return (self.query(endpoint)).value
