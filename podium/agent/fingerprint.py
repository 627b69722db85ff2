"""What this machine is and offers: the attributes and resources a node registers with.

Attribute names follow Nomad's (``os.name``, ``cpu.arch``, ``kernel.version``,
``unique.hostname``, ``driver.<name>``) so constraints written for Nomad read the
same here.
"""

from __future__ import annotations

import os
import platform
import socket

import psutil

from podium.drivers.cgroups import core_mhz
from podium.models import DriverInfo, NodeResources


def _os_release() -> tuple[str, str]:
    try:
        data: dict[str, str] = {}
        with open("/etc/os-release") as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    data[k] = v.strip('"')
        return data.get("ID", platform.system().lower()), data.get("VERSION_ID", "")
    except OSError:
        return platform.system().lower(), ""


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def fingerprint_resources() -> NodeResources:
    cores = cpu_cores()
    return NodeResources(
        cpu=cores * core_mhz(),
        memory=int(psutil.virtual_memory().total / (1024 * 1024)),
    )


def fingerprint_attributes(drivers: dict[str, DriverInfo]) -> dict[str, str]:
    os_name, os_version = _os_release()
    uname = platform.uname()
    cores = cpu_cores()
    mhz = core_mhz()
    attrs = {
        "os.name": os_name,
        "os.version": os_version,
        "kernel.name": uname.system.lower(),
        "kernel.version": uname.release.split("-")[0],
        "kernel.release": uname.release,
        "cpu.arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
        "cpu.numcores": str(cores),
        "cpu.frequency": str(mhz),
        "cpu.totalcompute": str(cores * mhz),
        "memory.totalbytes": str(psutil.virtual_memory().total),
        "unique.hostname": socket.gethostname(),
        "podium.version": __import__("podium").__version__,
    }
    for name, info in drivers.items():
        if info.detected and info.healthy:
            attrs[f"driver.{name}"] = "1"
            for k, v in info.attributes.items():
                attrs[f"driver.{name}.{k}"] = v
    return attrs
