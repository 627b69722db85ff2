"""A service's ``volumes``, ``tmpfs``, ``secrets`` and ``configs`` → docker mounts.

Apart from :mod:`podium.spec.compose_service` because every option here is
either carried over or named in a warning, and there are many:

* binds create a missing host directory (``create_host_path``), as Compose's
  short syntax always does and its long syntax does unless
  ``bind.create_host_path: false`` (compose-go's default is ``true``, and
  ``docker compose`` creates the path for both forms);
* ``nocopy`` (short flag or ``volume.nocopy``) and tmpfs ``size`` / ``mode``
  (long ``tmpfs:`` or the short ``/run:size=64m,mode=1777``) reach the Engine;
* SELinux relabelling (``z``/``Z``, ``bind.selinux``), bind propagation,
  ``volume.subpath``, tmpfs flags (``noexec``, ``uid=``...) and a secret's
  ``mode``/``uid``/``gid`` are not supported by the docker driver: each is
  named in a warning;
* ``cached``, ``delegated`` and ``consistent`` are Docker Desktop hints that the
  Engine on Linux ignores as well, so they are accepted quietly.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from podium.spec.compose_context import Skip
from podium.spec.compose_values import (
    VolumeSpec,
    is_path,
    parse_mode,
    parse_tmpfs,
    parse_volume,
    size_mb,
)
from podium.spec.messages import describe, suggest

if TYPE_CHECKING:
    from podium.spec.compose_service import ServiceConverter
    from podium.spec.locations import PathKey

LONG_VOLUME_KEYS = (
    "type",
    "source",
    "target",
    "read_only",
    "bind",
    "volume",
    "tmpfs",
    "consistency",
)
_TYPE_OPTIONS = {
    "bind": ("propagation", "create_host_path", "selinux"),
    "volume": ("nocopy", "subpath"),
    "tmpfs": ("size", "mode"),
}
_PROPAGATION = {"shared", "rshared", "slave", "rslave", "private", "rprivate"}
_DESKTOP_HINTS = {"cached", "delegated", "consistent"}


def convert_volumes(svc: ServiceConverter, value: object) -> None:
    c = svc.c
    if not isinstance(value, list):
        c.fail(svc.at("volumes"), f"expected a list of volumes, got {describe(value)}")
    for i, item in enumerate(value):
        path = svc.at("volumes", i)
        with contextlib.suppress(Skip):
            if isinstance(item, dict):
                _long_volume(svc, path, item)
            else:
                spec = c.parsed(path, parse_volume, c.string(path, item, numbers=False))
                _short_volume(svc, path, spec)


def _short_volume(svc: ServiceConverter, path: PathKey, spec: VolumeSpec) -> None:
    mount = _mount(svc, path, spec.type, spec.source, spec.target, spec.read_only)
    where = f"service {svc.name!r}: volume {spec.source or ''}:{spec.target}"
    for flag in spec.flags:
        if flag == "nocopy":
            if mount["type"] == "volume":
                mount["nocopy"] = True
            else:
                svc.c.warn(f"{where}: nocopy applies to named volumes only and was ignored")
        elif flag in ("z", "Z"):
            svc.c.warn(
                f"{where}: the SELinux label flag {flag!r} was ignored (the docker driver "
                "mounts without relabelling; label the host path yourself where SELinux enforces)"
            )
        elif flag in _PROPAGATION:
            svc.c.warn(f"{where}: bind propagation {flag!r} was ignored (Docker's rprivate)")
    if mount["type"] == "bind":
        mount["create_host_path"] = True  # the short syntax always does, as `docker run -v`
    svc.mounts.append(mount)


def _long_volume(svc: ServiceConverter, path: PathKey, item: dict[str, Any]) -> None:
    c = svc.c
    for key in item:
        if key not in LONG_VOLUME_KEYS:
            close = suggest(str(key), list(LONG_VOLUME_KEYS))
            c.err(
                (*path, key),
                f"unknown volume field {key!r}",
                f"did you mean {close!r}?" if close else None,
                key=True,
            )
    kind = c.string((*path, "type"), item.get("type") or "volume")
    if kind not in ("volume", "bind", "tmpfs"):
        c.fail(
            (*path, "type"),
            f"volume type {kind!r} is not supported: use volume, bind or tmpfs",
        )
    if item.get("target") in (None, ""):
        c.fail(path, "a volume needs target: (the path in the container)")
    target = c.string((*path, "target"), item["target"], numbers=False)
    source = item.get("source")
    source = None if source in (None, "") else c.string((*path, "source"), source, numbers=False)
    read_only = c.boolean((*path, "read_only"), item.get("read_only", False))
    if kind == "bind" and not source:
        c.fail(path, "a bind volume needs source: (a path on the node)")
    if kind == "tmpfs" and source:
        c.fail((*path, "source"), "a tmpfs volume has no source", key=True)
    options: dict[str, dict[str, Any]] = {}
    for section in ("bind", "volume", "tmpfs"):
        if item.get(section) is None:
            continue
        body = c.mapping((*path, section), item[section])
        for key in body:
            if key not in _TYPE_OPTIONS[section]:
                close = suggest(str(key), list(_TYPE_OPTIONS[section]))
                c.err(
                    (*path, section, key),
                    f"unknown {section} option {key!r}",
                    f"did you mean {close!r}?" if close else None,
                    key=True,
                )
        effective = "bind" if kind == "volume" and source and is_path(source) else kind
        if section != effective and body:
            c.err(
                (*path, section),
                f"{section}: options apply to a {section} volume, and this one is a {effective}",
                key=True,
            )
            continue
        options[section] = body
    mount = _mount(svc, path, kind, source, target, read_only)
    where = f"service {svc.name!r}: volume {source or ''}:{target}"
    if mount["type"] == "bind":
        bind = options.get("bind", {})
        create = bind.get("create_host_path")
        if create in (None, "") or c.boolean((*path, "bind", "create_host_path"), create):
            mount["create_host_path"] = True
        if bind.get("propagation") not in (None, "", "rprivate"):
            c.warn(f"{where}: bind.propagation {bind['propagation']!r} was ignored (rprivate)")
        if bind.get("selinux") not in (None, ""):
            c.warn(
                f"{where}: bind.selinux {bind['selinux']!r} was ignored (the docker driver "
                "mounts without relabelling)"
            )
    elif mount["type"] == "volume":
        volume = options.get("volume", {})
        nocopy = volume.get("nocopy")
        if nocopy not in (None, "") and c.boolean((*path, "volume", "nocopy"), nocopy):
            mount["nocopy"] = True
        if volume.get("subpath") not in (None, ""):
            c.warn(
                f"{where}: volume.subpath was ignored (the docker driver mounts the whole "
                "volume); mount it elsewhere and link the subdirectory"
            )
    else:
        tmpfs = options.get("tmpfs", {})
        if tmpfs.get("size") not in (None, ""):
            mount["size"] = c.parsed((*path, "tmpfs", "size"), size_mb, tmpfs["size"])
        if tmpfs.get("mode") not in (None, ""):
            mount["mode"] = c.parsed((*path, "tmpfs", "mode"), parse_mode, tmpfs["mode"])
    svc.mounts.append(mount)


def _mount(
    svc: ServiceConverter,
    path: PathKey,
    kind: str,
    source: str | None,
    target: str,
    read_only: bool,
) -> dict[str, Any]:
    c = svc.c
    mount: dict[str, Any] = {"type": kind, "target": target}
    if read_only:
        mount["readonly"] = True
    if kind == "bind":
        assert source is not None
        mount["source"] = c.local_path(source)
    elif kind == "volume" and source:
        if is_path(source):
            mount["type"] = "bind"
            mount["source"] = c.local_path(source)
        elif source not in svc.shared.volumes:
            declared = list(svc.shared.volumes)
            close = suggest(source, declared)
            c.fail(
                path,
                f"service {svc.name!r} uses volume {source!r}, which is not declared "
                "under the top-level volumes:",
                f"did you mean {close!r}?" if close else f"add volumes: {{{source}: {{}}}}",
            )
        else:
            mount["source"] = svc.shared.volumes[source]
    return mount


def convert_tmpfs(svc: ServiceConverter, value: object) -> None:
    """``tmpfs: /run`` or a list, each ``PATH[:OPTIONS]`` as ``docker run --tmpfs`` takes."""
    c = svc.c
    for i, item in enumerate(c.strings(svc.at("tmpfs"), value)):
        path = svc.at("tmpfs", i) if isinstance(value, list) else svc.at("tmpfs")
        try:
            target, options = c.parsed(path, parse_tmpfs, item)
        except Skip:
            continue
        mount: dict[str, Any] = {"type": "tmpfs", "target": target}
        ignored = []
        for key, val in options.items():
            try:
                if key == "size":
                    mount["size"] = c.parsed(path, size_mb, val)
                elif key == "mode":
                    mount["mode"] = c.parsed(path, parse_mode, val)
                elif key == "ro":
                    mount["readonly"] = True
                elif key != "rw":
                    ignored.append(f"{key}={val}" if val else key)
            except Skip:
                continue
        if ignored:
            c.warn(
                f"service {svc.name!r}: tmpfs {target}: {', '.join(ignored)} ignored (the "
                "docker driver sets a tmpfs's size, mode and read-only only)"
            )
        svc.mounts.append(mount)


def convert_files(svc: ServiceConverter, kind: str, value: object) -> None:
    """``secrets`` / ``configs`` of a service: read-only binds of the declared files."""
    c = svc.c
    if not isinstance(value, list):
        c.fail(svc.at(kind), f"expected a list of {kind}, got {describe(value)}")
    table = svc.shared.secrets if kind == "secrets" else svc.shared.configs
    declared = set(c.data.get(kind) or {}) if isinstance(c.data.get(kind), dict) else set()
    allowed = ("source", "target", "uid", "gid", "mode")
    for i, item in enumerate(value):
        path = svc.at(kind, i)
        try:
            if isinstance(item, dict):
                for key in item:
                    if key not in allowed:
                        close = suggest(str(key), list(allowed))
                        c.err(
                            (*path, key),
                            f"unknown {kind[:-1]} field {key!r}",
                            f"did you mean {close!r}?" if close else None,
                            key=True,
                        )
                source = c.string((*path, "source"), item.get("source"), numbers=False)
                target = item.get("target")
                target = None if target in (None, "") else c.string((*path, "target"), target)
                owner = [k for k in ("mode", "uid", "gid") if item.get(k) not in (None, "")]
                if owner:
                    c.warn(
                        f"service {svc.name!r}: {kind[:-1]} {source!r}: "
                        f"{', '.join(owner)} ignored; the file is bind-mounted read-only "
                        "with its owner and mode on the node (set them there)"
                    )
            else:
                source, target = c.string(path, item, numbers=False), None
            if source not in table:
                if source not in declared:
                    c.err(
                        path,
                        f"{kind[:-1]} {source!r} is not declared under the top-level {kind}:",
                    )
                continue  # a declared one that is not a file had its own error
            if kind == "secrets":
                where = target or source
                where = where if where.startswith("/") else f"/run/secrets/{where}"
            else:
                where = target or f"/{source}"
            svc.mounts.append(
                {"type": "bind", "source": table[source], "target": where, "readonly": True}
            )
        except Skip:
            continue
