"""One uid per allocation for ``exec`` tasks that name no user.

Every exec task used to run as ``nobody``, so one tenant's task could read what
another's had written.  Now an allocation leases a uid (its gid is the same number)
from a range that no account of the node uses; its tasks share it (they share the
allocation's directory), and no other allocation gets it until the lease is released.

The pool itself keeps its leases in memory; ``on_change`` hears of each lease and release
as it happens (before ``lease`` returns, so before any task runs as the uid).  The agent
(``podium.agent.agent``) stores them in its ``agent.db`` through it and gives them back
as ``leases`` when it starts, so a restarted agent keeps its allocations' uids and never
hands out one a running task holds.  It releases a lease when the allocation's directory
is removed (the server collected it), and, after its first sync, the leases of
allocations neither the server nor the agent has any more.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable

from podium.errors import DriverError

DEFAULT_RANGE = (70000, 79999)
"""Above the 16-bit ids distributions and systemd's dynamic users take (up to 65535),
below the 100000+ that subordinate-id (user namespace) ranges usually start at."""


def parse_range(text: str) -> tuple[int, int]:
    """``FIRST-LAST`` (both included, 1000 <= FIRST <= LAST < 2**31)."""
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last)
    except ValueError:
        raise DriverError(f"uid range {text!r} is not FIRST-LAST (such as 70000-79999)") from None
    if not sep or lo < 1000 or hi < lo or hi >= 2**31:
        raise DriverError(
            f"uid range {text!r} must be FIRST-LAST with 1000 <= FIRST <= LAST < 2147483648"
        )
    return lo, hi


class UidPool:
    def __init__(
        self,
        first: int = DEFAULT_RANGE[0],
        last: int = DEFAULT_RANGE[1],
        leases: dict[str, int] | None = None,
        on_change: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self.first, self.last = first, last
        self._leases: dict[str, int] = dict(leases or {})
        self._used = set(self._leases.values())
        self._next = first
        self._on_change = on_change
        """``(alloc_id, uid)`` for a new lease, ``(alloc_id, None)`` for a release."""

    @property
    def leases(self) -> dict[str, int]:
        return dict(self._leases)

    def lease(self, alloc_id: str) -> int:
        """The allocation's uid: the one it holds, else the next free one of the range."""
        uid = self._leases.get(alloc_id)
        if uid is not None:
            return uid
        size = self.last - self.first + 1
        for step in range(size):
            uid = self.first + (self._next - self.first + step) % size
            if uid in self._used or _account_exists(uid):
                continue
            self._next = uid + 1 if uid < self.last else self.first
            if self._on_change is not None:
                self._on_change(alloc_id, uid)  # stored first: a failure leases nothing
            self._leases[alloc_id] = uid
            self._used.add(uid)
            return uid
        raise DriverError(
            f"no free uid left in {self.first}-{self.last} for exec tasks on this node",
            recoverable=True,
        )

    def release(self, alloc_id: str) -> None:
        """The allocation is gone: its uid may go to another one."""
        uid = self._leases.get(alloc_id)
        if uid is None:
            return
        if self._on_change is not None:
            self._on_change(alloc_id, None)
        del self._leases[alloc_id]
        self._used.discard(uid)

    def retain(self, alloc_ids: set[str]) -> list[str]:
        """Release every lease of an allocation not in ``alloc_ids``; answers those released."""
        gone = [a for a in self._leases if a not in alloc_ids]
        for alloc_id in gone:
            self.release(alloc_id)
        return gone


def _account_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
