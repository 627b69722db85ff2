"""The HTTP API's own shapes: its one error body and the small answers of its writes.

The server builds these answers as plain dicts (serialised straight to JSON, see
``podium.server.routes.common.json_answer``); the models here are what the OpenAPI
document says of them (``response_model=`` and ``responses=``), so a client generator or
a fuzzer knows every field.  ``tests/server/test_fuzz_api.py`` checks each answer against
them on a real server.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class SpecIssueBody(BaseModel):
    """One problem of a job file or a policy (``podium.errors.SpecIssue.as_dict``)."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    hint: str | None = None


class ErrorBody(BaseModel):
    """Every error the API answers (4xx and 5xx): ``error`` is one line for people; the
    other fields appear only where they apply."""

    error: str
    matches: list[str] | None = Field(
        default=None, description="400 for an ambiguous id prefix: the ids it matches"
    )
    issues: list[SpecIssueBody] | None = Field(
        default=None, description="400 for an invalid job file or ACL policy: every issue"
    )
    missing: str | None = Field(
        default=None, description="401/403 at the access-control edge: what the route needs"
    )
    versions: list[int] | None = Field(
        default=None, description="404 on revert: the job's versions that exist"
    )


class IndexAnswer(BaseModel):
    """A write that answers only the index it was committed at."""

    index: int


class EvalAnswer(BaseModel):
    """A write that created an evaluation (stop, promote, fail)."""

    eval_id: str
    index: int


class RegisterAnswer(BaseModel):
    """``POST /v1/jobs`` and ``POST /v1/job/{id}/revert``."""

    eval_id: str
    version: int
    job_modify_index: int
    index: int
    changed: bool
    warnings: list[str]


class ScaleAnswer(BaseModel):
    """``POST /v1/job/{id}/scale``."""

    eval_id: str
    version: int
    index: int
    job_modify_index: int
    changed: bool


class HeartbeatAnswer(BaseModel):
    index: int
    heartbeat_ttl: float
    heartbeat_url: str | None = Field(
        default=None,
        description="the leader's heartbeat lane (a listener that answers heartbeats only, "
        "on a thread of its own): where the agent sends its next heartbeats",
    )


class NodeRegisterAnswer(BaseModel):
    node_id: str
    index: int
    heartbeat_ttl: float
    heartbeat_url: str | None = Field(
        default=None, description="as in the heartbeat's answer (HeartbeatAnswer)"
    )
    node_secret: str | None = Field(
        default=None, description="a new node's secret: shown once, in this answer only"
    )


class LeaderAnswer(BaseModel):
    """``GET /v1/status/leader``: the URL of the server that leads the cluster now (""
    while none is known to), and the URL of the server that answered."""

    leader: str
    server: str


class PeersAnswer(BaseModel):
    """``GET /v1/status/peers``: the URLs of the cluster's servers (agents add them to
    the servers they fail over among)."""

    servers: list[str]


class MemberInfo(BaseModel):
    """One server of the cluster (``GET /v1/status/members``), as it last reported
    itself: servers on etcd refresh their record every few seconds under a lease, so a
    server that died drops out of the list within the lease's TTL."""

    url: str
    name: str
    leader: bool
    version: str
    applied_index: int
    """The last commit this server's in-memory store has applied."""
    last_contact: float | None
    """Seconds since etcd last answered this server (None: not yet; 0 for one server on
    its own store)."""
    etcd_revision: int
    """etcd's revision when this server last heard from it (0 without etcd)."""
    reported_ago: float
    """Seconds since this server wrote its record (by the answering server's clock)."""
    started: float
    """When the server started (Unix time)."""


class MembersAnswer(BaseModel):
    """``GET /v1/status/members``: the cluster's servers, the leader marked."""

    members: list[MemberInfo]
    leader: str


class StatusAnswer(BaseModel):
    """``GET /v1/status``: the server's version, store index and figures."""

    version: str
    index: int
    nodes: int
    jobs: int
    broker: dict[str, int]
