"""The server's settings, in a module of their own so that each part of the server
(jobs, nodes, reports, the worker, GC, the leader's duties) can read them without
importing the composition root (:mod:`podium.server.core`)."""

from __future__ import annotations

from dataclasses import dataclass

from podium.server import limits
from podium.server.identity import DEFAULT_TTL as DEFAULT_IDENTITY_TTL

DEFAULT_SHED_LAG = 2.0
"""Seconds of event-loop lag past which the server sheds (``--shed-lag``; 0: never): far
above a healthy server's milliseconds, far below a heartbeat's TTL (podium.server.shed)."""


@dataclass
class ServerConfig:
    heartbeat_ttl: float = 10.0
    advertise_url: str = ""
    """The URL agents and other servers reach this server at (``/v1/status/peers``,
    ``/v1/status/leader``); "" where it has none (a server inside a test or simulation)."""
    heartbeat_grace: float = 10.0
    name: str = ""
    """The server's name in ``podium server members`` (default: its advertise URL)."""
    workers: int = 1
    eval_gc_keep: int = 20
    """Terminal evaluations kept per job (older ones are removed)."""
    gc_interval: float = 30.0
    alloc_gc_age: float = 3600.0
    """Stopped, finished allocations older than this are removed (Nomad: 1h too)."""
    drain_interval: float = 1.0
    deployment_interval: float = 1.0
    """How often running deployments are checked against their progress deadlines."""
    acl: bool = False
    """Access control at the API's edge (podium.server.acl): off, only node identity is
    checked; on, every request needs what its route requires."""
    data_dir: str | None = None
    """The server's data directory (where ``acl-bootstrap-reset`` is looked for)."""
    identity_ttl: float = DEFAULT_IDENTITY_TTL
    """Seconds a task's workload token is valid (agents renew at two-thirds of it)."""
    max_count: int = limits.DEFAULT_MAX_COUNT
    """The most instances of one group, and of one job in all (``--max-count``)."""
    report_batch_window: float = 0.01
    """Agents' reports arriving within this many seconds share one transaction (and one
    fsync) on the HTTP path; 0: whatever is queued when the batcher runs."""
    report_batch_max: int = 2_000
    """The most allocations' reports one of those transactions takes (the rest follow in the
    next, the event loop given a turn in between; a single larger request goes alone)."""
    shed_lag: float = DEFAULT_SHED_LAG
    """Seconds of event-loop lag past which syncs and reads are answered 429 with
    Retry-After (``--shed-lag``; 0: never; podium.server.shed)."""
