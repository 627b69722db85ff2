"""Several "machines" on this one: Linux network namespaces on a private bridge.

Layout for one run (``N`` is this run's subnet, ``P`` this test process's pid)::

    root namespace: bridge pdbr<P> 10.88.N.1/24   ← `podium server` listens here
      ├─ veth pd<P>v1 ══ eth0 in netns pd<P>-h1 (10.88.N.11)   ← `podium agent --name host1`
      ├─ veth pd<P>v2 ══ eth0 in netns pd<P>-h2 (10.88.N.12)
      └─ ...

Every name carries the pid of the test process that made it, so parallel runs (and the
pytest-xdist workers of one run) don't clash, and objects left by a dead run (pid no longer
alive) are removed at the next start. A subnet is picked and claimed (the bridge's address)
under a lock file, so two processes never take the same one. Only addresses this module
created (10.88.N.x) and loopback ever receive traffic.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

PREFIX = "pd"
_NETNS_RE = re.compile(rf"^{PREFIX}(\d+)-h\d+$")
_LINK_RE = re.compile(rf"^{PREFIX}(?:br|v)(\d+)")


class NetnsUnavailable(Exception):
    """Why network namespaces cannot be used here (the tests skip with this reason)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = ip("netns", "list", check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


def _pid_alive(pid: int) -> bool:
    return pid != os.getpid() and psutil.pid_exists(pid)


def kill_netns_processes(netns: str) -> None:
    """SIGKILL every process inside a namespace this module created."""
    result = ip("netns", "pids", netns, check=False)
    for token in result.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(token), signal.SIGKILL)


def clean_stale(own: bool = False) -> None:
    """Remove namespaces and links that a dead earlier run (our prefix, its pid gone) left
    behind; with ``own``, also this process's (a Network is made afresh for each test)."""

    def stale(pid: int) -> bool:
        return (own and pid == os.getpid()) or not _pid_alive(pid)

    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NETNS_RE.match(name)
        if m and stale(int(m.group(1))):
            kill_netns_processes(name)
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = _LINK_RE.match(name)
        if m and stale(int(m.group(1))):
            ip("link", "del", name, check=False)


def _used_subnets() -> set[int]:
    used: set[int] = set()
    for line in ip("-o", "-4", "addr", "show", check=False).stdout.splitlines():
        m = re.search(r"inet (10\.88\.(\d+)\.\d+)/", line)
        if m:
            used.add(int(m.group(2)))
    for line in ip("-4", "route", "show", check=False).stdout.splitlines():
        m = re.match(r"10\.88\.(\d+)\.", line)
        if m:
            used.add(int(m.group(1)))
    return used


def _pick_subnet() -> int:
    used = _used_subnets()
    start = os.getpid() % 200 + 20
    for i in range(200):
        n = (start + i) % 200 + 20
        if n not in used:
            return n
    raise NetnsUnavailable("no free 10.88.N.0/24 subnet")


@dataclass
class Host:
    name: str
    """The host's name, as its agent registers it (host1, host2, ...)."""
    netns: str
    veth: str
    """The root-namespace end of the host's link (cut() sets it down)."""
    ip: str

    def netns_inode(self) -> int:
        return os.stat(f"/run/netns/{self.netns}").st_ino

    def owns_pid(self, pid: int) -> bool:
        """Whether the process lives inside this host's network namespace."""
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == self.netns_inode()
        except OSError:
            return False

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]


LOCK = (
    "/run/lock/podium-tests-netns.lock"
    if os.path.isdir("/run/lock")
    else "/tmp/podium-tests-netns.lock"
)
"""Held while a subnet is picked and claimed."""


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Network:
    """A bridge in the root namespace and hosts as namespaces wired to it."""

    subnet: int = 0
    """10.88.<subnet>.0/24, picked by create()."""
    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{PREFIX}br{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: where the server listens."""
        return f"10.88.{self.subnet}.1"

    def create(self, count: int) -> None:
        """Make the bridge and ``count`` hosts (one Network at a time per test process)."""
        clean_stale(own=True)
        with _locked():
            self.subnet = _pick_subnet()
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(1, count + 1):
            self.add_host(i)

    def add_host(self, i: int) -> Host:
        host = Host(
            name=f"host{i}",
            netns=f"{PREFIX}{self.tag}-h{i}",
            veth=f"{PREFIX}v{self.tag}h{i}",
            ip=f"10.88.{self.subnet}.{10 + i}",
        )
        ipaddress.ip_address(host.ip)  # i must keep it a valid address
        self.hosts[host.name] = host  # registered first, so destroy() removes a half-made one
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def cut(self, host: Host) -> None:
        """Unplug the host's cable: nothing passes either way until heal()."""
        ip("link", "set", host.veth, "down")

    def heal(self, host: Host) -> None:
        """Plug it back (the bridge runs without STP, so the port forwards at once)."""
        ip("link", "set", host.veth, "up")

    def destroy(self) -> None:
        """Kill whatever still runs in the namespaces, then remove them, the veths, the bridge."""
        for host in self.hosts.values():
            kill_netns_processes(host.netns)
        for host in self.hosts.values():
            ip("netns", "del", host.netns, check=False)
            ip("link", "del", host.veth, check=False)  # usually gone with its peer already
        ip("link", "del", self.bridge, check=False)


def wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.05)
