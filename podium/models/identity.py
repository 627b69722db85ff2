"""Workload identity on the wire: what an agent asks for and what the servers answer.

``POST /v1/client/node/{node_id}/identities`` (an agent's route, its node secret
required): the agent names its allocations and, for each, the tasks it wants tokens
for; the answer carries one token per task, and why an allocation got none (stopped,
unknown, no such task).  See :mod:`podium.server.workload` and docs/acl.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_IDENTITY_REQUEST = 10_000
"""Tokens one request may ask for (an agent renews its node's in one request)."""


class IdentitiesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allocations: dict[str, list[str]] = Field(default_factory=dict)
    """Allocation id -> the names of its tasks to issue tokens for."""


class WorkloadIdentity(BaseModel):
    alloc_id: str
    task: str
    token: str
    """``pwi1.…``: the bearer credential (``PODIUM_TOKEN``, ``secrets/podium_token``)."""
    expires_at: float
    """Wall-clock seconds; the agent renews at two-thirds of the token's life."""


class IdentitiesAnswer(BaseModel):
    identities: list[WorkloadIdentity] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)
    """Allocation id -> why it got no token (stopped, unknown, no such task)."""
    ttl: float = 0.0
    """Seconds each token is valid from its issue."""
