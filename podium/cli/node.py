"""``podium node status``: the machines agents run on, and what they hold."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.text import Text

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.cli.node_devices import devices_table, volumes_table
from podium.client import Client, NodeInfo, endpoints
from podium.models import parse_duration

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
    with common.handle_errors(output=output), common.make_client(address) as client:
        con = common.console()
        if node_id is None:
            listed = client.query(endpoints.nodes())
            if output.structured:
                common.print_data(listed.raw, output)
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
        if output.structured:
            common.print_data(got.raw, output)
            return
        node = got.value
        allocs = client.node_allocations(node.id)
        con.print(
            render.stack(
                render.fields(_rows(node)),
                _drivers(node),
                _attributes(node),
                volumes_table(node),
                devices_table(node),
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
        ("Ports", ", ".join(str(p) for p in node.ports_in_use) or "-"),
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


@app.command("drain")
def drain(
    node_id: Annotated[str, typer.Argument(metavar="NODE", help="A node id, prefix or name.")],
    deadline: Annotated[
        str,
        typer.Option(
            "--deadline", help="How long allocations may take to leave; then all are stopped."
        ),
    ] = "1h",
    ignore_system: Annotated[
        bool, typer.Option("--ignore-system", help="Leave system allocations running.")
    ] = False,
    disable: Annotated[
        bool, typer.Option("--disable", help="Cancel a drain (the node becomes eligible).")
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Return once the drain is set.")] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
) -> None:
    """Move every allocation off a node (service ones a few at a time); it stays ineligible."""
    with common.handle_errors(), common.make_client(address) as client:
        con = common.console()
        try:
            seconds = parse_duration(deadline)
        except ValueError as exc:
            common.usage(f"--deadline: {exc}")
        node = client.node(node_id)
        client.drain_node(
            node.id, enable=not disable, deadline=seconds, ignore_system=ignore_system
        )
        if disable:
            con.print(f"Drain of node {escape(node.name)} cancelled; it is eligible again.")
            return
        con.print(
            f"Draining node {escape(node.name)} ({render.short(node.id)}), "
            f"deadline {escape(deadline)}."
        )
        if detach:
            return
        _follow_drain(client, node.id, con)


def _follow_drain(client: Client, node_id: str, con: Console) -> None:
    """Wait until the drain is done, saying how many allocations are left when that changes.

    On a terminal the count is redrawn on one line; without one, it is a new
    line per change, never the same line again at every answer of the server.
    """
    index = 0
    shown: int | None = None
    live = common.interactive()
    while True:
        result = client.query(endpoints.node(node_id), index=index, wait="5s")
        if result.index <= index:
            common.sleep(common.poll_interval)  # answered without a change: never spin
        index = result.index
        current = result.value
        if not current.drain:
            left = [
                a
                for a in client.node_allocations(node_id)
                if not a.terminal() and a.desired_status.value == "run"
            ]
            if live and shown is not None:
                con.print()  # end the redrawn line
            con.print(
                f"Node {escape(current.name)} drained"
                + (f"; {len(left)} system allocation(s) left running." if left else ".")
            )
            return
        if current.alloc_count == shown:
            continue
        shown = current.alloc_count
        line = f"  {shown} allocation(s) left on the node"
        if live:
            con.print(line, end="\r")
        else:
            con.print(line)


@app.command("eligibility")
def eligibility(
    node_id: Annotated[str, typer.Argument(metavar="NODE", help="A node id, prefix or name.")],
    enable: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Allow (or forbid) new placements on the node."),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
) -> None:
    """Allow or forbid new placements on a node (what runs there keeps running)."""
    with common.handle_errors(), common.make_client(address) as client:
        if enable is None:
            common.usage("say --enable or --disable")
        node = client.node(node_id)
        client.node_eligibility(node.id, enable)
        state = "eligible" if enable else "ineligible"
        common.console().print(f"Node {escape(node.name)} is {state}.")
