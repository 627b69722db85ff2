"""The agent's settings (from `podium agent` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AgentSettings:
    data_dir: str
    servers: list[str]
    name: str | None = None
    datacenter: str = "dc1"
    node_pool: str = "default"
    meta: dict[str, str] = field(default_factory=dict)
    http_host: str = "127.0.0.1"
    http_port: int = 0
    """Where the agent serves logs to the servers; 0 picks a free port."""
    advertise_host: str | None = None
    raw_exec_enabled: bool = False
    reserved_cpu: int = 0
    reserved_memory: int = 0
    cgroup_root: str | None = None
    report_interval: float = 0.05
    log_rotate_interval: float = 5.0
    sync_wait: float = 30.0
    alloc_dirs: bool = True
    """Make each allocation's directory tree (the simulator's mock tasks need none)."""
    workload_identity: bool = True
    """Give each task a workload token (``PODIUM_TOKEN``, ``secrets/podium_token``), renewed
    while it runs (needs ``alloc_dirs``)."""
    template_host_files: bool = False
    """Let templates read ``source`` files outside the task's directory (off: sandboxed)."""
