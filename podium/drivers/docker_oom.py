"""Reliable OOM reports for Docker containers on cgroup v1 (the ``cgroupfs`` driver).

Why: Docker 20.10 on cgroup v1 loses ``State.OOMKilled`` for a good share of the
containers that are OOM-killed together (measured here: 5-8 of 24 parallel
OOM kills; the engine's ``oom`` event was missing for 1-6 of them).  Two races:
dockerd applies the exit before the OOM (the flag is overwritten with false
even though the ``oom`` event is emitted), and containerd drops the OOM
notification altogether when the container's cgroup has already been removed
by the time it reads its eventfd.  Neither can be repaired after the fact: the
container's cgroup, with its ``memory.oom_control`` counter, is gone when the
exit is known.

What this module does instead: each container gets a parent cgroup of
Podium's own, ``/podium-docker/<container name>`` (Docker's ``cgroup_parent``),
which holds the task's memory limit; the container's own limit is set a little
higher (:data:`CHILD_SLACK`), so the kernel's charge always fails at the parent
first and the OOM happens in Podium's cgroup.  Before the container starts, an
eventfd is registered on the parent's ``memory.oom_control``
(``cgroup.event_control``); the kernel signals it on every OOM in the parent.
The counter lives in the eventfd, which the agent holds, so it is read after
the exit without any race: 24 of 24 and 30 of 30 parallel OOM kills were
reported, and none of the controls that exited or were killed otherwise.

After an agent restart the registration is made again by ``recover``; an OOM
that happened while no agent held it is recognised by the parent's
``memory.failcnt`` / ``memory.memsw.failcnt``, or its peak usage standing at its
limit (the limit was hit), together with a SIGKILL death the agent did not send.  The parent cgroups are removed in every controller
hierarchy (runc creates the path in each) by ``release``.

Anywhere else (cgroup v2, the ``systemd`` cgroup driver, a rootless engine, an
agent that cannot write the cgroup tree) :meth:`OomWatch.available` is False
and the driver falls back to the engine's flag and ``oom`` events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from podium.drivers.cgroups import parse_mountinfo

log = logging.getLogger(__name__)

PARENT_ROOT = "podium-docker"
"""Directory, in every cgroup hierarchy, under which the containers' parents live."""
CHILD_SLACK = 1024 * 1024
"""How much higher the container's own limit is than its parent's (≥ the kernel's
charge batch of 64 pages, so a charge never fails at the container first)."""
DOCKER_MIN_MEMORY = 6 * 1024 * 1024
"""The engine refuses memory limits below this."""


def child_limit(limit: int) -> int:
    """The container's own memory limit for a parent limited to ``limit`` bytes."""
    return max(DOCKER_MIN_MEMORY, limit + CHILD_SLACK)


@dataclass
class _Registration:
    eventfd: int
    control: int

    def close(self) -> None:
        for fd in (self.eventfd, self.control):
            with contextlib.suppress(OSError):
                os.close(fd)


