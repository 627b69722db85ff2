"""Compose's small value syntaxes, parsed: sizes, CPUs, ports, volumes, constraints.

Each parser takes what a compose file holds and returns plain data, or raises
``ValueError`` with a sentence meant for the file's author; the conversion in
:mod:`podium.spec.compose` adds the file, line and path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def size_bytes(value: object) -> int:
    """``"512m"``, ``"1g"``, ``"1.5GB"``, ``1048576`` (bytes) → bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '512m' or '1g', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"expected a size such as '512m' or '1g', got {value!r}")
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"{value!r} is not a size: write a number with b, k, m or g (512m, 1g)")
    return int(float(m.group(1)) * _UNIT[m.group(2).lower()])


def size_mb(value: object) -> int:
    """A size in whole megabytes (MiB), rounded up, at least 1."""
    return max(1, math.ceil(size_bytes(value) / 1024**2))


MHZ_PER_CPU = 1000


def cpus_mhz(value: object) -> int:
    """``"0.5"`` or ``2`` CPUs → MHz, at :data:`MHZ_PER_CPU` per CPU (at least 1)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number of CPUs such as '0.5', got {value!r}")
    try:
        cpus = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of CPUs such as '0.5' or 2, got {value!r}") from None
    if not math.isfinite(cpus) or cpus <= 0:
        raise ValueError(f"the number of CPUs must be greater than 0, got {value!r}")
    return max(1, round(cpus * MHZ_PER_CPU))


@dataclass(frozen=True)
class PortSpec:
    """One published or exposed port of a service."""

    target: int
    published: int | None = None
    host_ip: str = ""
    protocol: str = "tcp"


def _port_number(text: str, what: str) -> int:
    if "-" in text:
        raise ValueError(
            f"port ranges ({text!r}) are not supported yet: list each port on its own line"
        )
    if not text.isdigit():
        raise ValueError(f"{what} {text!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{what} {port} is out of range (1-65535)")
    return port


def parse_port(value: object) -> PortSpec:
    """The short syntax: ``"80"``, ``"8080:80"``, ``"127.0.0.1:8080:80/udp"``, ``"[::1]::80"``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a port such as '8080:80', got {value!r}")
    text = str(value).strip()
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
        protocol = protocol.lower()
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"unknown protocol {protocol!r}: use tcp or udp")
    host_ip = ""
    if text.startswith("["):
        close = text.find("]:")
        if close < 0:
            raise ValueError(f"{value!r}: an IPv6 address is written [addr]:published:target")
        host_ip, text = text[1:close], text[close + 2 :]
    parts = text.split(":")
    if len(parts) == 3 and not host_ip:
        host_ip = parts.pop(0)
    if len(parts) > 2 or (len(parts) == 3 and host_ip):
        raise ValueError(
            f"{value!r} is not a port: write [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL], "
            "e.g. 8080:80 or 127.0.0.1:8080:80/tcp"
        )
    target = _port_number(parts[-1], "container port")
    published = None
    if len(parts) == 2 and parts[0]:
        published = _port_number(parts[0], "published port")
    return PortSpec(target, published, host_ip, protocol)


def port_label(target: int, taken: set[str]) -> str:
    """``p<target>``, or ``p<target>_2``... when that label is taken."""
    label = f"p{target}"
    n = 2
    while label in taken:
        label = f"p{target}_{n}"
        n += 1
    return label


@dataclass(frozen=True)
class VolumeSpec:
    """One mount of a service: ``type`` bind, volume or tmpfs, with the short syntax's
    mode flags other than ``ro``/``rw`` (``nocopy``, ``z``, ``rshared``...) in ``flags``."""

    type: str
    target: str
    source: str | None = None
    read_only: bool = False
    flags: tuple[str, ...] = ()


VOLUME_FLAGS = frozenset(
    {"nocopy", "z", "Z", "cached", "delegated", "consistent"}
    | {"shared", "rshared", "slave", "rslave", "private", "rprivate"}
)
"""Mode flags the short syntax accepts after ``SOURCE:TARGET`` besides ``ro`` and ``rw``."""


def is_path(source: str) -> bool:
    return source.startswith(("/", ".", "~"))


def parse_volume(value: str) -> VolumeSpec:
    """The short syntax: ``"/data"``, ``"name:/data"``, ``"./src:/app:ro,z"``."""
    parts = value.split(":")
    if len(parts) == 1:
        if not parts[0].startswith("/"):
            raise ValueError(f"volume {value!r}: the container path must be absolute")
        return VolumeSpec("volume", parts[0])
    if len(parts) > 3 or not parts[0]:
        raise ValueError(
            f"volume {value!r} must be SOURCE:TARGET[:MODE], e.g. ./data:/data:ro or db:/var/lib/db"
        )
    source, target = parts[0], parts[1]
    if not target.startswith("/"):
        raise ValueError(f"volume {value!r}: the container path {target!r} must be absolute")
    read_only = False
    flags: list[str] = []
    if len(parts) == 3:
        for flag in parts[2].split(","):
            if flag == "ro":
                read_only = True
            elif flag in VOLUME_FLAGS:
                flags.append(flag)
            elif flag != "rw":
                raise ValueError(f"volume {value!r}: unknown mode {flag!r} (use ro or rw)")
    kind = "bind" if is_path(source) else "volume"
    return VolumeSpec(kind, target, source, read_only, tuple(flags))


