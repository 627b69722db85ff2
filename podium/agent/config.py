"""The agent's settings (from `podium agent` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field

from podium.drivers import rootfs, uids
from podium.drivers.exec import DEFAULT_USER_DENYLIST, ExecOptions
from podium.models.dockerpolicy import DEFAULT_CAPS, DockerPolicy, parse_caps
from podium.models.volumes import HostVolume


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
    max_kill_timeout: float = 30.0
    """The longest a task's ``kill_timeout`` may make the agent wait between the kill signal
    and SIGKILL (``--max-kill-timeout``; Nomad's client ``max_kill_timeout``)."""
    docker_volumes: bool = False
    """Let docker tasks bind-mount host paths (``--docker-volumes``; Nomad's docker plugin
    ``volumes.enabled``)."""
    docker_volume_allow: list[str] = field(default_factory=list)
    """With ``docker_volumes``: the host path prefixes binds may name (empty: any path)."""
    docker_allow_caps: list[str] | None = None
    """Capabilities docker tasks may ``cap_add`` (None: Docker's default set)."""
    docker_allow_privileged: bool = False
    exec_chroot: list[str] | None = None
    """What exec tasks see of the host, ``PATH[:DEST]`` each (``--exec-chroot``; None:
    ``rootfs.DEFAULT_CHROOT``)."""
    exec_user_denylist: list[str] | None = None
    """Users (names or uids) exec tasks may not run as (``--exec-user-denylist``; None:
    ``DEFAULT_USER_DENYLIST``); root and uid 0 are refused whatever it says."""
    exec_uid_range: tuple[int, int] = uids.DEFAULT_RANGE
    """The uids allocations' exec tasks get one of each (``--exec-uid-range``)."""
    host_volumes: dict[str, HostVolume] = field(default_factory=dict)
    """Named host directories tasks may mount (``--host-volume NAME=PATH[,read_only]``;
    docs/volumes.md)."""
    device_file: str | None = None
    """Devices to simulate from a JSON file (``--device-file``; docs/devices.md)."""

    def exec_options(self, pool: uids.UidPool) -> ExecOptions:
        """This node's exec driver settings, with ``pool`` (the agent's persisted leases)."""
        chroot = rootfs.DEFAULT_CHROOT if self.exec_chroot is None else self.exec_chroot
        denylist = (
            DEFAULT_USER_DENYLIST if self.exec_user_denylist is None else self.exec_user_denylist
        )
        return ExecOptions(
            chroot=tuple(rootfs.parse_bind(spec) for spec in chroot),
            user_denylist=tuple(denylist),
            uids=pool,
        )

    def docker_policy(self) -> DockerPolicy:
        """What this node's docker driver lets containers have (advertised to the servers)."""
        caps = (
            DEFAULT_CAPS if self.docker_allow_caps is None else parse_caps(self.docker_allow_caps)
        )
        return DockerPolicy(
            volumes=self.docker_volumes,
            volume_allow=tuple(self.docker_volume_allow),
            allow_caps=caps,
            privileged=self.docker_allow_privileged,
        )

    def kill_timeout(self, wanted: float) -> float:
        """A task's kill_timeout as this agent honours it: at most ``max_kill_timeout``."""
        return max(0.0, min(wanted, self.max_kill_timeout))
