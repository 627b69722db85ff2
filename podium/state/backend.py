"""Durability backends for the state store.

A backend persists committed transactions and hands them back at start-up.
It sees opaque JSON rows keyed by (table, key); the store owns the meaning.
An etcd backend (for several servers) implements the same two calls, with
``commit`` as an etcd transaction guarded on the previous index.

Recovery goes through the same seam: ``cluster_id`` names the cluster a store belongs
to (a server refuses an empty store where its data dir says a cluster was), and
``snapshot`` writes a consistent copy in the one snapshot format (a SQLite file with
the ``objects``/``meta``/``info`` tables, podium.state.snapshot), whatever the backend:
an etcd backend writes its rows into such a file, so ``podium operator snapshot`` works
the same on both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from podium.state.errors import StoreError

Row = tuple[str, str, bytes]


class Backend(Protocol):
    def load(self) -> tuple[int, Iterable[Row]]:
        """The last committed index and every stored row."""
        ...

    def commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        """Durably write one transaction (all or nothing) before returning."""
        ...

    def close(self) -> None: ...

    def cluster_id(self) -> str | None:
        """The id of the cluster this store belongs to; None when none was recorded."""
        ...

    def set_cluster_id(self, cluster_id: str) -> None: ...

    def snapshot(self, dest: str | os.PathLike[str]) -> None:
        """Write a consistent copy to ``dest`` in the snapshot format (blocking: run it
        on a thread)."""
        ...


class NullBackend:
    """Keeps nothing: the in-memory store for tests and simulations."""

    def load(self) -> tuple[int, Iterable[Row]]:
        return 0, ()

    def commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        return None

    def close(self) -> None:
        return None

    def cluster_id(self) -> str | None:
        return None

    def set_cluster_id(self, cluster_id: str) -> None:
        return None

    def snapshot(self, dest: str | os.PathLike[str]) -> None:
        raise StoreError("an in-memory store keeps nothing to snapshot")
