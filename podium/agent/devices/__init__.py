"""Device plugins: how an agent finds the devices (GPUs) its node offers.

A plugin is a small in-process object with a ``name`` and ``fingerprint()``, which
returns the :class:`~podium.models.devices.DeviceGroup` s it sees now (vendor, type,
model, attributes, instances with ids and health).  The agent asks every plugin when
it registers its node and merges their answers; a plugin that fails is logged and
contributes nothing (a broken ``nvidia-smi`` must not keep a node from joining).

Two plugins ship (docs/devices.md):

* :class:`~podium.agent.devices.nvidia.NvidiaPlugin` -- NVIDIA GPUs through
  ``nvidia-smi --query-gpu`` (no ``nvidia-smi``: no devices);
* :class:`~podium.agent.devices.file.FilePlugin` -- devices described in a JSON file
  (``podium agent --device-file``), a test and simulation aid: every test of device
  scheduling runs without a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from podium.models.devices import DeviceGroup

log = logging.getLogger(__name__)


class DevicePlugin(Protocol):
    name: str

    def fingerprint(self) -> list[DeviceGroup]:
        """The devices this plugin sees now (raises on a failure to look)."""
        ...


def fingerprint_devices(plugins: Iterable[DevicePlugin]) -> list[DeviceGroup]:
    """Every plugin's devices, each group tagged with its plugin; failures logged."""
    out: list[DeviceGroup] = []
    for plugin in plugins:
        try:
            groups = plugin.fingerprint()
        except Exception as exc:
            log.warning("device plugin %s failed: %s", plugin.name, exc)
            continue
        out.extend(g.model_copy(update={"plugin": plugin.name}) for g in groups)
    return out


def default_plugins(device_file: str | None) -> list[DevicePlugin]:
    """The NVIDIA plugin, and the file plugin when ``device_file`` is given."""
    from podium.agent.devices.file import FilePlugin
    from podium.agent.devices.nvidia import NvidiaPlugin

    plugins: list[DevicePlugin] = [NvidiaPlugin()]
    if device_file:
        plugins.append(FilePlugin(device_file))
    return plugins
