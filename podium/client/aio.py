"""``podium.AsyncClient``: the asyncio twin of :class:`podium.Client`, method for method."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from podium.client import endpoints as ep
from podium.client import jobtypes, ops
from podium.client._http import (
    DEFAULT_TIMEOUT,
    LANE_TIMEOUT,
    OVERLOAD_BUDGET,
    TOKEN_HEADER,
    HeartbeatLane,
    Prepared,
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
from podium.client.execws import AsyncExecSession, ExecResult, collect, exec_url
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

if TYPE_CHECKING:
    from podium.client._aio import AioSender

T = TypeVar("T")
log = logging.getLogger("podium.client")
Wait = str | float | None

KEEPALIVE = 4.0
"""Seconds an idle connection waits for the next request (uvicorn closes at 5 s)."""


class AsyncClient:
    """An asyncio connection to a Podium server.

    Same constructor, methods, blocking-query arguments and errors as
    :class:`podium.Client`, each method a coroutine; ``alloc_logs`` is an
    async iterator.  Close it with ``await client.aclose()`` or use
    ``async with``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        namespace: str | None = None,
        token: str | None = None,
        keepalive: float = KEEPALIVE,
        ca_cert: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        fallbacks: Sequence[str] = (),
    ) -> None:
        """``transport``: an httpx transport to send every request through (the tests'
        and the in-process simulator's ASGI transport); without one, requests go out over
        aiohttp (see :mod:`podium.client._aio`: a fraction of httpx's CPU per request).
        ``keepalive``: seconds an idle connection is kept for the next request (below the
        server's own idle limit, 5 s for `podium agent`).  ``ca_cert`` / ``ssl_context``:
        as :class:`podium.Client`'s (an agent's context carries its client certificate,
        renewed in place).  ``fallbacks``: further servers of the same cluster, asked in
        turn when one cannot be reached (see :meth:`query`)."""
        self.address = resolve_address(address)
        self.servers = [self.address, *(resolve_address(a) for a in fallbacks)]
        """The cluster's servers this client knows, the one it talks to first."""
        self.namespace = resolve_namespace(namespace)
        """Sent with every request about namespaced objects that names no namespace of
        its own (``namespace=`` on a method); None (no ``$PODIUM_NAMESPACE`` either): the
        server's ``default``, or a job file's own ``namespace:``."""
        self._verify = ssl_context or tls_context(self.address, ca_cert)
        self.timeout = timeout
        self.overload_budget = OVERLOAD_BUDGET
        """Seconds a call waits out a shed server's ``Retry-After`` in all (0: never)."""
        self._headers = {"User-Agent": "podium-sdk", **auth_headers(token), **(headers or {})}
        self.node_secrets: dict[str, str] = {}
        """Node id -> the node's secret (learnt from its registration, or set by its
        agent from its own state): sent on that node's agent routes."""
        self._transport = transport
        self._aio: AioSender | None = None
        if transport is None:
            # aiohttp only when it is used: ~10 MB of a process's memory once imported
            from podium.client._aio import AioSender

            self._aio = AioSender(self.address, self._headers, keepalive, self._verify)
        self._httpx: httpx.AsyncClient | None = None
        self._keepalive = keepalive
        self.lane = HeartbeatLane()
        """Where heartbeats go (podium.server.lane): over aiohttp only, so an agent of
        remote servers; the tests' ASGI transports and a dev agent use the API's route."""
        self._lane: AioSender | None = None
        self._lane_keepalive = 0.0

    def _set_ssl_context(self, context: ssl.SSLContext) -> None:
        """For the agent (not the SDK): make new connections with ``context`` (its trusted
        CAs changed); requests under way finish on the connections they have."""
        self._verify = context
        if self._aio is not None:
            self._aio.set_ssl(context)
        if self._lane is not None:
            self._lane.set_ssl(context)

    @property
    def _http(self) -> httpx.AsyncClient:
        """The httpx client: every request with a ``transport``, log streams always. Made
        on first use (an httpx client loads the CA bundle, ~20 ms, whether used or not)."""
        if self._httpx is None:
            self._httpx = httpx.AsyncClient(
                base_url=self.address,
                timeout=self.timeout,
                transport=self._transport,
                headers=self._headers,
                verify=self._verify,
            )
        return self._httpx

    def set_token(self, token: str | None) -> None:
        """Send ``token`` (an ACL secret) with every request from now on; None: none."""
        token = resolve_token(token) if token else None
        self._headers.pop(TOKEN_HEADER, None)
        if token:
            self._headers[TOKEN_HEADER] = token
        if self._aio is not None:
            self._aio.set_headers(self._headers)
        if self._lane is not None:
            self._lane.set_headers(self._headers)
        if self._httpx is not None:
            self._httpx.headers.pop(TOKEN_HEADER, None)
            if token:
                self._httpx.headers[TOKEN_HEADER] = token

    # ------------------------------------------------------------ alloc exec (execws.py)
    async def exec_session(
        self,
        id: str,
        command: list[str],
        task: str | None = None,
        *,
        tty: bool = False,
        namespace: str | None = None,
    ) -> AsyncExecSession:
        """:meth:`podium.client.Client.exec_session` for asyncio."""
        url = exec_url(self.address, id, command, task, tty, namespace or self.namespace)
        return await AsyncExecSession.open(url, dict(self._headers), self._verify, self.address)

    async def exec(
        self,
        id: str,
        command: list[str],
        task: str | None = None,
        *,
        stdin: bytes | None = None,
        namespace: str | None = None,
    ) -> ExecResult:
        """:meth:`podium.client.Client.exec` for asyncio."""
        async with await self.exec_session(id, command, task, namespace=namespace) as session:

            async def feed() -> None:  # beside the reading: a command may answer as it reads
                if stdin:
                    await session.send_stdin(stdin)
                await session.close_stdin()

            feeder = asyncio.create_task(feed())
            try:
                outputs = [o async for o in session]
            finally:
                feeder.cancel()
            assert session.exit_code is not None
            return collect(outputs, session.exit_code)

    async def aclose(self) -> None:
        if self._lane is not None:
            await self._lane.aclose()
        if self._aio is not None:
            await self._aio.aclose()
        if self._httpx is not None:
            await self._httpx.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.address!r})"

    # -- the one place requests are sent ------------------------------------------------

    async def query(
        self, endpoint: Endpoint[T], *, index: int | None = None, wait: Wait = None
    ) -> QueryResult[T]:
        """Send ``endpoint``; answer its value with the store index and the raw JSON.

        With several servers (``fallbacks``), one that cannot be connected to is passed
        over at once for the next (the request was never sent); one that timed out or
        dropped the connection is passed over for the next request, and the error raised
        (the request may have been carried out: its caller decides whether to repeat it).

        A request the server shed (429 ``overloaded``: it did nothing) is sent again after
        the ``Retry-After`` it was given, for up to ``overload_budget`` seconds in all."""
        req = prepare(endpoint, index, wait, self.timeout, self.namespace)
        waited = 0.0
        while True:
            try:
                return await self._send_any(endpoint, req)
            except Overloaded as exc:  # shed, nothing done: wait as asked, send it again
                pause = overload_wait(exc, waited, self.overload_budget)
                if pause is None:
                    raise
                await asyncio.sleep(pause)
                waited += pause

    async def _send_any(self, endpoint: Endpoint[T], req: Prepared) -> QueryResult[T]:
        for _ in range(len(self.servers) - 1):
            try:
                return await self._send(endpoint, req)
            except ServerUnreachable as exc:
                self._next_server(exc)
                if exc.kind != "connect":
                    raise
        return await self._send(endpoint, req)

    def _next_server(self, exc: ServerUnreachable) -> None:
        """Talk to the next known server from now on (after ``exc`` from the current one)."""
        if len(self.servers) < 2 or exc.address != self.address:
            return  # another request already moved on
        at = self.servers.index(self.address) if self.address in self.servers else -1
        self.address = self.servers[(at + 1) % len(self.servers)]
        if self._aio is not None:
            self._aio.address = self.address
        if self._httpx is not None:
            self._httpx.base_url = httpx.URL(self.address)
        log.info("server %s unreachable; now talking to %s", exc.address, self.address)

    async def _send(self, endpoint: Endpoint[T], req: Prepared) -> QueryResult[T]:
        if self._aio is not None:
            return finish(endpoint, await self._aio.send(req))
        try:
            response = await self._http.request(
                req.method,
                req.url,
                params=req.params,
                json=req.json,
                timeout=req.timeout,
                headers=req.headers or None,
            )
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc
        return finish(endpoint, response)

    async def _get(self, endpoint: Endpoint[T], index: int | None, wait: Wait) -> T:
        return (await self.query(endpoint, index=index, wait=wait)).value

    # -- jobs ---------------------------------------------------------------------------

    async def register_job(
        self,
        spec: JobSpec | Mapping[str, Any],
        check_index: int | None = None,
        *,
        force_reschedule: bool = False,
        namespace: str | None = None,
    ) -> RegisterResult:
        """Register (or update) a job; a dict is sent as is and validated by the server.
        ``force_reschedule`` also replaces the job's failed allocations now."""
        return (
            await self.query(
                ep.in_namespace(ep.register_job(spec, check_index, force_reschedule), namespace)
            )
        ).value

    async def plan_job(
        self, spec: JobSpec | Mapping[str, Any], diff: bool = True, *, namespace: str | None = None
    ) -> JobPlanResult:
        """What registering ``spec`` would do (diff, scheduler outcome), changing nothing;
        pass its ``job_modify_index`` to :meth:`register_job` as ``check_index``."""
        return (await self.query(ep.in_namespace(ep.plan_job(spec, diff), namespace))).value

    async def revert_job(
        self,
        id: str,
        version: int,
        enforce_prior_version: int | None = None,
        reason: str = "",
        *,
        namespace: str | None = None,
    ) -> RegisterResult:
        """Register the spec of ``version`` again as the job's newest version."""
        return (
            await self.query(
                ep.in_namespace(
                    ep.revert_job(id, version, enforce_prior_version, reason), namespace
                )
            )
        ).value

    async def jobs(
        self,
        prefix: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[JobListItem]:
        return await self._get(ep.in_namespace(ep.jobs(prefix), namespace), index, wait)

    async def job(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> JobInfo:
        return await self._get(ep.in_namespace(ep.job(id), namespace), index, wait)

    async def stop_job(
        self, id: str, purge: bool = False, *, namespace: str | None = None
    ) -> StopResult:
        return (await self.query(ep.in_namespace(ep.stop_job(id, purge), namespace))).value

    async def job_allocations(
        self,
        id: str,
        all: bool = False,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Allocation]:
        """The job's allocations; terminal ones only with ``all=True``."""
        return await self._get(ep.in_namespace(ep.job_allocations(id, all), namespace), index, wait)

    async def job_versions(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[JobVersion]:
        """Stored versions, newest first."""
        return await self._get(ep.in_namespace(ep.job_versions(id), namespace), index, wait)

    async def job_evaluations(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[Evaluation]:
        """The job's evaluations, newest first."""
        return await self._get(ep.in_namespace(ep.job_evaluations(id), namespace), index, wait)

    async def drain_node(
        self,
        id: str,
        *,
        enable: bool = True,
        deadline: str | float = "1h",
        ignore_system: bool = False,
    ) -> int:
        """Drain a node (``enable=False`` cancels); answers the store index."""
        endpoint = ep.drain_node(id, enable=enable, deadline=deadline, ignore_system=ignore_system)
        return (await self.query(endpoint)).value

    async def node_eligibility(self, id: str, eligible: bool) -> int:
        """Allow or forbid new placements on a node; answers the store index."""
        return (await self.query(ep.node_eligibility(id, eligible))).value

    async def scale_job(
        self,
        id: str,
        group: str,
        count: int,
        *,
        message: str = "",
        namespace: str | None = None,
    ) -> ScaleResult:
        """Set a group's count (refused outside its ``scaling`` bounds)."""
        return (
            await self.query(ep.in_namespace(ep.scale_job(id, group, count, message), namespace))
        ).value

    async def job_scale_status(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> JobScaleStatus:
        """Each group's count, bounds, policy and newest scaling events (newest first)."""
        return await self._get(ep.in_namespace(ep.job_scale_status(id), namespace), index, wait)

    # -- periodic and parameterized jobs (docs/periodic.md) ------------------------------

    async def dispatch_job(
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
        return (await self.query(ep.in_namespace(endpoint, namespace))).value

    async def force_periodic(self, id: str, *, namespace: str | None = None) -> ForceAnswer:
        """Launch a periodic job now (its schedule is unchanged)."""
        return (await self.query(ep.in_namespace(jobtypes.force_periodic(id), namespace))).value

    async def job_children(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[JobListItem]:
        """A periodic or parameterized job's launches and dispatches, oldest first."""
        return await self._get(ep.in_namespace(jobtypes.job_children(id), namespace), index, wait)

    # -- deployments --------------------------------------------------------------------

    async def deployments(
        self,
        job_id: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Deployment]:
        """Deployments, newest first; only ``job_id``'s when given."""
        return await self._get(ep.in_namespace(ep.deployments(job_id), namespace), index, wait)

    async def deployment(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Deployment:
        return await self._get(ep.in_namespace(ep.deployment(id), namespace), index, wait)

    async def deployment_allocations(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[Allocation]:
        return await self._get(
            ep.in_namespace(ep.deployment_allocations(id), namespace), index, wait
        )

    async def job_deployment(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Deployment | None:
        """The job's newest deployment, or None."""
        return await self._get(ep.in_namespace(ep.job_deployment(id), namespace), index, wait)

    async def promote_deployment(
        self, id: str, groups: list[str] | None = None, *, namespace: str | None = None
    ) -> DeploymentActionResult:
        """Promote the canaries (of ``groups``, default all): the rest rolls out."""
        return (
            await self.query(ep.in_namespace(ep.promote_deployment(id, groups), namespace))
        ).value

    async def fail_deployment(
        self, id: str, *, namespace: str | None = None
    ) -> DeploymentActionResult:
        """Fail a running deployment (rolling back with auto_revert)."""
        return (await self.query(ep.in_namespace(ep.fail_deployment(id), namespace))).value

    # -- allocations --------------------------------------------------------------------

    async def allocations(
        self,
        prefix: str | None = None,
        job_id: str | None = None,
        node_id: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Allocation]:
        return await self._get(
            ep.in_namespace(ep.allocations(prefix, job_id, node_id), namespace), index, wait
        )

    async def allocation(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Allocation:
        return await self._get(ep.in_namespace(ep.allocation(id), namespace), index, wait)

    async def alloc_stats(self, id: str, *, namespace: str | None = None) -> AllocResourceUsage:
        """The allocation's CPU (percent of one core) and memory, per running task, as its
        agent measures them now.  NotFound for an unknown allocation, Conflict for one
        that is not running."""
        return await self._get(ep.in_namespace(ep.alloc_stats(id), namespace), None, None)

    async def alloc_logs(
        self,
        id: str,
        task: str,
        type: str = "stdout",
        origin: str = "start",
        offset: int = 0,
        follow: bool = False,
        *,
        namespace: str | None = None,
    ) -> AsyncIterator[str]:
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
            async with self._http.stream(
                "GET",
                ep.alloc_logs_path(id),
                params=params,
                timeout=logs_timeout(self.timeout, follow),
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                async for chunk in response.aiter_text():
                    yield chunk
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc

    # -- day-two operations (podium.client.ops; issue 16) ---------------------------------

    async def restart_alloc(
        self,
        id: str,
        task: str | None = None,
        *,
        all_tasks: bool = False,
        namespace: str | None = None,
    ) -> RestartAnswer:
        """Restart a task (or every running task) in place: the tasks restarted."""
        endpoint = ep.in_namespace(ops.restart_alloc(id, task, all_tasks), namespace)
        return (await self.query(endpoint)).value

    async def signal_alloc(
        self, id: str, signal: str, task: str | None = None, *, namespace: str | None = None
    ) -> SignalAnswer:
        """Deliver ``signal`` to a task (or every running one): the signal and tasks."""
        endpoint = ep.in_namespace(ops.signal_alloc(id, signal, task), namespace)
        return (await self.query(endpoint)).value

    async def stop_alloc(self, id: str, *, namespace: str | None = None) -> StopResult:
        """Stop an allocation; the answer's evaluation places its replacement."""
        return (await self.query(ep.in_namespace(ops.stop_alloc(id), namespace))).value

    async def alloc_fs_ls(
        self, id: str, path: str = "", *, namespace: str | None = None
    ) -> FsListing:
        """A directory's entries, ``path`` relative to the allocation's directory."""
        return (await self.query(ep.in_namespace(ops.alloc_fs_ls(id, path), namespace))).value

    async def alloc_fs_stat(
        self, id: str, path: str = "", *, namespace: str | None = None
    ) -> FileInfo:
        return (await self.query(ep.in_namespace(ops.alloc_fs_stat(id, path), namespace))).value

    async def alloc_fs_cat(
        self,
        id: str,
        path: str,
        offset: int = 0,
        limit: int = 0,
        follow: bool = False,
        *,
        namespace: str | None = None,
    ) -> AsyncIterator[bytes]:
        """A file's bytes as they arrive (``follow``: and what is appended after)."""
        params = ops.alloc_fs_cat_params(path, offset, limit, follow)
        namespace = namespace or self.namespace
        if namespace is not None:
            params["namespace"] = namespace
        async for chunk in self._stream(ops.alloc_fs_cat_path(id), params, follow, lines=False):
            yield chunk

    async def monitor(
        self, log_level: str = "info", node_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The server's (or with ``node_id``, that agent's) log records from now on, as
        they are logged; stop iterating to end it."""
        params = ops.monitor_params(log_level, node_id)
        async for line in self._stream(ops.MONITOR, params, True, lines=True):
            record = ops.parse_line(line.decode())
            if record is not None:
                yield record

    async def _stream(
        self, path: str, params: dict[str, str], follow: bool, *, lines: bool
    ) -> AsyncIterator[bytes]:
        try:
            async with self._http.stream(
                "GET", path, params=params, timeout=logs_timeout(self.timeout, follow)
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                if lines:
                    async for text in response.aiter_lines():
                        yield text.encode()
                else:
                    async for chunk in response.aiter_bytes():
                        yield chunk
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc

    async def events(
        self,
        topics: Sequence[str] = (),
        *,
        index: int | None = None,
        namespace: str | None = None,
        heartbeat: float | None = None,
    ) -> AsyncIterator[Event]:
        """Iterate the cluster's committed changes (``GET /v1/event/stream``) as they
        happen, without end: ``topics`` such as ``["Job", "Allocation:web"]`` (default
        every topic), ``index`` to resume after the last index seen (without it, from now
        on), ``namespace`` (``"*"``: all).  Heartbeats are not yielded.  A resume from an
        index the server no longer holds raises :class:`~podium.errors.APIError` with
        status 410 (code ``index_too_old``), on the first iteration or later."""
        params = ep.event_params(topics, namespace or self.namespace, index, heartbeat)
        try:
            async with self._http.stream(
                "GET",
                ep.EVENT_STREAM,
                params=params,
                timeout=httpx.Timeout(self.timeout, read=None),
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                async for line in response.aiter_lines():
                    event = ep.parse_event_line(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc

    async def save_snapshot(self, dest: str | os.PathLike[str]) -> int:
        """Save a consistent snapshot of the server's state (``GET /v1/operator/snapshot``,
        a management token) to ``dest``, written whole or not at all (a temporary file
        beside it, renamed when complete).  Returns the index it was taken at."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.partial")
        try:
            async with self._http.stream(
                "GET", ep.SNAPSHOT, timeout=httpx.Timeout(self.timeout, read=None)
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                with open(tmp, "wb") as f:
                    async for chunk in response.aiter_bytes():
                        f.write(chunk)
                    f.flush()
                    await asyncio.to_thread(os.fsync, f.fileno())
                index = int(response.headers.get("X-Podium-Index", "0"))
            os.replace(tmp, dest)
            return index
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- nodes, evaluations, status -----------------------------------------------------

    async def nodes(
        self, prefix: str | None = None, *, index: int | None = None, wait: Wait = None
    ) -> list[NodeInfo]:
        return await self._get(ep.nodes(prefix), index, wait)

    async def node(self, id: str, *, index: int | None = None, wait: Wait = None) -> NodeInfo:
        return await self._get(ep.node(id), index, wait)

    async def node_allocations(
        self, id: str, *, index: int | None = None, wait: Wait = None
    ) -> list[Allocation]:
        return await self._get(ep.node_allocations(id), index, wait)

    async def evaluations(
        self,
        job_id: str | None = None,
        *,
        prefix: str | None = None,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[Evaluation]:
        return await self._get(
            ep.in_namespace(ep.evaluations(job_id, prefix), namespace), index, wait
        )

    async def evaluation(
        self, id: str, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> Evaluation:
        return await self._get(ep.in_namespace(ep.evaluation(id), namespace), index, wait)

    async def status(self) -> ServerStatus:
        return (await self.query(ep.status())).value

    async def scheduler_config(self) -> SchedulerConfiguration:
        """``GET /v1/operator/scheduler/configuration``: which job types may preempt."""
        return (await self.query(ep.scheduler_config())).value

    async def set_scheduler_config(
        self, preemption: PreemptionConfig, *, check_index: int | None = None
    ) -> SchedulerConfiguration:
        """Replace the cluster's preemption settings (Conflict if ``check_index`` is
        given and the stored configuration is at another index)."""
        return (await self.query(ep.set_scheduler_config(preemption, check_index))).value

    async def leader(self) -> LeaderAnswer:
        """``GET /v1/status/leader``: the server leading the cluster, and the one asked."""
        return (await self.query(ep.leader())).value

    async def members(self) -> MembersAnswer:
        """``GET /v1/status/members``: every server as it last reported itself."""
        return (await self.query(ep.members())).value

    async def peers(self) -> list[str]:
        """``GET /v1/status/peers``: the URLs of the cluster's servers."""
        return (await self.query(ep.peers())).value

    # -- service catalog ----------------------------------------------------------------

    async def services(
        self, *, index: int | None = None, wait: Wait = None, namespace: str | None = None
    ) -> list[ServiceSummary]:
        return await self._get(ep.in_namespace(ep.services(), namespace), index, wait)

    async def service(
        self,
        name: str,
        healthy: bool | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[ServiceRegistration]:
        return await self._get(ep.in_namespace(ep.service(name, healthy), namespace), index, wait)

    # -- variables ----------------------------------------------------------------------

    async def var_get(
        self,
        path: str,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> Variable:
        """The variable at ``path`` with its items; NotFound when there is none."""
        return await self._get(ep.in_namespace(ep.var_get(path), namespace), index, wait)

    async def var_list(
        self,
        prefix: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
        namespace: str | None = None,
    ) -> list[VariableMetadata]:
        """Paths and indexes of the variables under ``prefix`` (no values)."""
        return await self._get(ep.in_namespace(ep.var_list(prefix), namespace), index, wait)

    async def var_put(
        self,
        path: str,
        items: Mapping[str, str],
        *,
        cas: int | None = None,
        namespace: str | None = None,
    ) -> Variable:
        """Create or replace; with ``cas`` only if still at that modify index (0: new)."""
        return (await self.query(ep.in_namespace(ep.var_put(path, items, cas), namespace))).value

    async def var_delete(
        self, path: str, *, cas: int | None = None, namespace: str | None = None
    ) -> int:
        """Delete a variable; answers the store index."""
        return (await self.query(ep.in_namespace(ep.var_delete(path, cas), namespace))).value

    # -- namespaces ---------------------------------------------------------------------

    async def namespaces(self, prefix: str | None = None) -> list[NamespaceInfo]:
        """Every namespace with its figures (usage, desired) and quota."""
        return (await self.query(ep.namespaces(prefix))).value

    async def namespace_info(self, name: str) -> NamespaceInfo:
        return (await self.query(ep.namespace(name))).value

    async def namespace_apply(
        self, name: str, *, description: str | None = None, quota: Quota | None = None
    ) -> NamespaceInfo:
        """Create or change a namespace; what is None stays as it was."""
        return (await self.query(ep.namespace_apply(name, description, quota))).value

    async def namespace_delete(self, name: str) -> int:
        """Delete a namespace; Conflict while it holds live jobs or variables."""
        return (await self.query(ep.namespace_delete(name))).value

    # -- agent <-> server ---------------------------------------------------------------

    async def register_node(self, node: Node) -> dict[str, Any]:
        """``{"node_id", "index", "heartbeat_ttl"}``, and ``node_secret`` for a new node
        (kept in :attr:`node_secrets` and sent on the node's requests from then on)."""
        endpoint = ep.register_node(node, self.node_secrets.get(node.id))
        answer = (await self.query(endpoint)).value
        if isinstance(answer.get("node_secret"), str):
            self.node_secrets[node.id] = answer["node_secret"]
        await self._learn_lane(answer)
        return answer

    async def heartbeat(self, node_id: str) -> dict[str, Any]:
        """``{"index", "heartbeat_ttl"}``, and ``heartbeat_url`` where the server has a
        heartbeat lane: sent there from then on (:class:`HeartbeatLane`)."""
        endpoint = ep.heartbeat(node_id, self.node_secrets.get(node_id))
        await self._follow_lane()
        lane = self._lane
        if lane is not None:
            try:
                req = prepare(endpoint, None, None, LANE_TIMEOUT, self.namespace)
                answer: dict[str, Any] = finish(endpoint, await lane.send(req)).value
            except ServerUnreachable as exc:
                log.info(
                    "heartbeat lane %s: %s; heartbeats go to %s", lane.address, exc, self.address
                )
                self.lane.failed(exc)
                await self._follow_lane()
            else:
                await self._learn_lane(answer)
                return answer
        answer = (await self.query(endpoint)).value
        await self._learn_lane(answer)
        return answer

    def heartbeat_unanswered(self) -> None:
        """Its caller stopped waiting for a heartbeat's answer: when the heartbeat lane
        had it, the next one goes to the API's route (the lane may be stuck)."""
        if self._lane is not None:
            self.lane.failed(ServerUnreachable("no answer in time", self._lane.address, "timeout"))

    async def _learn_lane(self, answer: dict[str, Any]) -> None:
        if self._aio is not None:
            self.lane.learn(answer)
            ttl = answer.get("heartbeat_ttl")
            if isinstance(ttl, int | float) and ttl > 0:
                self._lane_keepalive = float(ttl)
            await self._follow_lane()

    async def _follow_lane(self) -> None:
        """Send heartbeats where :attr:`lane` says (a new sender when its URL changed)."""
        if (self._lane.address if self._lane is not None else None) == self.lane.url:
            return
        old, self._lane = self._lane, None
        if old is not None:
            await old.aclose()
        if self.lane.url is not None:
            from podium.client._aio import AioSender

            # its connection kept from one heartbeat (every TTL/2) to the next; the lane
            # keeps it longer (TTL + grace), so the agent is the one that closes it
            keepalive = max(self._keepalive, self._lane_keepalive)
            self._lane = AioSender(self.lane.url, self._headers, keepalive, self._verify)

    async def node_sync(
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
        ``updates``: reports committed (durably) before the sync is answered, as
        :meth:`update_allocs` would commit them.
        """
        endpoint = ep.node_sync(
            node_id, since, have, specs, updates, order, self.node_secrets.get(node_id)
        )
        return (await self.query(endpoint, index=index, wait=wait)).value

    async def workload_identities(
        self, node_id: str, wanted: Mapping[str, Sequence[str]]
    ) -> IdentitiesAnswer:
        """Workload tokens for tasks of the node's allocations (docs/acl.md)."""
        endpoint = ep.workload_identities(node_id, wanted, self.node_secrets.get(node_id))
        return (await self.query(endpoint)).value

    async def update_allocs(
        self,
        node_id: str,
        updates: Sequence[AllocClientUpdate],
        order: ep.ReportOrder | None = None,
    ) -> int:
        """Report allocation states; answers the store index of the write.  ``order``: the
        agent's run and request count (see :data:`podium.client.endpoints.ReportOrder`)."""
        endpoint = ep.update_allocs(node_id, updates, order, self.node_secrets.get(node_id))
        return (await self.query(endpoint)).value
