"""Devices (GPUs and the like) as nodes report them and allocations hold them.

An agent's device plugins (``podium.agent.devices``) fingerprint *device groups*: one
per vendor/type/model, each with its *instances* (one GPU each, by id) and attributes
(``memory`` in MiB, ...).  A task asks ``resources: {devices: [{name: nvidia/gpu,
count: 1}]}`` (:class:`podium.models.job.DeviceRequest`); the scheduler picks healthy
instances no other allocation holds on that node and records them on the allocation
(:class:`AllocatedDevices`), and the agent hands their ids to the task
(docs/devices.md).

A request's ``name`` is matched as Nomad matches it: ``type`` (``gpu``),
``vendor/type`` (``nvidia/gpu``) or ``vendor/type/model`` (``nvidia/gpu/Tesla T4``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DeviceInstance(BaseModel):
    """One device of a group (one GPU)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    """What the task is given: the GPU's UUID for NVIDIA (``GPU-…``)."""
    index: str = ""
    """The plugin's own index of it, when it has one (``nvidia-smi``'s ``index``)."""
    healthy: bool = True
    health_description: str = ""


class DeviceGroup(BaseModel):
    """Devices of one vendor, type and model on a node."""

    model_config = ConfigDict(extra="ignore")

    vendor: str
    type: str
    name: str
    """The model (``Tesla T4``)."""
    plugin: str = ""
    """Which plugin found them (``nvidia``, ``file``): drivers hand real NVIDIA GPUs to
    containers through the engine, simulated ones only through the environment."""
    attributes: dict[str, str] = Field(default_factory=dict)
    instances: list[DeviceInstance] = Field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.vendor}/{self.type}/{self.name}"

    def matches(self, wanted: str) -> bool:
        """Whether a request named ``wanted`` may be served by this group."""
        return name_matches(wanted, self.vendor, self.type, self.name)

    def attribute(self, target: str) -> str | None:
        """What ``${device.X}`` names on this group: ``vendor``, ``type``, ``model``
        (or ``name``), ``attr.<key>``; None when it has no such attribute."""
        if target.startswith("${") and target.endswith("}"):
            key = target[2:-1].strip()
        else:
            return target
        if not key.startswith("device."):
            return None
        key = key[7:]
        if key == "vendor":
            return self.vendor
        if key == "type":
            return self.type
        if key in ("model", "name"):
            return self.name
        if key.startswith("attr."):
            return self.attributes.get(key[5:])
        return None


def name_matches(wanted: str, vendor: str, type_: str, model: str) -> bool:
    parts = wanted.split("/")
    if len(parts) == 1:
        return parts[0] == type_
    if len(parts) == 2:
        return parts[0] == vendor and parts[1] == type_
    return parts[0] == vendor and parts[1] == type_ and "/".join(parts[2:]) == model


def valid_device_name(wanted: str) -> bool:
    parts = wanted.split("/")
    return len(parts) >= 1 and all(p.strip() for p in parts) and wanted.isprintable()


DEVICE_TARGET_KEYS = ("device.vendor", "device.type", "device.model", "device.name")


def valid_device_target(value: str) -> bool:
    """A literal, or ``${device.vendor|type|model|attr.<key>}``."""
    if "${" not in value:
        return True
    if not (value.startswith("${") and value.endswith("}")):
        return False
    key = value[2:-1].strip()
    return key in DEVICE_TARGET_KEYS or (key.startswith("device.attr.") and len(key) > 12)


class AllocatedDevices(BaseModel):
    """The instances of one device group a task of an allocation was given."""

    model_config = ConfigDict(extra="ignore")

    task: str
    vendor: str
    type: str
    name: str
    device_ids: list[str]
    indexes: list[str] = Field(default_factory=list)
    """The instances' plugin indexes, in the order of ``device_ids`` ("" when none)."""
    plugin: str = ""

    @property
    def id(self) -> str:
        return f"{self.vendor}/{self.type}/{self.name}"


class _DeviceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceGroup] = Field(default_factory=list)


def parse_device_file(text: str, source: str) -> list[DeviceGroup]:
    """The device groups of a ``--device-file`` (docs/devices.md); ValueError says what
    is wrong and where.  Pure: the agent and the CLI read the file."""
    import json

    from pydantic import ValidationError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"device file {source}: not JSON: {exc}") from exc
    try:
        parsed = _DeviceFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"device file {source}: {where}: {first['msg']}") from exc
    seen: set[tuple[str, str]] = set()
    for group in parsed.devices:
        for what, part in (("vendor", group.vendor), ("type", group.type), ("name", group.name)):
            slash = what != "name" and "/" in part
            if not part.strip() or slash or not part.isprintable():
                raise ValueError(
                    f"device file {source}: {group.id}: {what} {part!r} must be printable "
                    "and not empty (vendor and type without '/')"
                )
        for inst in group.instances:
            key = (group.id, inst.id)
            if not inst.id or key in seen:
                raise ValueError(
                    f"device file {source}: {group.id}: instance id {inst.id!r} is empty "
                    "or listed twice"
                )
            seen.add(key)
    return parsed.devices
