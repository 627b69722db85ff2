"""What an allocation's runner needs from the agent that hosts it, and nothing more.

:class:`~podium.agent.runner.AllocRunner` (and the check, template and identity helpers
it drives) once held the whole :class:`~podium.agent.agent.Agent`, and the modules
imported one another in a cycle.  They now see the agent only through
:class:`AllocHost`: the clock, the agent's settings, driver lookup, port choice, start
slots, reporting and persistence by allocation id, start counters and workload
identities.  :class:`~podium.agent.agent.Agent` implements it; a test may hand a runner
anything else that does.  Import-linter keeps this true: the runner's modules may not
import :mod:`podium.agent.agent` (see ``pyproject.toml``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from podium.agent.config import AgentSettings
from podium.client import AsyncClient
from podium.drivers.base import Driver
from podium.models import AllocatedPort, Network

if TYPE_CHECKING:
    from podium.agent.runner import AllocRunner


class StartCounters(Protocol):
    """The agent's task-start counters (``podium.agent.metrics.AgentMetrics``)."""

    def started(self, driver: str, seconds: float, restart: bool) -> None: ...

    def start_failed(self, driver: str) -> None: ...

    def reattached(self) -> None: ...


class IdentitySource(Protocol):
    """The node's workload tokens (``podium.agent.identity.AgentIdentities``)."""

    async def ensure(self, runner: AllocRunner, task: str) -> None: ...


class AllocHost(Protocol):
    """The agent, as an allocation's runner sees it."""

    @property
    def clock(self) -> Callable[[], float]:
        """The agent's clock (injected in tests; ``time.time`` otherwise)."""

    @property
    def settings(self) -> AgentSettings:
        """The agent's configuration: data dir, task dirs on or off, kill-timeout cap,
        template host files."""

    @property
    def client(self) -> AsyncClient:
        """The servers' API (templates read variables and services through it)."""

    @property
    def node_name(self) -> str: ...

    @property
    def api_address(self) -> str:
        """The server address tasks are given (``PODIUM_ADDR``)."""

    @property
    def start_slots(self) -> asyncio.Semaphore:
        """Bounds the driver starts in flight on this node."""

    @property
    def metrics(self) -> StartCounters: ...

    @property
    def identities(self) -> IdentitySource | None:
        """Workload tokens; None when the agent issues none."""

    def driver(self, name: str) -> Driver | None:
        """The enabled driver of that name, if any."""

    def assign_ports(self, alloc_id: str, network: Network) -> dict[str, AllocatedPort]:
        """Choose the allocation's ports on this node (raises DriverError when it cannot)."""

    def report(self, alloc_id: str) -> None:
        """The allocation's client status, task states or checks changed: send them."""

    def persist(self, alloc_id: str) -> None:
        """The allocation's runner state changed: save it (batched)."""