def parse_tmpfs(value: str) -> tuple[str, dict[str, str]]:
    """``"/run"`` or ``"/run:size=64m,mode=1777,noexec"`` → the path and its options
    (a flag without ``=`` maps to ``""``)."""
    target, _, rest = value.partition(":")
    if not target.startswith("/"):
        raise ValueError(f"tmpfs {value!r}: the container path must be absolute")
    options: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, _, val = item.partition("=")
        options[key.strip()] = val.strip()
    return target, options


def parse_mode(value: object) -> int:
    """A file mode: an octal string (``"1777"``, ``"0o700"``) or a number as YAML read it."""
    if isinstance(value, bool):
        raise ValueError(f"expected a file mode such as '1777', got {value!r}")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError(f"{value!r} is not an octal file mode such as '1777'") from None
    else:
        raise ValueError(f"expected a file mode such as '1777', got {value!r}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode {value!r} is out of range (0-7777 octal)")
    return mode


_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_.\-/]+)\s*(==|!=)\s*(.*?)\s*$")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


_OSES = frozenset(
    {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos"}
    | {"aix", "android", "dragonfly", "plan9"}
)
_ARCHES = frozenset(
    {"amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "loong64"}
    | {"mips", "mipsle", "mips64", "mips64le", "wasm"}
)
_ARCH_ALIASES = {**_ARCH, "i386": "386", "i686": "386", "armhf": "arm", "armel": "arm"}


def parse_platform(text: str) -> tuple[str, str | None, str | None] | None:
    """``os[/arch[/variant]]`` (OCI's form, ``linux/arm64/v8``) → its parts, the
    architecture in Go's names as node attributes have it (x86_64 → amd64); ``None``
    when the text names no known OS and architecture."""
    parts = text.strip().lower().split("/")
    if len(parts) > 3 or parts[0] not in _OSES:
        return None
    arch = _ARCH_ALIASES.get(parts[1], parts[1]) if len(parts) > 1 and parts[1] else None
    if arch is not None and arch not in _ARCHES:
        return None
    variant = parts[2] if len(parts) > 2 and parts[2] else None
    return parts[0], arch, variant


def parse_constraint(text: str) -> dict[str, str] | None:
    """A Swarm placement constraint → a Podium constraint (as a dict), or ``None``
    when it always holds on a Podium node (``node.role == worker``)."""
    m = _CONSTRAINT.match(text)
    if m is None or not m.group(3):
        raise ValueError(
            f"{text!r} is not a placement constraint: write ATTRIBUTE == VALUE or "
            "ATTRIBUTE != VALUE, e.g. node.hostname == web-1"
        )
    key, op, value = m.group(1), m.group(2), m.group(3).strip("\"'")
    operator = "=" if op == "==" else "!="
    attribute: str
    if key == "node.hostname":
        attribute = "${node.name}"
    elif key == "node.id":
        attribute = "${node.id}"
    elif key.startswith("node.labels.") and len(key) > 12:
        attribute = "${meta." + key[12:] + "}"
    elif key == "node.platform.os":
        attribute = "${attr.kernel.name}"  # os.name is the distribution (debian), as in Nomad
    elif key == "node.platform.arch":
        attribute = "${attr.cpu.arch}"
        value = _ARCH.get(value, value)
    elif key == "node.role":
        # Every Podium node that runs work is what Swarm calls a worker.
        if (value == "worker") == (operator == "="):
            return None
        raise ValueError(
            f"{text!r} cannot hold: Podium has no manager nodes that run tasks "
            "(servers and agents are separate); drop the constraint or use node.labels"
        )
    else:
        raise ValueError(
            f"placement constraint {key!r} has no Podium equivalent: use node.hostname, "
            "node.id, node.labels.<key>, node.platform.os or node.platform.arch"
        )
    return {"attribute": attribute, "operator": operator, "value": value}


def parse_spread(text: str) -> str:
    """A Swarm ``spread=node.labels.zone`` preference → ``${meta.zone}``."""
    if text.startswith("node.labels.") and len(text) > 12:
        return "${meta." + text[12:] + "}"
    if text in ("node.hostname", "node.id"):
        return "${node.name}" if text == "node.hostname" else "${node.id}"
    raise ValueError(
        f"cannot spread over {text!r}: use node.labels.<key>, node.hostname or node.id"
    )


_PROJECT_BAD = re.compile(r"[^a-z0-9_\-]")
PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def sanitize_project(name: str) -> str:
    """A directory name as a project name: lower case, only ``a-z0-9_-``, as Compose does."""
    return _PROJECT_BAD.sub("", name.lower()).lstrip("_-")


_DNS_BAD = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def catalog_name(project: str, service: str) -> str | None:
    """The service catalog name of a Compose service: ``<project>-<service>`` as a DNS
    label (lower case, other characters as ``-``); None when it cannot be one."""
    name = _DNS_BAD.sub("-", f"{project}-{service}".lower()).strip("-")
    return name if _DNS_LABEL.match(name) else None
