"""Service catalog entries: one per running instance and service name.

The server keeps them from what agents report (address, port, check results)
and drops an instance's entries in the same write that tells its agent to stop
it, so nobody is sent to an instance on its way out.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from podium.models.alloc import CheckResult


class ServiceRegistration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    """``<alloc_id>/<service name>``."""
    service_name: str
    namespace: str = "default"
    job_id: str
    group: str
    alloc_id: str
    node_id: str
    address: str
    port: int = 0
    tags: list[str] = Field(default_factory=list)
    healthy: bool = False
    """Every check passing (an instance without checks is healthy while it runs)."""
    checks: dict[str, CheckResult] = Field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


def registration_id(alloc_id: str, service: str) -> str:
    return f"{alloc_id}/{service}"


class ServiceSummary(BaseModel):
    """One line of ``GET /v1/services``: a service name and its instances."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str = "default"
    instances: int = 0
    healthy: int = 0
    tags: list[str] = Field(default_factory=list)
    """Every tag any instance carries, sorted."""
