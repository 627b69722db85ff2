"""``podium service list|info``: the service catalog, as the servers hold it.

Every running instance of a group with ``services`` is registered with its
node's address, the port its label got and its health (its checks passing).
The same catalog answers DNS (``<service>.service.podium``, healthy only).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import endpoints
from podium.errors import NotFound
from podium.models import CheckStatus, ServiceRegistration

app = typer.Typer(help="Inspect the service catalog.", no_args_is_help=True)


@app.command("list")
def list_services(
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """List the services in the catalog with their instance counts and tags."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        listed = client.query(endpoints.services())
        if output.structured:
            common.print_data(listed.raw, output)
            return
        con = common.console()
        if not listed.value:
            con.print("No services.")
            return
        t = render.table("Service", "Instances", "Healthy", "Tags")
        for s in listed.value:
            healthy = Text(str(s.healthy), style="green" if s.healthy == s.instances else "red")
            t.add_row(escape(s.name), str(s.instances), healthy, escape(", ".join(s.tags)) or "-")
        con.print(t)


@app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="The service's name.")],
    healthy: Annotated[
        bool, typer.Option("--healthy", help="Only the instances whose checks pass.")
    ] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Show the instances of a service: allocation, node, address, tags, health, checks.

    A service the catalog does not hold is an error (exit 1), as a name that
    does not resolve is; a known service with no healthy instance (--healthy)
    is an empty answer (exit 0), as DNS answers it.
    """
    with common.handle_errors(output=output), common.make_client(address) as client:
        got = client.query(endpoints.service(name, True if healthy else None))
        if not got.value and (not healthy or not client.query(endpoints.service(name)).value):
            raise NotFound(
                f"service {name!r} is not in the catalog (podium service list shows those that are)"
            )
        if output.structured:
            common.print_data(got.raw, output)
            return
        con = common.console()
        if not got.value:
            con.print(f"No healthy instances of service {escape(name)!r}.")
            return
        t = render.table("Alloc ID", "Node ID", "Address", "Tags", "Health", "Checks")
        for reg in sorted(got.value, key=lambda r: (not r.healthy, r.address, r.port)):
            t.add_row(
                render.short(reg.alloc_id),
                render.short(reg.node_id),
                escape(host_port(reg)),
                escape(", ".join(reg.tags)) or "-",
                Text("healthy", style="green") if reg.healthy else Text("unhealthy", style="red"),
                checks_text(reg, full=not common.interactive()),
            )
        con.print(t)


def host_port(reg: ServiceRegistration) -> str:
    host = f"[{reg.address}]" if ":" in reg.address else reg.address
    return f"{host}:{reg.port}" if reg.port else host


def checks_text(reg: ServiceRegistration, *, full: bool = False) -> Text:
    """``alive: passing, db: critical`` (the first line of the first failing check's
    output after it: cut to 60 characters on a terminal, whole with ``full``)."""
    if not reg.checks:
        return Text("-")
    out = Text()
    for i, (check_name, result) in enumerate(sorted(reg.checks.items())):
        if i:
            out.append(", ")
        style = {CheckStatus.PASSING: "green", CheckStatus.CRITICAL: "red"}.get(
            result.status, "yellow"
        )
        out.append(f"{check_name}: ")
        out.append(result.status.value, style=style)
    failing = next(
        (r for _, r in sorted(reg.checks.items()) if r.status == CheckStatus.CRITICAL), None
    )
    if failing is not None and failing.output:
        first = failing.output.splitlines()[0]
        out.append(f" ({first if full else first[:60]})", style="dim")
    return out
