"""Host volumes as a node offers them: named directories an operator approved.

An agent declares them (``podium agent --host-volume data=/srv/data[,read_only]``) and
registers them with its node (:attr:`podium.models.node.Node.host_volumes`); a group
asks for one by name (``volumes:`` in the job file, :class:`podium.models.job.VolumeRequest`)
and its tasks mount it (``volume_mounts:``).  The scheduler places such a group only on
nodes that have every volume it asks for (docs/volumes.md).

This module holds the node side and the parsing of the agent's flag, so that the agent,
its config file and the tests share one reading of ``NAME=PATH[,OPTION...]``.
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict

VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
"""What a host volume may be called (it becomes part of ``PODIUM_VOLUME_<NAME>``)."""


class HostVolume(BaseModel):
    """One directory of the node that tasks may mount, as the node reports it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    path: str
    read_only: bool = False
    """The operator lets tasks only read it: a request to write is not placed here."""


def parse_host_volume(spec: str) -> tuple[str, HostVolume]:
    """``NAME=PATH[,read_only]`` as (name, volume); ValueError says what is wrong.

    ``PATH`` must be absolute; the only option is ``read_only`` (``ro`` also reads so).
    """
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"host volume {spec!r}: write NAME=PATH[,read_only]")
    check_volume_name(name, f"host volume {spec!r}")
    path, *options = rest.split(",")
    path = path.strip()
    if not path:
        raise ValueError(f"host volume {name!r}: missing path (write {name}=/some/dir)")
    read_only = False
    for option in options:
        opt = option.strip()
        if opt in ("read_only", "ro"):
            read_only = True
        elif opt in ("read_write", "rw"):
            read_only = False
        else:
            raise ValueError(
                f"host volume {name!r}: unknown option {opt!r} (the only one is read_only)"
            )
    return name, HostVolume(path=check_volume_path(path, name), read_only=read_only)


def check_volume_name(name: str, where: str) -> str:
    if not VOLUME_NAME_RE.match(name):
        raise ValueError(
            f"{where}: name {name!r} must start with a letter or digit and use only "
            "letters, digits, '_', '.' and '-' (at most 64 characters)"
        )
    return name


def check_volume_path(path: str, name: str) -> str:
    if not path.startswith("/") or "\0" in path or ".." in path.split("/"):
        raise ValueError(f"host volume {name!r}: path {path!r} must be absolute, without '..'")
    return os.path.normpath(path)


def parse_host_volumes(specs: list[str]) -> dict[str, HostVolume]:
    """Every ``--host-volume`` flag; a name given twice is an error."""
    out: dict[str, HostVolume] = {}
    for spec in specs:
        name, vol = parse_host_volume(spec)
        if name in out:
            raise ValueError(f"host volume {name!r} is declared twice")
        out[name] = vol
    return out


def volume_env_name(name: str) -> str:
    """``PODIUM_VOLUME_<NAME>``: the name upper-cased, '.' and '-' as '_'."""
    return "PODIUM_VOLUME_" + re.sub(r"[^A-Za-z0-9_]", "_", name).upper()
