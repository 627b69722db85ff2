"""The root filesystem an ``exec`` task sees: a minimal tree, read-only, plus its own dirs.

Like Nomad's exec driver (a chroot of ``/bin``, ``/lib``, ``/usr``, ``/etc`` essentials),
but with nothing copied and no mount on the host:

* once per configuration, a **skeleton** directory is made on the host (root's, 0755,
  under ``/run/podium/exec-roots/<hash>``): an empty directory or file for every path
  to bind, the host's top-level symlinks (``/bin -> usr/bin``) as symlinks, ``proc/``,
  ``dev/`` (empty files for the device nodes, ``fd`` and ``std*`` symlinks), ``tmp/``;
* per task, an **fstab** (root's, 0600, outside anything the task can write) that the
  namespace's pid 1, still root, mounts with one ``mount --fstab F -a`` inside the task's
  own mount namespace (``--propagation private``): the skeleton onto itself read-only,
  the host paths bound read-only (``nosuid,nodev``), a fresh ``/proc``, the device nodes
  bound, tmpfs on ``/tmp`` and ``/dev/shm``, and the task's own directories read-write
  at the *same absolute paths* as on the host (so commands, ``PWD``, ``HOME`` and every
  ``PODIUM_*_DIR`` mean the same inside);
* then ``pivot_root`` into it and a lazy unmount of the old root, so the task's
  namespace holds no host mount at all (none kept busy, none reachable).

Nothing of this touches the host's mount table: every mount is made in the task's
private namespace and disappears with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from podium.errors import DriverError

DEFAULT_BASE = "/run/podium/exec-roots"
"""Where skeletons are made (one per configuration)."""

DEFAULT_CHROOT: tuple[str, ...] = (
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pki/tls/certs",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/timezone",
)
"""What a task sees of the host by default (those that exist): programs and libraries,
name resolution, certificates, time zone.  Never shadow, gshadow, sudoers or ssh keys."""

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
OLD_ROOT = ".old-root"
"""The empty directory ``pivot_root`` puts the host's root on (unmounted at once)."""
RESERVED = ("/proc", "/dev", "/tmp", f"/{OLD_ROOT}")
"""Destinations the driver mounts itself: a bind may not name them."""


@dataclass(frozen=True)
class Bind:
    """A host path (``src``) seen read-only at ``dest`` in the task's root."""

    src: str
    dest: str


@dataclass(frozen=True)
class Volume:
    """A host volume (docs/volumes.md) bound at ``dest`` in the task's root."""

    src: str
    dest: str
    read_only: bool = False


def parse_bind(spec: str) -> Bind:
    """``PATH`` or ``PATH:DEST`` (both absolute, no ``..``); DriverError says what is wrong."""
    src, sep, dest = spec.partition(":")
    dest = dest if sep else src
    for what, path in (("PATH", src), ("DEST", dest)):
        if not path.startswith("/") or ".." in path.split("/") or "\0" in path:
            raise DriverError(f"exec chroot entry {spec!r}: {what} must be an absolute path")
    src, dest = os.path.normpath(src), os.path.normpath(dest)
    if dest == "/":
        raise DriverError(f"exec chroot entry {spec!r}: DEST must not be /")
    for reserved in RESERVED:
        if dest == reserved or dest.startswith(reserved + "/"):
            raise DriverError(f"exec chroot entry {spec!r}: {reserved} is the driver's own")
    return Bind(src, dest)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _escape(path: str) -> str:
    """A path as an fstab field (octal escapes for blanks and backslashes)."""
    out = []
    for ch in path:
        out.append(f"\\{ord(ch):03o}" if ch in " \t\n\\" else ch)
    return "".join(out)


