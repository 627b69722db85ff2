"""``podium namespace apply|list|info|delete``: namespaces and their quotas.

Every job, allocation, deployment, evaluation, variable and service belongs to one
namespace; ``default`` always exists.  A quota bounds what a namespace's jobs may ask
for (cpu MHz, memory MB, instances) and is checked when a job is registered or scaled
(see docs/namespaces.md).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import endpoints
from podium.models.namespace import QUOTA_KEYS, NamespaceInfo, Quota, check_namespace

app = typer.Typer(help="Namespaces: where jobs live, and the quotas that bound them.")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The namespace's name.")]
_UNITS = {"cpu": "MHz", "memory": "MB", "count": ""}


def _name(name: str) -> str:
    try:
        return check_namespace(name)
    except ValueError as exc:
        common.usage(str(exc))


@app.command("apply")
def apply(
    name: NameArg,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="What the namespace is for.")
    ] = None,
    quota: Annotated[
        str | None,
        typer.Option(
            "--quota",
            help="cpu=MHz,memory=MB,count=N (any of them; '' removes the quota). "
            "Left out: the quota stays as it is.",
        ),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Create a namespace, or change its description or quota."""
    _name(name)
    try:
        parsed = Quota.parse(quota) if quota is not None else None
    except ValueError as exc:
        common.usage(f"--quota: {exc}")
    with common.handle_errors(output=output), common.make_client(address) as client:
        got = client.query(endpoints.namespace_apply(name, description, parsed))
        if output.structured:
            common.print_data(got.raw, output)
            return
        common.console().print(f"Namespace {escape(name)} applied.")
        _print_info(got.value)


@app.command("list")
def list_namespaces(
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """List the namespaces with their jobs, usage and quotas."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        listed = client.query(endpoints.namespaces())
        if output.structured:
            common.print_data(listed.raw, output)
            return
        t = render.table("Name", "Jobs", "CPU", "Memory", "Instances", "Description")
        for ns in listed.value:
            t.add_row(
                escape(ns.name),
                str(ns.jobs),
                _used(ns, "cpu"),
                _used(ns, "memory"),
                _used(ns, "count"),
                escape(ns.description) or "-",
            )
        common.console().print(t)


@app.command("info")
def info(
    name: NameArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Show a namespace: description, quota, what its jobs ask for and what runs."""
    _name(name)
    with common.handle_errors(output=output), common.make_client(address) as client:
        got = client.query(endpoints.namespace(name))
        if output.structured:
            common.print_data(got.raw, output)
            return
        _print_info(got.value)


@app.command("delete")
def delete(
    name: NameArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Delete a namespace: refused while it holds jobs that are not stopped, running
    allocations or variables (its stopped jobs go with it); ``default`` stays."""
    _name(name)
    with common.handle_errors(output=output), common.make_client(address) as client:
        got = client.query(endpoints.namespace_delete(name))
        if output.structured:
            common.print_data(got.raw, output)
            return
        common.console().print(f"Namespace {escape(name)} deleted.")


def _figure(key: str, value: int | None) -> str:
    if value is None:
        return "unlimited"
    unit = _UNITS[key]
    return f"{value:,} {unit}".strip()


def _used(ns: NamespaceInfo, key: str) -> str:
    """``asked / quota`` (what the jobs ask for against the bound)."""
    asked = getattr(ns.desired, key)
    limit = getattr(ns.quota, key)
    return f"{asked:,}" + (f" / {limit:,}" if limit is not None else "")


def _print_info(ns: NamespaceInfo) -> None:
    con = common.console()
    con.print(
        render.fields(
            [
                ("Name", escape(ns.name)),
                ("Description", escape(ns.description) or "-"),
                ("Jobs (not stopped)", str(ns.jobs)),
            ]
        )
    )
    t = render.table("Resource", "Quota", "Asked by jobs", "Held by running allocations")
    for key in QUOTA_KEYS:
        label = {"cpu": "CPU", "memory": "Memory", "count": "Instances"}[key]
        t.add_row(
            label,
            _figure(key, getattr(ns.quota, key)),
            _figure(key, getattr(ns.desired, key)),
            _figure(key, getattr(ns.usage, key)),
        )
    con.print(t)
