"""The state store: its interface, the in-memory store and the SQLite backend.

``StateStore()`` keeps state in memory only (tests, simulations);
``StateStore(SqliteBackend(path))`` persists every commit before it is applied.
"""

from __future__ import annotations

from podium.state.backend import Backend, NullBackend
from podium.state.sqlite import SqliteBackend
from podium.state.store import (
    ALLOCS,
    EVALS,
    JOBS,
    NODES,
    TABLES,
    VERSIONS,
    Snapshot,
    StateStore,
    Txn,
)

__all__ = [
    "ALLOCS",
    "EVALS",
    "JOBS",
    "NODES",
    "TABLES",
    "VERSIONS",
    "Backend",
    "NullBackend",
    "Snapshot",
    "SqliteBackend",
    "StateStore",
    "Txn",
]