class RootFs:
    """The skeleton for one list of binds, and the fstab of each task."""

    def __init__(self, binds: tuple[Bind, ...], base: str = DEFAULT_BASE) -> None:
        self.binds = binds
        key = "\n".join(f"{b.src}:{b.dest}" for b in binds)
        self.path = os.path.join(base, hashlib.sha256(key.encode()).hexdigest()[:16])
        self.base = base
        self.mounted: list[Bind] = []
        """The binds whose host path exists (the others are left out)."""
        self.links: dict[str, str] = {}
        """dest -> symlink target: host symlinks kept as symlinks (``/bin -> usr/bin``)."""
        self._dirs: set[str] = set()

    # ------------------------------------------------------------ the skeleton
    def ensure(self) -> str:
        """Make the skeleton unless it exists; its path."""
        self._classify()
        if os.path.isdir(self.path):
            return self.path
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.mkdir(tmp, 0o755)
        try:
            self._build(tmp)
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, self.path)
            except OSError:  # another agent built it meanwhile
                if not os.path.isdir(self.path):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.path

    def _classify(self) -> None:
        if self.mounted or self.links:
            return
        for b in self.binds:
            if b.src == b.dest and os.path.islink(b.src):
                self.links[b.dest] = os.readlink(b.src)
            elif os.path.exists(b.src):
                self.mounted.append(b)
                if os.path.isdir(b.src):
                    self._dirs.add(b.dest)

    def _build(self, root: str) -> None:
        def at(path: str) -> str:
            return os.path.join(root, path.lstrip("/"))

        for name in ("proc", "dev", "tmp", OLD_ROOT, "dev/shm"):
            os.makedirs(at(name), 0o755, exist_ok=True)
        for node in DEV_NODES:
            if os.path.exists(f"/dev/{node}"):
                open(at(f"dev/{node}"), "w").close()
        for name, target in DEV_LINKS.items():
            os.symlink(target, at(f"dev/{name}"))
        for dest, target in self.links.items():
            os.makedirs(os.path.dirname(at(dest)), 0o755, exist_ok=True)
            os.symlink(target, at(dest))
        for b in self.mounted:
            if b.dest in self._dirs:
                os.makedirs(at(b.dest), 0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(at(b.dest)), 0o755, exist_ok=True)
                open(at(b.dest), "a").close()
        for top, dirs, _files in os.walk(root):
            for d in dirs:
                if not os.path.islink(os.path.join(top, d)):
                    os.chmod(os.path.join(top, d), 0o755)

    # ------------------------------------------------------------ per task
    def fstab(self, own: list[str], volumes: Sequence[Volume] = ()) -> str:
        """The mounts for a task whose own (read-write) directories are ``own``, and the
        host volumes it mounts (bound last, at their destinations, read-only if asked)."""
        root = self.ensure()

        def line(src: str, dest: str, fstype: str, opts: str) -> str:
            target = os.path.join(root, dest.lstrip("/")) if dest != "/" else root
            return f"{_escape(src)} {_escape(target)} {fstype} {opts} 0 0\n"

        out = [line(root, "/", "none", "bind,ro,nosuid,nodev")]
        out += [line(b.src, b.dest, "none", "bind,ro,nosuid,nodev") for b in self.mounted]
        out.append(line("proc", "/proc", "proc", "nosuid,nodev,noexec"))
        for node in DEV_NODES:
            if os.path.exists(f"/dev/{node}"):
                out.append(line(f"/dev/{node}", f"/dev/{node}", "none", "bind,nosuid,noexec"))
        out.append(line("tmpfs", "/dev/shm", "tmpfs", "nosuid,nodev,noexec,mode=1777"))
        out.append(line("tmpfs", "/tmp", "tmpfs", "nosuid,nodev,mode=1777"))
        tops: list[str] = []
        for path in own:
            top = "/" + path.strip("/").split("/")[0]
            why = self._conflict(path, top)
            if why is not None:
                raise DriverError(why)
            if top != "/tmp" and top not in tops:
                tops.append(top)
                os.makedirs(os.path.join(root, top.lstrip("/")), 0o755, exist_ok=True)
                out.append(line("tmpfs", top, "tmpfs", "nosuid,nodev,mode=755,size=1m"))
        for path in own:
            out.append(line(path, path, "none", "rbind,nosuid,nodev,X-mount.mkdir"))
        for vol in volumes:
            dest = os.path.normpath(vol.dest)
            top = "/" + dest.strip("/").split("/")[0]
            why = self._volume_conflict(dest, top, own)
            if why is not None:
                raise DriverError(why, recoverable=False)
            if top != "/tmp" and top not in tops and not any(_under(dest, p) for p in own):
                tops.append(top)
                os.makedirs(os.path.join(root, top.lstrip("/")), 0o755, exist_ok=True)
                out.append(line("tmpfs", top, "tmpfs", "nosuid,nodev,mode=755,size=1m"))
            opts = "bind,nosuid,nodev,X-mount.mkdir" + (",ro" if vol.read_only else "")
            out.append(line(vol.src, dest, "none", opts))
        return "".join(out)

    def _volume_conflict(self, dest: str, top: str, own: list[str]) -> str | None:
        if any(_under(p, dest) for p in own):
            return f"volume destination {dest} would hide the task's own directories"
        for shown in [*(b.dest for b in self.mounted), *self.links, *RESERVED[:2]]:
            if _under(dest, shown) or _under(shown, top):
                return (
                    f"volume destination {dest} is where the exec driver's root shows "
                    f"{shown}: choose another destination (e.g. /data)"
                )
        return None

    def _conflict(self, path: str, top: str) -> str | None:
        for dest in [*(b.dest for b in self.mounted), *self.links, "/proc", "/dev"]:
            if _under(path, dest) or (_under(dest, top) and top != "/tmp"):
                return (
                    f"the task directory {path} is where the exec driver's root shows "
                    f"{dest}: give the agent a --data-dir outside {top}"
                )
        return None

    def visible(self, path: str, own: list[str]) -> bool:
        """Whether ``path`` (as the task names it) exists in the task's root."""
        path = os.path.normpath(path)
        if any(_under(path, d) for d in own):
            return True
        for dest, target in self.links.items():
            if _under(path, dest):
                inner = os.path.normpath(os.path.join(os.path.dirname(dest), target))
                return self.visible(inner + path[len(dest) :], own)
        for b in self.mounted:
            if _under(path, b.dest):
                host = b.src + path[len(b.dest) :]
                real = os.path.realpath(host)
                if real == host or b.src != b.dest:
                    return os.path.exists(host)
                return self.visible(real, own)  # a symlink inside: where it lands counts
        return False


def remove_quietly(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)