class OomWatch:
    """Parent cgroups with OOM eventfds, one per container name."""

    def __init__(self, mountinfo: str = "/proc/self/mountinfo") -> None:
        self._mountinfo = mountinfo
        self._lock = threading.Lock()
        self._regs: dict[str, _Registration] = {}
        self._mounts: list[str] | None = None
        self._memory: str | None = None
        self.disabled_reason: str | None = None

    # ------------------------------------------------------------------ set-up
    def configure(self, cgroup_driver: str, cgroup_version: str) -> None:
        """Decide, once, whether parents can be used with this engine."""
        if self._mounts is not None or self.disabled_reason is not None:
            return
        if cgroup_version != "1" or cgroup_driver != "cgroupfs":
            self.disabled_reason = (
                f"engine uses cgroup v{cgroup_version} with the {cgroup_driver} driver"
            )
            return
        try:
            v1, v2 = parse_mountinfo(Path(self._mountinfo).read_text())
        except OSError as exc:
            self.disabled_reason = f"cannot read {self._mountinfo}: {exc}"
            return
        memory = v1.get("memory")
        if memory is None or not os.access(memory, os.W_OK):
            self.disabled_reason = "no writable cgroup v1 memory hierarchy"
            return
        if not os.path.exists(os.path.join(memory, "cgroup.event_control")):
            self.disabled_reason = "the kernel has no cgroup.event_control"
            return
        self._memory = memory
        self._mounts = sorted(set(v1.values()) | ({v2} if v2 else set()))

    def disable(self, reason: str) -> None:
        log.warning("docker: OOM reports fall back to the engine's flag: %s", reason)
        self._memory = None
        self.disabled_reason = reason

    @property
    def available(self) -> bool:
        return self._memory is not None

    @staticmethod
    def cgroup_parent(name: str) -> str:
        """Docker's ``cgroup_parent`` for the container named ``name``."""
        return f"/{PARENT_ROOT}/{name}"

    def memory_dir(self, name: str) -> str | None:
        return None if self._memory is None else os.path.join(self._memory, PARENT_ROOT, name)

    # ------------------------------------------------------------------ per container
    def prepare(self, name: str, limit: int) -> str:
        """Create (or reuse) the parent with ``limit`` bytes and watch it; returns its
        ``cgroup_parent``.  Raises OSError when the cgroup cannot be made."""
        path = self.memory_dir(name)
        assert path is not None
        os.makedirs(path, exist_ok=True)
        _write(os.path.join(path, "memory.limit_in_bytes"), str(limit))
        # memory + swap: not below the plain limit; absent without swap accounting
        with contextlib.suppress(OSError):
            _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit))
        for counter in (  # a reused parent: forget its earlier failures and peaks
            "memory.failcnt",
            "memory.memsw.failcnt",
            "memory.max_usage_in_bytes",
            "memory.memsw.max_usage_in_bytes",
        ):
            with contextlib.suppress(OSError):
                _write(os.path.join(path, counter), "0")
        self.watch(name)
        return self.cgroup_parent(name)

    def watch(self, name: str) -> bool:
        """(Re-)register the OOM eventfd on an existing parent; False when it is gone."""
        path = self.memory_dir(name)
        if path is None:
            return False
        try:
            control = os.open(os.path.join(path, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            _write(os.path.join(path, "cgroup.event_control"), f"{eventfd} {control}")
        except OSError:
            os.close(eventfd)
            os.close(control)
            return False
        with self._lock:
            old = self._regs.pop(name, None)
            self._regs[name] = _Registration(eventfd, control)
        if old is not None:
            old.close()
        return True

    def watching(self, name: str) -> bool:
        with self._lock:
            return name in self._regs

    def oom_count(self, name: str) -> int | None:
        """OOMs in the parent since it was watched (the eventfd's counter, kept until
        :meth:`release`); None when this agent does not watch it."""
        with self._lock:
            reg = self._regs.get(name)
            if reg is None:
                return None
            try:
                count = int.from_bytes(os.read(reg.eventfd, 8), "little")
            except BlockingIOError:
                count = 0
            except OSError:
                return None
            if count:
                # keep the verdict for a second reader: put the count back
                with contextlib.suppress(OSError):
                    os.write(reg.eventfd, count.to_bytes(8, "little"))
            return count

    def limit_hit(self, name: str) -> bool:
        """Whether usage reached the parent's limit (the fallback after a restart).

        The failure counters say so where the kernel keeps them; recent kernels (6.x
        here) leave ``memory.failcnt`` at 0 on cgroup v1 parents even after an OOM in
        them, and count ``oom_kill`` only in the victim's own (removed) cgroup, so the
        peak usage standing at the limit is the signal that remains."""
        path = self.memory_dir(name)
        if path is None:
            return False
        for counter in ("memory.failcnt", "memory.memsw.failcnt"):
            with contextlib.suppress(OSError, ValueError):
                if int(Path(path, counter).read_text().strip() or 0) > 0:
                    return True
        for kind in ("memory", "memory.memsw"):
            with contextlib.suppress(OSError, ValueError):
                limit = int(Path(path, f"{kind}.limit_in_bytes").read_text().strip())
                peak = int(Path(path, f"{kind}.max_usage_in_bytes").read_text().strip())
                if peak >= limit:
                    return True
        return False

    def has_container(self, name: str, container_id: str) -> bool:
        path = self.memory_dir(name)
        return path is not None and os.path.isdir(os.path.join(path, container_id))

    def release(self, name: str) -> None:
        """Stop watching and remove the parent from every hierarchy (once the container
        is gone; a parent still in use stays)."""
        with self._lock:
            reg = self._regs.pop(name, None)
        if reg is not None:
            reg.close()
        for mount in self._mounts or []:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(mount, PARENT_ROOT, name))

    def leftovers(self, older_than: float = 0.0) -> list[str]:
        """Names of the parents present in any hierarchy, made at least ``older_than``
        seconds ago."""
        names: set[str] = set()
        cutoff = time.time() - older_than
        for mount in self._mounts or []:
            with contextlib.suppress(OSError):
                for entry in os.scandir(os.path.join(mount, PARENT_ROOT)):
                    with contextlib.suppress(OSError):
                        if entry.is_dir() and entry.stat().st_ctime <= cutoff:
                            names.add(entry.name)
        return sorted(names)

    def close(self) -> None:
        with self._lock:
            regs, self._regs = list(self._regs.values()), {}
        for reg in regs:
            reg.close()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
