"""``podium var ...``: variables (configuration and credentials, encrypted at rest).

``podium var put app/config db_url=postgres://... user=x`` writes items as
KEY=VALUE pairs; ``-`` reads a JSON object from stdin and ``@FILE`` from a
file (``{"db_url": "..."}``, or the API's ``{"items": {...}}``).  Templates in
jobs read them with ``var("app/config").db_url``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import endpoints
from podium.models.variable import check_var_path

app = typer.Typer(
    help="Variables: key/value items at a path, encrypted at rest, read by templates.",
    no_args_is_help=True,
)

PathArg = Annotated[
    str, typer.Argument(metavar="PATH", help="The variable's path, such as app/config.")
]
CasOpt = Annotated[
    int | None,
    typer.Option(
        "--cas",
        help="Check-and-set: only if the variable is still at this modify index "
        "(0: only if it does not exist yet).",
    ),
]


def _json_items(text: str, where: str) -> dict[str, str]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        common.fail(f"{where} is not JSON: {exc}")
    if isinstance(doc, dict) and isinstance(doc.get("items"), dict):
        doc = doc["items"]  # the API's (and `var get -o json`'s) shape
    if not isinstance(doc, dict):
        common.fail(f'{where} must hold a JSON object of items, such as {{"db_url": "..."}}')
    items: dict[str, str] = {}
    for key, value in doc.items():
        if not isinstance(value, str):
            common.fail(f"{where}: item {key!r} must be a string, not {type(value).__name__}")
        items[key] = value
    return items


def parse_items(args: list[str], stdin: Any = None) -> dict[str, str]:
    """KEY=VALUE pairs, ``-`` (JSON on stdin) or ``@FILE`` (JSON in a file), merged in order."""
    items: dict[str, str] = {}
    for arg in args:
        if arg == "-":
            items.update(_json_items((stdin or sys.stdin).read(), "standard input"))
        elif arg.startswith("@"):
            path = Path(arg[1:])
            try:
                text = path.read_text()
            except OSError as exc:
                common.fail(f"cannot read {path}: {exc.strerror or exc}")
            items.update(_json_items(text, str(path)))
        elif "=" in arg and not arg.startswith("="):
            key, value = arg.split("=", 1)
            items[key] = value
        else:
            common.usage(f"{arg!r} is not KEY=VALUE, '-' (JSON on stdin) or @FILE (a JSON file)")
    if not items:
        common.usage("give at least one item: KEY=VALUE, '-' (JSON on stdin) or @FILE")
    return items


def _path(path: str) -> str:
    """Check the path here, so a mistake is named before anything is sent."""
    try:
        return check_var_path(path)
    except ValueError as exc:
        common.usage(str(exc))


@app.command("put")
def put(
    path: PathArg,
    items: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE... | - | @FILE",
            help="Items; '-' reads a JSON object from stdin, @FILE from a file.",
            show_default=False,
        ),
    ],
    cas: CasOpt = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Create or replace the variable at PATH (all its items at once)."""
    with common.output_format(output):
        values = parse_items(items)
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.var_put(_path(path), values, cas))
        if output.structured:
            common.print_data(result.raw, output)
            return
        var = result.value
        noun = "item" if len(var.items) == 1 else "items"
        common.console().print(
            f"Wrote variable {escape(var.path)} ({len(var.items)} {noun}, "
            f"modify index {var.modify_index})"
        )


@app.command("get")
def get(
    path: PathArg,
    key: Annotated[
        str | None,
        typer.Argument(metavar="[KEY]", help="Print only this item's value, bare."),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """One variable: its items as a table, as JSON (-o json), or one value (KEY)."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.var_get(_path(path)))
        var = result.value
        if key is not None:
            if key not in var.items:
                known = ", ".join(sorted(var.items))
                common.fail(
                    f"variable {var.path} has no item {key!r} (it has: {known})", kind="not_found"
                )
            if output.structured:
                common.print_data(var.items[key], output)
            else:
                typer.echo(var.items[key])
            return
        if output.structured:
            common.print_data(result.raw, output)
            return
        meta = render.fields(
            [
                ("Path", var.path),
                ("Namespace", var.namespace),
                ("Create Index", var.create_index),
                ("Modify Index", var.modify_index),
                ("Modified", render.age(var.modify_time)),
            ]
        )
        table = render.table("Key", "Value")
        for name in sorted(var.items):
            table.add_row(escape(name), escape(var.items[name]))
        common.console().print(render.stack(meta, table))


@app.command("list")
def list_(
    prefix: Annotated[
        str | None, typer.Argument(metavar="[PREFIX]", help="Only paths that start with this.")
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Variable paths (never values), sorted."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.var_list(prefix))
        if output.structured:
            common.print_data(result.raw, output)
            return
        if not result.value:
            common.console().print(
                "No variables." if not prefix else f"No variables under {escape(prefix)}."
            )
            return
        table = render.table("Path", "Namespace", "Modify Index", "Modified")
        for v in result.value:
            table.add_row(
                escape(v.path), escape(v.namespace), str(v.modify_index), render.age(v.modify_time)
            )
        common.console().print(table)


@app.command("delete")
def delete(
    path: PathArg,
    cas: CasOpt = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Delete the variable at PATH."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.var_delete(_path(path), cas))
        if output.structured:
            common.print_data(result.raw, output)
            return
        common.console().print(f"Deleted variable {escape(path)} (index {result.value})")
