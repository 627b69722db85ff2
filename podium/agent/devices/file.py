"""Devices described in a JSON file: a test and simulation aid (``--device-file``).

The file is read at every fingerprint, so a test may edit it (mark an instance
unhealthy) before an agent registers.  Its format (docs/devices.md,
:func:`podium.models.devices.parse_device_file`)::

    {"devices": [
      {"vendor": "nvidia", "type": "gpu", "name": "Fake T4",
       "attributes": {"memory": "15360"},
       "instances": [{"id": "GPU-fake-0", "index": "0"},
                     {"id": "GPU-fake-1", "index": "1", "healthy": false}]}
    ]}

Such devices are handed to tasks as real ones are, through the environment
(``NVIDIA_VISIBLE_DEVICES``, ``CUDA_VISIBLE_DEVICES``, ``PODIUM_DEVICES``), but never
as a Docker device request: the engine would look for GPUs that do not exist.
"""

from __future__ import annotations

from podium.models.devices import DeviceGroup, parse_device_file


def load_device_file(path: str) -> list[DeviceGroup]:
    """The file's device groups; ValueError saying what is wrong and where."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"device file {path}: {exc.strerror or exc}") from exc
    return parse_device_file(text, path)


class FilePlugin:
    name = "file"

    def __init__(self, path: str) -> None:
        self.path = path

    def fingerprint(self) -> list[DeviceGroup]:
        return load_device_file(self.path)
