"""``podium node status ID``: the node's host volumes and devices (docs/volumes.md,
docs/devices.md), as one table each; nothing when the node has neither."""

from __future__ import annotations

from rich.console import RenderableType
from rich.markup import escape

from podium.cli import render
from podium.models import Node


def volumes_table(node: Node) -> RenderableType | None:
    if not node.host_volumes:
        return None
    t = render.table("Host Volume", "Path", "Read Only", title="Host Volumes")
    for name, vol in sorted(node.host_volumes.items()):
        t.add_row(escape(name), escape(vol.path), "yes" if vol.read_only else "no")
    return t


def devices_table(node: Node) -> RenderableType | None:
    if not node.devices:
        return None
    t = render.table("Device", "Healthy", "Instances", "Attributes", title="Devices")
    for group in node.devices:
        healthy = sum(i.healthy for i in group.instances)
        t.add_row(
            escape(group.id),
            f"{healthy}/{len(group.instances)}",
            escape(", ".join(i.id for i in group.instances)),
            escape(", ".join(f"{k}={v}" for k, v in sorted(group.attributes.items()))),
        )
    return t
