"""What a task gets of its node's host volumes and of the devices it was given.

The runner builds every task's :class:`~podium.drivers.base.TaskContext`; this module
is the part of it that concerns volumes and devices, kept out of the runner so that
the rules sit in one place (docs/volumes.md, docs/devices.md):

* **mounts**: each of the task's ``volume_mounts`` resolved through the group's
  ``volumes`` to the host path this agent declared (``--host-volume``); read-only when
  the mount, the group's request or the node's volume says so.  A volume the agent no
  longer declares (its flags changed since the placement) fails the task with the
  reason rather than run it without its data.
* **environment**: ``PODIUM_VOLUME_<NAME>`` -- where the task finds the volume: the
  destination for exec and docker (inside its root), the host path for raw_exec (which
  has no root of its own); for devices ``NVIDIA_VISIBLE_DEVICES`` and
  ``CUDA_VISIBLE_DEVICES`` (the given NVIDIA GPUs' UUIDs, comma-separated; UUIDs rather
  than indexes because CUDA numbers GPUs in its own order) and ``PODIUM_DEVICES``, a
  JSON list of every device group given (``[{"device": "nvidia/gpu/Tesla T4", "ids":
  [...], "indexes": [...]}]``).
"""

from __future__ import annotations

import json

from podium.drivers.base import TaskMount
from podium.errors import DriverError
from podium.models import Allocation, Group
from podium.models.devices import AllocatedDevices
from podium.models.volumes import HostVolume, volume_env_name


def task_mounts(group: Group, task: str, host_volumes: dict[str, HostVolume]) -> list[TaskMount]:
    out: list[TaskMount] = []
    for mount in group.tasks[task].volume_mounts:
        request = group.volumes[mount.volume]
        have = host_volumes.get(request.source)
        if have is None:
            raise DriverError(
                f"volume {mount.volume!r}: this node declares no host volume "
                f"{request.source!r} (podium agent --host-volume)",
                recoverable=False,
            )
        out.append(
            TaskMount(
                volume=mount.volume,
                source=have.path,
                destination=mount.destination,
                read_only=mount.read_only or request.read_only or have.read_only,
            )
        )
    return out


def task_devices(alloc: Allocation, task: str) -> list[AllocatedDevices]:
    return [d for d in alloc.devices if d.task == task]


def extra_env(
    group: Group,
    task: str,
    driver: str,
    alloc: Allocation,
    host_volumes: dict[str, HostVolume],
) -> dict[str, str]:
    """The volume and device variables of one task (see the module's docstring)."""
    env: dict[str, str] = {}
    for mount in group.tasks[task].volume_mounts:
        request = group.volumes.get(mount.volume)
        have = host_volumes.get(request.source) if request is not None else None
        where = have.path if driver == "raw_exec" and have is not None else mount.destination
        env[volume_env_name(mount.volume)] = where
    given = task_devices(alloc, task)
    if given:
        nvidia = [d for g in given if g.vendor == "nvidia" for d in g.device_ids]
        if nvidia:
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(nvidia)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(nvidia)
        env["PODIUM_DEVICES"] = json.dumps(
            [{"device": g.id, "ids": g.device_ids, "indexes": g.indexes} for g in given],
            separators=(",", ":"),
        )
    return env
