"""The Python SDK: ``podium.Client`` (blocking) and ``podium.AsyncClient`` (asyncio).

Both wrap the whole HTTP API of docs/api.md and answer with the typed models
of :mod:`podium.models` (plus the small answer models of
:mod:`podium.client.results`).  This package imports only ``podium.models``,
``podium.errors``, httpx and the standard library, so programs can drive
Podium without pulling in the server or the agent.

Blocking queries::

    from podium import Client
    from podium.client import endpoints

    with Client() as client:
        result = client.query(endpoints.job_allocations("web"))
        while True:  # wake up on every change to the job's allocations
            result = client.query(
                endpoints.job_allocations("web"), index=result.index, wait="1m"
            )
            print([a.client_status for a in result.value])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from podium.client import endpoints
from podium.client._http import DEFAULT_ADDRESS, ServerUnreachable, resolve_address
from podium.client.endpoints import Endpoint
from podium.client.results import (
    DeploymentActionResult,
    GroupSummary,
    JobDiff,
    JobInfo,
    JobListItem,
    JobPlanResult,
    NodeInfo,
    NodeSync,
    QueryResult,
    RegisterResult,
    ScaleResult,
    ServerStatus,
    StopResult,
)
from podium.client.sync import Client

if TYPE_CHECKING:
    from podium.client.aio import AsyncClient

__all__ = [
    "DEFAULT_ADDRESS",
    "AsyncClient",
    "Client",
    "DeploymentActionResult",
    "Endpoint",
    "GroupSummary",
    "JobDiff",
    "JobInfo",
    "JobListItem",
    "JobPlanResult",
    "NodeInfo",
    "NodeSync",
    "QueryResult",
    "RegisterResult",
    "ScaleResult",
    "ServerStatus",
    "ServerUnreachable",
    "StopResult",
    "endpoints",
    "resolve_address",
]


def __getattr__(name: str) -> Any:
    # AsyncClient pulls in aiohttp (and asyncio): a third of the CLI's imports, which
    # the CLI never uses.  Imported on first use instead.
    if name == "AsyncClient":
        from podium.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
