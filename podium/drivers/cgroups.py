"""Control groups for the ``exec`` driver, on cgroup v1 and v2.

v2 has one tree (``/sys/fs/cgroup``) with every controller; v1 has a mount per
controller (``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/cpu``...), so a v1 task
gets one directory per controller.  Either way a task's cgroup is described
by the list of its directories, which is what the task handle stores; the
functions that act on an existing cgroup (:func:`pids`, :func:`oom_kills`,
:func:`kill`, :func:`remove`) look at which files a directory has, so they
need no layout object and work for a re-attaching agent as they are.

Layout objects take their roots as arguments, so both versions' logic is
tested against a temporary directory that fakes the control files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

CONTROLLERS = ("memory", "cpu")
"""What ``exec`` limits.  Both must be available, or the driver is unhealthy."""
MIB = 1024 * 1024
CFS_PERIOD_US = 100_000
"""The CFS period a CPU limit's quota is a share of (the kernel's default)."""
DEFAULT_MHZ = 2000


class CgroupUnavailable(Exception):
    """No usable cgroup hierarchy; the message says why (shown in the fingerprint)."""


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_shares(mhz: int) -> int:
    """v1 ``cpu.shares``: the MHz themselves, as Nomad does (kernel range 2..262144)."""
    return max(2, min(262144, mhz))


def cpu_weight(mhz: int) -> int:
    """v2 ``cpu.weight`` (1..10000) for the same MHz: runc's and systemd's mapping.

    ``1 + (shares - 2) * 9999 / 262142`` keeps the ratios between tasks that
    v1 shares give, so a 2,000 MHz task still gets about twice the CPU of a
    1,000 MHz one when both are busy.
    """
    return 1 + (cpu_shares(mhz) - 2) * 9999 // 262142


@functools.cache
def core_mhz() -> int:
    """Per-core speed in MHz: cpufreq where the kernel exposes it, else /proc/cpuinfo.

    A node's CPU is fingerprinted as cores x this, so a CPU limit of N MHz is
    N / core_mhz() cores' worth of time (:func:`cpu_quota_us`).
    """
    try:
        freq = psutil.cpu_freq()
        if freq is not None and freq.max:
            return int(freq.max)
        if freq is not None and freq.current:
            return int(freq.current)
    except (OSError, NotImplementedError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("cpu mhz"):
                    return int(float(line.split(":", 1)[1]))
    except OSError:
        pass
    return DEFAULT_MHZ


def cpu_quota_us(max_mhz: int, per_core_mhz: int, period_us: int = CFS_PERIOD_US) -> int:
    """The CFS quota per ``period_us`` for a hard limit of ``max_mhz``: that many
    cores' worth of time (``max_mhz / per_core_mhz``), at least the kernel's 1 ms."""
    return max(1000, max_mhz * period_us // max(1, per_core_mhz))


def _clean_name(name: str) -> str:
    return name.replace("/", "_").replace("\0", "_") or "_"


@dataclass
class CgroupV2:
    """The unified hierarchy mounted at ``mount``; tasks live under ``mount/root``."""

    mount: str
    root: str = "podium"
    version: int = 2

    def describe(self) -> str:
        return f"cgroup v2 at {self.mount}"

    def controllers(self) -> set[str]:
        return set((_read(os.path.join(self.mount, "cgroup.controllers")) or "").split())

    def check(self) -> None:
        missing = [c for c in CONTROLLERS if c not in self.controllers()]
        if missing:
            raise CgroupUnavailable(
                f"cgroup v2 at {self.mount} lacks the {', '.join(missing)} controller(s)"
            )

    def create(
        self, name: str, memory_mb: int | None, cpu_mhz: int, cpu_max_mhz: int | None = None
    ) -> list[str]:
        """Make (or reset) the task's cgroup with its limits; returns its directory.

        ``memory_mb`` is the hard memory limit (None: none), ``cpu_mhz`` the CPU
        weight and ``cpu_max_mhz`` (when given) a hard CPU limit as a CFS quota."""
        wanted = " ".join(f"+{c}" for c in CONTROLLERS if c in self.controllers())
        # Controllers must be enabled in every ancestor's subtree_control.
        path = self.mount
        for part in [p for p in self.root.split("/") if p]:
            _write(os.path.join(path, "cgroup.subtree_control"), wanted)
            path = os.path.join(path, part)
            os.makedirs(path, exist_ok=True)
        _write(os.path.join(path, "cgroup.subtree_control"), wanted)
        leaf = _fresh(os.path.join(path, _clean_name(name)))
        if memory_mb is not None:
            _write(os.path.join(leaf, "memory.max"), str(memory_mb * MIB))
            with contextlib.suppress(OSError):  # absent without swap accounting
                _write(os.path.join(leaf, "memory.swap.max"), "0")
        _write(os.path.join(leaf, "cpu.weight"), str(cpu_weight(cpu_mhz)))
        if cpu_max_mhz is not None:
            quota = cpu_quota_us(cpu_max_mhz, core_mhz())
            _write(os.path.join(leaf, "cpu.max"), f"{quota} {CFS_PERIOD_US}")
        return [leaf]


@dataclass
class CgroupV1:
    """Legacy hierarchies: ``mounts`` maps each controller to its mount point."""

    mounts: dict[str, str]
    root: str = "podium"
    version: int = 1

    def describe(self) -> str:
        return "cgroup v1 (" + ", ".join(f"{c} at {self.mounts[c]}" for c in CONTROLLERS) + ")"

    def check(self) -> None:
        missing = [c for c in CONTROLLERS if c not in self.mounts]
        if missing:
            raise CgroupUnavailable(
                f"no cgroup v1 hierarchy for the {', '.join(missing)} controller(s)"
            )

    def create(
        self, name: str, memory_mb: int | None, cpu_mhz: int, cpu_max_mhz: int | None = None
    ) -> list[str]:
        """Make (or reset) one directory per controller mount; returns them (the
        arguments as :meth:`CgroupV2.create`'s)."""
        dirs: dict[str, str] = {}
        for ctl in CONTROLLERS:
            base = os.path.join(self.mounts[ctl], self.root.strip("/"))
            dirs.setdefault(self.mounts[ctl], os.path.join(base, _clean_name(name)))
        made = []
        for mount, leaf in dirs.items():
            os.makedirs(os.path.dirname(leaf), exist_ok=True)
            made.append(_fresh(leaf))
            if mount == self.mounts["memory"] and memory_mb is not None:
                _write(os.path.join(leaf, "memory.limit_in_bytes"), str(memory_mb * MIB))
                # memsw (memory + swap) must come after, and not below, the plain limit.
                with contextlib.suppress(OSError):
                    _write(os.path.join(leaf, "memory.memsw.limit_in_bytes"), str(memory_mb * MIB))
            if mount == self.mounts["cpu"]:
                _write(os.path.join(leaf, "cpu.shares"), str(cpu_shares(cpu_mhz)))
                if cpu_max_mhz is not None:
                    quota = cpu_quota_us(cpu_max_mhz, core_mhz())
                    _write(os.path.join(leaf, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                    _write(os.path.join(leaf, "cpu.cfs_quota_us"), str(quota))
        return made


Cgroups = CgroupV1 | CgroupV2


def tree_root(cgroup_root: str | None, fs_root: str = "/sys/fs/cgroup") -> str:
    """The tasks' tree under each hierarchy (``podium`` by default): an agent's
    ``--cgroup-root`` relative to the hierarchy, given either way."""
    root = cgroup_root or "podium"
    if root.startswith(fs_root.rstrip("/") + "/"):
        root = root[len(fs_root.rstrip("/")) + 1 :]
    return root.strip("/") or "podium"


def _fresh(leaf: str) -> str:
    """Create ``leaf``; a leftover from an earlier run is emptied and recreated.

    Recreating resets the OOM counters, so a restarted task is not reported as
    OOM-killed because of its previous run.
    """
    if os.path.isdir(leaf):
        kill([leaf])
        with contextlib.suppress(OSError):
            os.rmdir(leaf)
    os.makedirs(leaf, exist_ok=True)
    return leaf


def parse_mountinfo(text: str) -> tuple[dict[str, str], str | None]:
    """v1 controller -> mount point, and the v2 mount point, from /proc/self/mountinfo."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fstype, options = tail[0], tail[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            for opt in options:
                v1.setdefault(opt, mount_point)
    return v1, v2


def detect(
    fs_root: str = "/sys/fs/cgroup",
    mountinfo: str = "/proc/self/mountinfo",
    root: str = "podium",
) -> Cgroups:
    """The hierarchy in use: v2 when ``fs_root`` is the unified tree, else v1 mounts.

    Raises :class:`CgroupUnavailable` (with the reason) when the memory and
    cpu controllers cannot both be used.
    """
    root = root.strip("/") or "podium"
    if os.path.exists(os.path.join(fs_root, "cgroup.controllers")):
        v2 = CgroupV2(mount=fs_root, root=root)
        v2.check()
        return v2
    text = _read(mountinfo)
    if text is None:
        raise CgroupUnavailable(f"cannot read {mountinfo}")
    mounts, _unified = parse_mountinfo(text)
    # A hybrid system's v2 mount (e.g. /sys/fs/cgroup/unified) usually holds no
    # controllers; the limits live in the v1 hierarchies.
    v1 = CgroupV1(mounts={c: mounts[c] for c in CONTROLLERS if c in mounts}, root=root)
    v1.check()
    return v1


# --------------------------------------------------------------------------- existing cgroups


def pids(dirs: list[str]) -> set[int]:
    """Every process in the task's cgroup(s)."""
    out: set[int] = set()
    for d in dirs:
        out.update(int(p) for p in (_read(os.path.join(d, "cgroup.procs")) or "").split())
    return out


UNLIMITED = 1 << 60
"""cgroup v1 writes "no limit" as a huge page-rounded number (9223372036854771712)."""


def memory_usage(dirs: list[str]) -> int | None:
    """Bytes the task's memory cgroup is charged (v2 ``memory.current``, v1
    ``memory.usage_in_bytes``), page cache included; None where neither can be read."""
    for d in dirs:
        for name in ("memory.current", "memory.usage_in_bytes"):
            text = _read(os.path.join(d, name))
            if text is not None and text.strip().isdigit():
                return int(text)
    return None


def memory_limit(dirs: list[str]) -> int | None:
    """The task's hard memory limit in bytes (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``); None when it has none."""
    for d in dirs:
        for name in ("memory.max", "memory.limit_in_bytes"):
            text = _read(os.path.join(d, name))
            if text is None:
                continue
            value = text.strip()
            if value.isdigit() and int(value) < UNLIMITED:
                return int(value)
            return None  # "max", or v1's no-limit number
    return None


def oom_kills(dirs: list[str]) -> int | None:
    """How many processes the kernel OOM-killed in the cgroup; None if it does not say.

    v2: ``memory.events`` ``oom_kill``; v1 (kernel 4.13+): ``memory.oom_control``.
    """
    for d in dirs:
        for name in ("memory.events", "memory.oom_control"):
            text = _read(os.path.join(d, name))
            if text is None:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return None


def memory_failcnt(dirs: list[str]) -> int:
    """v1: how often usage hit the limit (the fallback OOM hint on old kernels)."""
    for d in dirs:
        text = _read(os.path.join(d, "memory.failcnt"))
        if text is not None:
            return int(text.strip() or 0)
    return 0


def kill(dirs: list[str]) -> None:
    """SIGKILL everything in the cgroup (``cgroup.kill`` where the kernel has it)."""
    for d in dirs:
        killer = os.path.join(d, "cgroup.kill")
        if os.path.exists(killer) and os.path.exists(os.path.join(d, "cgroup.procs")):
            with contextlib.suppress(OSError):
                _write(killer, "1")
                continue
        for pid in pids([d]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def remove(dirs: list[str]) -> bool:
    """rmdir the task's cgroup(s); True when none is left (EBUSY while procs exit)."""
    done = True
    for d in dirs:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:
            done = False
    return done
