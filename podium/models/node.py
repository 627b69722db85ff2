"""Nodes: the machines agents run on, as the servers see them."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


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
