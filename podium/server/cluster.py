"""Which server leads, and who the cluster's servers are: what ``/v1/status/leader``,
``/v1/status/peers`` and ``/v1/status/members`` answer, and what the API's forwarding of
writes (podium.server.forward) asks.

Two answers to the same questions, so that routes need not know which store is under
them: :class:`Solo` for one server on SQLite (it leads itself while its duties run),
and :class:`podium.server.ha.HighAvailability` for servers sharing an etcd cluster (the
holder of the election's lease leads; the others follow its log).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from podium import __version__
from podium.models.api import MemberInfo

if TYPE_CHECKING:
    from podium.server.core import Server


class ClusterView(Protocol):
    """What a server knows of its cluster."""

    @property
    def replicated(self) -> bool:
        """True when other servers may hold the lead (writes may have to go elsewhere)."""
        ...

    def is_leader(self) -> bool:
        """This server commits writes now (its duties run, its fence holds)."""
        ...

    def leader_url(self) -> str:
        """The leader's advertised URL ("" while none is known)."""
        ...

    def staleness(self) -> float | None:
        """Seconds since this server's store was last known to hold every commit (0 on
        the leader; None: not known yet)."""
        ...

    async def wait_leading(self, timeout: float) -> bool:
        """Wait (up to ``timeout``) for an elected leader's catch-up to finish; True when
        this server leads after it."""
        ...

    async def members(self) -> list[MemberInfo]:
        """Every server of the cluster as it last reported itself."""
        ...


class Solo:
    """One server on its own store: it is the cluster and its leader while its leader's
    duties run (between ``Server.start`` and ``Server.stop``)."""

    replicated = False

    def __init__(self, server: Server) -> None:
        self.server = server
        self.started = time.time()

    def is_leader(self) -> bool:
        return self.server.leader.running

    def leader_url(self) -> str:
        return self.server.config.advertise_url if self.is_leader() else ""

    def staleness(self) -> float | None:
        return 0.0

    async def wait_leading(self, timeout: float) -> bool:
        return self.is_leader()

    async def members(self) -> list[MemberInfo]:
        url = self.server.config.advertise_url
        return [
            MemberInfo(
                url=url,
                name=self.server.config.name or url,
                leader=self.is_leader(),
                version=__version__,
                applied_index=self.server.store.index,
                last_contact=0.0,
                etcd_revision=0,
                reported_ago=0.0,
                started=self.started,
            )
        ]
