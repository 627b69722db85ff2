"""Nodes: the machines agents run on, as the servers see them."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from podium.models.devices import DeviceGroup
from podium.models.volumes import HostVolume


class NodeStatus(StrEnum):
    INITIALIZING = "initializing"
    READY = "ready"
    DOWN = "down"


class Eligibility(StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"


class NodeResources(BaseModel):
    """Capacity a node offers to tasks (after what the agent reserves)."""

    cpu: int = Field(ge=0, description="MHz")
    memory: int = Field(ge=0, description="MB")


class DriverInfo(BaseModel):
    detected: bool = False
    healthy: bool = False
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)


class DrainStrategy(BaseModel):
    """An operator's request to empty a node (``podium node drain``)."""

    deadline: float = Field(ge=0, description="seconds allowed; 0 = no deadline")
    deadline_at: float = 0.0
    """Wall-clock time after which everything left is stopped (0: none)."""
    ignore_system: bool = False
    started_at: float = 0.0


class Node(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    datacenter: str = "dc1"
    node_pool: str = "default"
    status: NodeStatus = NodeStatus.INITIALIZING
    status_description: str = ""
    eligibility: Eligibility = Eligibility.ELIGIBLE
    drain: bool = False
    drain_strategy: DrainStrategy | None = None
    http_addr: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, str] = Field(default_factory=dict)
    resources: NodeResources
    reserved: NodeResources = Field(default_factory=lambda: NodeResources(cpu=0, memory=0))
    drivers: dict[str, DriverInfo] = Field(default_factory=dict)
    host_volumes: dict[str, HostVolume] = Field(default_factory=dict)
    """Named host directories tasks may mount (``--host-volume``; docs/volumes.md)."""
    devices: list[DeviceGroup] = Field(default_factory=list)
    """What the agent's device plugins found (docs/devices.md)."""
    create_index: int = 0
    modify_index: int = 0
    status_updated_at: float = 0.0
    last_heartbeat: float = 0.0

    def ready(self) -> bool:
        return self.status == NodeStatus.READY

    def schedulable(self) -> bool:
        return self.ready() and self.eligibility == Eligibility.ELIGIBLE and not self.drain

    def driver_ok(self, name: str) -> bool:
        info = self.drivers.get(name)
        return info is not None and info.detected and info.healthy

    def capacity(self) -> NodeResources:
        return NodeResources(
            cpu=max(0, self.resources.cpu - self.reserved.cpu),
            memory=max(0, self.resources.memory - self.reserved.memory),
        )


NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")


def check_node_names(node: Node) -> None:
    """What a registration may call a node: an id that fits a URL path segment, and a
    name (and datacenter, pool, address) of printable characters only, so that nothing a
    node says about itself can move a terminal's cursor or forge a line in a listing.
    Raises ValueError (400) naming the field."""
    if not NODE_ID_RE.match(node.id):
        raise ValueError(
            f"node id {node.id!r} must be 1-128 letters, digits, '.', '_', ':' or '-' "
            "(starting with a letter or digit)"
        )
    fields = {
        "name": node.name,
        "datacenter": node.datacenter,
        "node_pool": node.node_pool,
        "http_addr": node.http_addr,
    }
    for field, value in fields.items():
        if not value.isprintable() or len(value) > 256 or (field == "name" and not value.strip()):
            raise ValueError(
                f"node {field} {value!r} must be 1-256 printable characters "
                "(no control characters, no line breaks)"
            )
