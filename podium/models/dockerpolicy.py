"""What a node's docker driver lets a container have: host binds, added capabilities,
privileged mode.

Why here, in ``models``: the same rules decide twice.  The scheduler filters out a
node whose driver would refuse a task (so ``job status`` says which nodes would allow
it), and the driver itself refuses whatever slips through (an older server, a node
whose settings changed).  Both read one :class:`DockerPolicy`: the agent advertises
it as ``driver.docker.*`` attributes, the scheduler reads it back from them.

Defaults follow Nomad's docker plugin: host volumes off (``volumes.enabled =
false``), ``allow_caps`` Docker's default capability set, privileged off.  A bind
whose source stays inside the allocation's own directory is no host volume and is
always allowed (Nomad allows alloc-dir-relative paths the same way); a named
(engine-managed) volume is not a host path either and is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podium.models.taskconfig import DockerConfig

DEFAULT_CAPS = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
"""Docker's default capability set (and Nomad's default ``allow_caps``)."""

ATTR_VOLUMES = "volumes.enabled"
ATTR_VOLUME_ALLOW = "volumes.allow"
ATTR_CAPS = "allow_caps"
ATTR_PRIVILEGED = "privileged.enabled"
OUTSIDE_TASK_DIR = "<outside the task dir>"
"""How the scheduler names a relative bind that climbs out of the task dir (``../..``):
where it lands is only known on the node, so it counts as a host volume."""


def normalize_cap(name: str) -> str:
    """``cap_sys_admin``, ``CAP_SYS_ADMIN`` and ``SYS_ADMIN`` are one capability."""
    cap = name.strip().upper()
    return cap[4:] if cap.startswith("CAP_") else cap


def parse_caps(value: str | Iterable[str]) -> frozenset[str]:
    """A capability list (``"CHOWN,NET_ADMIN"`` or a list of names), normalized."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return frozenset(normalize_cap(c) for c in items if c.strip())


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class DockerNeeds:
    """What one docker task asks of the node beyond an ordinary container."""

    host_paths: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()
    privileged: bool = False

    @classmethod
    def of(
        cls, cfg: DockerConfig, task_dir: str | None = None, alloc_dir: str | None = None
    ) -> DockerNeeds:
        """The needs of ``cfg``.  With ``task_dir`` (on the node) relative sources are
        resolved against it, symlinks included, and a source that stays inside
        ``alloc_dir`` (the allocation's whole directory) is no host path; without it
        (the scheduler) a relative source is a host path only when it climbs out."""
        sources: list[str] = []
        for spec in cfg.volumes:
            src = spec.split(":")[0]
            if src.startswith(("/", ".")) or "/" in src:
                sources.append(src)
        sources += [m.source or "" for m in cfg.mounts if m.type == "bind"]
        paths: list[str] = []
        for src in sources:
            path = _host_path(src, task_dir, alloc_dir)
            if path is not None and path not in paths:
                paths.append(path)
        caps = tuple(dict.fromkeys(normalize_cap(c) for c in cfg.cap_add if c.strip()))
        return cls(host_paths=tuple(paths), caps=caps, privileged=cfg.privileged)

    @property
    def any(self) -> bool:
        return bool(self.host_paths or self.caps or self.privileged)


def _host_path(src: str, task_dir: str | None, alloc_dir: str | None) -> str | None:
    """The host path a bind source names, or None when it stays in the allocation."""
    if task_dir is None:
        if src.startswith("/"):
            return os.path.normpath(src)
        rel = os.path.normpath(src)
        return OUTSIDE_TASK_DIR if rel == ".." or rel.startswith("../") else None
    path = os.path.realpath(os.path.join(task_dir, src))
    root = os.path.realpath(alloc_dir) if alloc_dir else None
    if root is not None and (path == root or path.startswith(root + "/")):
        return None
    return path


@dataclass(frozen=True)
class DockerPolicy:
    """What a node's docker driver allows (``podium agent --docker-*``)."""

    volumes: bool = False
    volume_allow: tuple[str, ...] = ()
    """Host path prefixes binds may name; empty with ``volumes``: any path."""
    allow_caps: frozenset[str] = DEFAULT_CAPS
    """``ALL`` in it allows any capability."""
    privileged: bool = False

    def attributes(self) -> dict[str, str]:
        """The driver attributes that advertise this policy (``driver.docker.<key>``)."""
        return {
            ATTR_VOLUMES: "true" if self.volumes else "false",
            ATTR_VOLUME_ALLOW: ",".join(self.volume_allow),
            ATTR_CAPS: ",".join(sorted(self.allow_caps)),
            ATTR_PRIVILEGED: "true" if self.privileged else "false",
        }

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, str]) -> DockerPolicy | None:
        """The policy a node advertised; None when it advertised none (an agent older
        than these checks: its driver alone decides)."""
        if ATTR_VOLUMES not in attrs:
            return None
        allow = tuple(p for p in attrs.get(ATTR_VOLUME_ALLOW, "").split(",") if p)
        return cls(
            volumes=attrs[ATTR_VOLUMES] == "true",
            volume_allow=allow,
            allow_caps=parse_caps(attrs.get(ATTR_CAPS, "")),
            privileged=attrs.get(ATTR_PRIVILEGED) == "true",
        )

    def refusal(self, needs: DockerNeeds) -> str | None:
        """Why this node's docker driver would refuse ``needs`` (the first reason), or None.

        The text is a placement reason too: it is counted per node in ``job status``."""
        if needs.privileged and not self.privileged:
            return "docker: privileged containers are not allowed"
        for path in needs.host_paths:
            if not self.volumes or (
                self.volume_allow and not any(_under(path, p) for p in self.volume_allow)
            ):
                return f"docker: host volume {path} is not allowed"
        if "ALL" not in self.allow_caps:
            for cap in needs.caps:
                if cap not in self.allow_caps:
                    return f"docker: cap_add {cap} is not allowed"
        return None
