"""What a template sees of a variable (``var(path)``) and of a service (``service(name)``).

Shared by the agent, which builds them from the server's answers, and the render
worker (:mod:`podium.agent.render_worker`), which hands them to Jinja2.  Kept apart from
the worker so the agent does not import Jinja2 (~1.3 MB of a dev agent's memory) to name
two small classes: templates are parsed and rendered only in the worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class VariableItems(Mapping[str, str]):
    """``var(path)`` in a template: the variable's items, by key and as attributes."""

    __slots__ = ("_items", "_path")

    def __init__(self, path: str, items: Mapping[str, str]) -> None:
        self._path = path
        self._items = dict(items)

    @property
    def path(self) -> str:
        return self._path

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:  # names, never values
        return f"<variable {self._path} items={sorted(self._items)}>"


@dataclass(frozen=True)
class ServiceInstance:
    """One entry of ``service(name)``: a healthy instance of the service."""

    alloc_id: str
    node_id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    healthy: bool = True

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "alloc_id": self.alloc_id,
            "node_id": self.node_id,
            "address": self.address,
            "port": self.port,
            "tags": list(self.tags),
            "healthy": self.healthy,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ServiceInstance:
        return cls(
            alloc_id=str(raw["alloc_id"]),
            node_id=str(raw["node_id"]),
            address=str(raw["address"]),
            port=int(raw["port"]),
            tags=tuple(str(t) for t in raw.get("tags", ())),
            healthy=bool(raw.get("healthy", True)),
        )
