"""NVIDIA GPUs, found with ``nvidia-smi --query-gpu`` (the driver's own tool).

One query lists every GPU the driver sees, one CSV line each::

    nvidia-smi --query-gpu=index,uuid,name,memory.total,pci.bus_id,driver_version \
        --format=csv,noheader,nounits
    0, GPU-5c3e8f3c-…, NVIDIA H100 80GB HBM3, 81559, 00000000:19:00.0, 550.54.15

GPUs of one model form one device group (vendor ``nvidia``, type ``gpu``, the model
as name) with attributes ``memory`` (MiB, from ``memory.total``) and
``driver_version``; each GPU is an instance whose id is its UUID (what
``NVIDIA_VISIBLE_DEVICES`` and ``CUDA_VISIBLE_DEVICES`` accept) and whose index is
``nvidia-smi``'s.  A GPU whose fields read ``[GPU is lost]``, ``[Unknown Error]`` or
the like is reported unhealthy.  No ``nvidia-smi`` on the PATH (or one that fails):
no GPUs -- the node simply has none.  NVML through a binding would add health events;
polling this at registration keeps the agent free of a compiled dependency.
"""

from __future__ import annotations

import shutil
import subprocess

from podium.models.devices import DeviceGroup, DeviceInstance

QUERY = "index,uuid,name,memory.total,pci.bus_id,driver_version"
TIMEOUT = 10.0


def parse_query(text: str) -> list[DeviceGroup]:
    """Device groups from ``nvidia-smi --query-gpu=QUERY --format=csv,noheader,nounits``."""
    groups: dict[str, DeviceGroup] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4:
            continue
        index, uuid, name, memory = fields[:4]
        driver = fields[5] if len(fields) > 5 else ""
        broken = next((f for f in fields if f.startswith("[") and f.endswith("]")), "")
        memory_ok = memory.isdigit()
        group = groups.get(name)
        if group is None:
            attrs = {"driver_version": driver} if driver and not driver.startswith("[") else {}
            if memory_ok:
                attrs["memory"] = memory
            group = groups[name] = DeviceGroup(
                vendor="nvidia", type="gpu", name=name, plugin="nvidia", attributes=attrs
            )
        elif memory_ok and "memory" not in group.attributes:
            group.attributes["memory"] = memory
        group.instances.append(
            DeviceInstance(
                id=uuid,
                index=index if index.isdigit() else "",
                healthy=not broken,
                health_description=broken.strip("[]"),
            )
        )
    return list(groups.values())


class NvidiaPlugin:
    name = "nvidia"

    def __init__(self, binary: str = "nvidia-smi") -> None:
        self.binary = binary

    def fingerprint(self) -> list[DeviceGroup]:
        path = shutil.which(self.binary)
        if path is None:
            return []
        try:
            done = subprocess.run(
                [path, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        if done.returncode != 0:  # no driver loaded, no GPU: nvidia-smi says so and fails
            return []
        return parse_query(done.stdout)
