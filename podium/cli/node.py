"""``podium node status``: the machines agents run on, and what they hold."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape
from rich.text import Text

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import NodeInfo, endpoints

app = typer.Typer(help="Inspect the nodes of the cluster.", no_args_is_help=True)


def _used(used: int, total: int, unit: str) -> str:
    return f"{used}/{total} {unit}"


@app.command("status")
def status(
    node_id: Annotated[
        str | None, typer.Argument(metavar="[NODE_ID]", help="A node id or unique prefix.")
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """List nodes with their load, or show one node: attributes, drivers, allocations."""
    with common.handle_errors(), common.make_client(address) as client:
        con = common.console()
        if node_id is None:
            listed = client.query(endpoints.nodes())
            if output == Output.JSON:
                common.print_json(listed.raw)
                return
            if not listed.value:
                con.print("No nodes.")
                return
            t = render.table(
                "ID", "Name", "DC", "Pool", "Status", "Eligibility", "Allocs", "CPU", "Memory"
            )
            for n in sorted(listed.value, key=lambda n: n.name):
                cap = n.capacity()
                t.add_row(
                    render.short(n.id),
                    escape(n.name),
                    escape(n.datacenter),
                    escape(n.node_pool),
                    render.status_text(n.status.value),
                    render.status_text(n.eligibility.value + (" (draining)" if n.drain else "")),
                    str(n.alloc_count),
                    _used(n.allocated.cpu, cap.cpu, "MHz"),
                    _used(n.allocated.memory, cap.memory, "MB"),
                )
            con.print(t)
            return

        got = client.query(endpoints.node(node_id))
        if output == Output.JSON:
            common.print_json(got.raw)
            return
        node = got.value
        allocs = client.node_allocations(node.id)
        con.print(
            render.stack(
                render.fields(_rows(node)),
                _drivers(node),
                _attributes(node),
                render.allocs_table(allocs, show_job=True) if allocs else Text("No allocations."),
            )
        )


def _rows(node: NodeInfo) -> list[tuple[str, object]]:
    cap = node.capacity()
    status = node.status.value
    if node.status_description:
        status += f" ({node.status_description})"
    return [
        ("ID", node.id),
        ("Name", node.name),
        ("Datacenter", node.datacenter),
        ("Pool", node.node_pool),
        ("Status", status),
        ("Eligibility", node.eligibility.value + (" (draining)" if node.drain else "")),
        ("HTTP Address", node.http_addr or "-"),
        ("Last Heartbeat", render.age(node.last_heartbeat)),
        ("Allocations", node.alloc_count),
        ("CPU", f"{node.allocated.cpu}/{cap.cpu} MHz used (reserved {node.reserved.cpu})"),
        (
            "Memory",
            f"{node.allocated.memory}/{cap.memory} MB used (reserved {node.reserved.memory})",
        ),
    ]


def _drivers(node: NodeInfo) -> RenderableType:
    if not node.drivers:
        return Text("No drivers.")
    t = render.table("Driver", "Detected", "Healthy", "Description", title="Drivers")
    for name, info in sorted(node.drivers.items()):
        t.add_row(
            escape(name),
            "yes" if info.detected else "no",
            Text("yes", style="green") if info.healthy else Text("no", style="red"),
            escape(info.description),
        )
    return t


def _attributes(node: NodeInfo) -> RenderableType | None:
    if not node.attributes and not node.meta:
        return None
    t = render.table("Attribute", "Value", title="Attributes")
    for key, value in sorted(node.attributes.items()):
        t.add_row(escape(key), escape(value))
    for key, value in sorted(node.meta.items()):
        t.add_row(escape(f"meta.{key}"), escape(value))
    return t
