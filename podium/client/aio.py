"""``podium.AsyncClient``: the asyncio twin of :class:`podium.Client`, method for method."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from podium.client import endpoints as ep
from podium.client._http import (
    DEFAULT_TIMEOUT,
    error_for,
    finish,
    logs_timeout,
    prepare,
    resolve_address,
    transport_error,
)
from podium.client.endpoints import Endpoint
from podium.client.results import (
    JobInfo,
    JobListItem,
    NodeInfo,
    NodeSync,
    QueryResult,
    RegisterResult,
    ScaleResult,
    ServerStatus,
    StopResult,
)
from podium.models import (
    Allocation,
    AllocClientUpdate,
    Evaluation,
    JobSpec,
    JobVersion,
    Node,
)

T = TypeVar("T")
Wait = str | float | None


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
    ) -> None:
        self.address = resolve_address(address)
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.address,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "podium-sdk", **(headers or {})},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

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
        """Send ``endpoint``; answer its value with the store index and the raw JSON."""
        req = prepare(endpoint, index, wait, self.timeout)
        try:
            response = await self._http.request(
                req.method, req.url, params=req.params, json=req.json, timeout=req.timeout
            )
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc) from exc
        return finish(endpoint, response)

    async def _get(self, endpoint: Endpoint[T], index: int | None, wait: Wait) -> T:
        return (await self.query(endpoint, index=index, wait=wait)).value

    # -- jobs ---------------------------------------------------------------------------

    async def register_job(
        self, spec: JobSpec | Mapping[str, Any], check_index: int | None = None
    ) -> RegisterResult:
        """Register (or update) a job; a dict is sent as is and validated by the server."""
        return (await self.query(ep.register_job(spec, check_index))).value

    async def jobs(
        self, prefix: str | None = None, *, index: int | None = None, wait: Wait = None
    ) -> list[JobListItem]:
        return await self._get(ep.jobs(prefix), index, wait)

    async def job(self, id: str, *, index: int | None = None, wait: Wait = None) -> JobInfo:
        return await self._get(ep.job(id), index, wait)

    async def stop_job(self, id: str, purge: bool = False) -> StopResult:
        return (await self.query(ep.stop_job(id, purge))).value

    async def job_allocations(
        self, id: str, all: bool = False, *, index: int | None = None, wait: Wait = None
    ) -> list[Allocation]:
        """The job's allocations; terminal ones only with ``all=True``."""
        return await self._get(ep.job_allocations(id, all), index, wait)

    async def job_versions(
        self, id: str, *, index: int | None = None, wait: Wait = None
    ) -> list[JobVersion]:
        """Stored versions, newest first."""
        return await self._get(ep.job_versions(id), index, wait)

    async def job_evaluations(
        self, id: str, *, index: int | None = None, wait: Wait = None
    ) -> list[Evaluation]:
        """The job's evaluations, newest first."""
        return await self._get(ep.job_evaluations(id), index, wait)

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

    async def scale_job(self, id: str, group: str, count: int) -> ScaleResult:
        return (await self.query(ep.scale_job(id, group, count))).value

    # -- allocations --------------------------------------------------------------------

    async def allocations(
        self,
        prefix: str | None = None,
        job_id: str | None = None,
        node_id: str | None = None,
        *,
        index: int | None = None,
        wait: Wait = None,
    ) -> list[Allocation]:
        return await self._get(ep.allocations(prefix, job_id, node_id), index, wait)

    async def allocation(
        self, id: str, *, index: int | None = None, wait: Wait = None
    ) -> Allocation:
        return await self._get(ep.allocation(id), index, wait)

    async def alloc_logs(
        self,
        id: str,
        task: str,
        type: str = "stdout",
        origin: str = "start",
        offset: int = 0,
        follow: bool = False,
    ) -> AsyncIterator[str]:
        """Stream a task's log as text chunks (not lines), as they arrive.

        With ``follow=True`` the stream stays open while the task runs; stop
        iterating (or ``close()`` the iterator) to end it.  Errors are raised
        on the first iteration, as the request is sent only then.
        """
        params = ep.alloc_logs_params(task, type, origin, offset, follow)
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
    ) -> list[Evaluation]:
        return await self._get(ep.evaluations(job_id, prefix), index, wait)

    async def evaluation(
        self, id: str, *, index: int | None = None, wait: Wait = None
    ) -> Evaluation:
        return await self._get(ep.evaluation(id), index, wait)

    async def status(self) -> ServerStatus:
        return (await self.query(ep.status())).value

    # -- agent <-> server ---------------------------------------------------------------

    async def register_node(self, node: Node) -> dict[str, Any]:
        """``{"node_id", "index", "heartbeat_ttl"}``."""
        return (await self.query(ep.register_node(node))).value

    async def heartbeat(self, node_id: str) -> dict[str, Any]:
        """``{"index", "heartbeat_ttl"}``."""
        return (await self.query(ep.heartbeat(node_id))).value

    async def node_sync(self, node_id: str, index: int = 0, wait: Wait = None) -> NodeSync:
        """Block until the node's allocations change past ``index`` (or ``wait`` passes)."""
        return (await self.query(ep.node_sync(node_id), index=index, wait=wait)).value

    async def update_allocs(self, node_id: str, updates: list[AllocClientUpdate]) -> int:
        """Report allocation states; answers the store index of the write."""
        return (await self.query(ep.update_allocs(node_id, updates))).value
