"""Durability backends for the state store.

A backend persists committed transactions and hands them back at start-up.
It sees opaque JSON rows keyed by (table, key); the store owns the meaning.
An etcd backend (for several servers) implements the same two calls, with
``commit`` as an etcd transaction guarded on the previous index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

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
