"""Task drivers: how the agent runs, watches, stops and re-attaches to tasks.

``raw_exec`` and ``exec`` run real processes under a tiny POSIX-sh shim that
outlives the agent (see ``README.md`` in this package); ``docker`` runs
containers through the Docker Engine API; ``mock`` only pretends.
"""

from __future__ import annotations

from podium.drivers.base import Driver, ExitResult, TaskContext, TaskHandle, TaskStats
from podium.drivers.docker import DockerDriver
from podium.drivers.exec import ExecDriver, ExecOptions
from podium.drivers.logrotate import log_files, read_log, rotate_if_needed
from podium.drivers.mock import MockDriver
from podium.drivers.process import ProcessDriver
from podium.drivers.procfs import raise_nofile_limit
from podium.drivers.raw_exec import RawExecDriver
from podium.models.dockerpolicy import DockerPolicy

__all__ = [
    "DockerDriver",
    "Driver",
    "ExecDriver",
    "ExecOptions",
    "ExitResult",
    "MockDriver",
    "ProcessDriver",
    "RawExecDriver",
    "TaskContext",
    "TaskHandle",
    "TaskStats",
    "builtin_drivers",
    "log_files",
    "raise_nofile_limit",
    "read_log",
    "rotate_if_needed",
]


def builtin_drivers(
    *,
    raw_exec_enabled: bool,
    cgroup_root: str | None = None,
    docker_allow_privileged: bool = False,
    docker_policy: DockerPolicy | None = None,
    exec_options: ExecOptions | None = None,
) -> dict[str, Driver]:
    """The drivers an agent offers, by name.

    ``raw_exec`` runs tasks unisolated as the agent's user, so it exists only
    when the agent's configuration enables it.  ``exec`` is always offered; its
    fingerprint says whether it works on this node (root, cgroups, namespaces).
    ``docker`` likewise: healthy when a Docker Engine answers.  ``exec_options``: the
    agent's ``--exec-*`` settings and its persisted uid leases (None: the defaults, leases
    in memory only).
    """
    raise_nofile_limit()
    drivers: dict[str, Driver] = {
        "docker": DockerDriver(allow_privileged=docker_allow_privileged, policy=docker_policy),
        "exec": ExecDriver(cgroup_root, options=exec_options),
        "mock": MockDriver(),
    }
    if raw_exec_enabled:
        drivers["raw_exec"] = RawExecDriver(cgroup_root)
    return drivers
