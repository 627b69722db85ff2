"""What the store raises when the disk, not the caller, is at fault.

StoreError              a write (or read) of the durable store failed; nothing was applied
├── StoreFull           the disk (or the file system's quota) is full: HTTP 507
└── StoreDamaged        the store on disk is unreadable, or missing where a cluster was:
                        the server refuses to start (one line naming the file and the fix)

The HTTP layer answers a StoreError with a JSON error and the cause (507 for a full
disk, 503 otherwise), and the scheduling worker retries an evaluation that failed on
one (podium.server.core), so a full disk is an outage that heals, not a dead server.
"""

from __future__ import annotations

from podium.errors import PodiumError


class StoreError(PodiumError):
    """A store operation failed; the in-memory state is as it was before it."""

    def __init__(self, message: str, *, path: str = "", cause: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.cause = cause

    outcome_unknown = False
    """True when the store could not learn whether the write was made (a replicated
    store's request timed out: it may still be applied, whole, and is found in the log)."""


class StoreFull(StoreError):
    """The disk under the store is full: the write was rolled back."""


class StoreDamaged(StoreError):
    """The store cannot be opened as it is; the message is one line with the recovery."""
