"""``podium acl ...``: the bootstrap, policies and tokens of a server run with ``--acl``.

A policy file is checked here first (``podium.spec.acl_policy``: every mistake with
its line) and again by the server.  A token's secret is printed once, by ``token
create`` (and ``bootstrap``); ``token list`` and ``token info`` show accessors only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt, TokenOpt
from podium.client import acl as ep
from podium.errors import SpecError
from podium.models.acl import ACLPolicy, ACLToken, NewToken, TokenType
from podium.spec.acl_policy import check_policy_name, parse_policy

app = typer.Typer(help="Access control: bootstrap, policies and tokens.", no_args_is_help=True)
policy_app = typer.Typer(help="ACL policies: what tokens may do, per namespace.")
token_app = typer.Typer(help="ACL tokens: who may call the API.")
app.add_typer(policy_app, name="policy", no_args_is_help=True)
app.add_typer(token_app, name="token", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The policy's name.")]
AccessorArg = Annotated[
    str, typer.Argument(metavar="ACCESSOR", help="The token's accessor id (or a unique prefix).")
]


def _expires(token: ACLToken) -> str:
    if token.expiration_time is None:
        return "never"
    left = token.expiration_time - time.time()
    return render.clock(token.expiration_time) + (" (expired)" if left <= 0 else "")


def _show_token(token: ACLToken) -> None:
    rows: list[tuple[str, object]] = [
        ("Accessor ID", token.accessor_id),
    ]
    if isinstance(token, NewToken):
        rows.append(("Secret ID", token.secret_id))
    rows += [
        ("Name", token.name or "-"),
        ("Type", token.type.value),
        ("Policies", ", ".join(token.policies) or "-"),
        ("Created", render.clock(token.create_time)),
        ("Expires", _expires(token)),
    ]
    common.console().print(render.fields(rows))


@app.command("bootstrap")
def bootstrap(
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Create the first management token (once per cluster); prints its secret."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(ep.bootstrap())
        if output.structured:
            common.print_data(result.raw, output)
            return
        _show_token(result.value)
        common.err_console().print(
            "Keep the Secret ID safe: it is shown only now (export PODIUM_TOKEN=<Secret ID>)."
        )


def _token_answer(endpoint: Any, address: str, token: str | None, output: Output) -> None:
    """Ask ``endpoint`` (one token's answer) and print the token, or the raw answer."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(endpoint)
        if output.structured:
            common.print_data(result.raw, output)
            return
        _show_token(result.value)


# ------------------------------------------------------------------ policies
@policy_app.command("apply")
def policy_apply(
    name: NameArg,
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The policy file (YAML); - reads stdin.")
    ],
    description: Annotated[str, typer.Option("--description", help="What the policy is for.")] = "",
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Create or replace the policy NAME from FILE."""
    with common.output_format(output):
        try:
            check_policy_name(name)
        except ValueError as exc:
            common.usage(str(exc))
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as exc:
            common.fail(f"cannot read {file}: {exc.strerror or exc}", kind="file")
        source = "<stdin>" if file == "-" else file
        try:
            parse_policy(text, source)
        except SpecError as exc:
            common.render_spec_error(exc, source, what="ACL policy")
            raise typer.Exit(common.EXIT_ERROR) from None
    with (
        common.handle_errors(source=file, output=output),
        common.make_client(address, token) as client,
    ):
        result = client.query(ep.put_policy(name, text, description))
        if output.structured:
            common.print_data(result.raw, output)
            return
        common.console().print(
            f"Applied ACL policy {escape(name)} (modify index {result.value.modify_index})"
        )


@policy_app.command("list")
def policy_list(
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Every ACL policy."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(ep.policies())
        if output.structured:
            common.print_data(result.raw, output)
            return
        if not result.value:
            common.console().print("No ACL policies.")
            return
        table = render.table("Name", "Description", "Modify Index")
        for p in result.value:
            table.add_row(escape(p.name), escape(p.description), str(p.modify_index))
        common.console().print(table)


@policy_app.command("info")
def policy_info(
    name: NameArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """One policy, with its rules as written."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(ep.policy(name))
        if output.structured:
            common.print_data(result.raw, output)
            return
        p: ACLPolicy = result.value
        con = common.console()
        con.print(render.fields([("Name", p.name), ("Description", p.description or "-")]))
        con.print("\n[bold]Rules[/]")
        con.print(escape(p.rules.rstrip("\n")))


@policy_app.command("delete")
def policy_delete(
    name: NameArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Delete the policy NAME (tokens that name it lose what it granted)."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(ep.delete_policy(name))
        if output.structured:
            common.print_data(result.raw, output)
            return
        common.console().print(f"Deleted ACL policy {escape(name)} (index {result.value})")


# ------------------------------------------------------------------ tokens
@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="What the token is for (ci, alice).")] = "",
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", help="A policy the token holds (repeat for several)."),
    ] = None,
    type: Annotated[
        TokenType, typer.Option("--type", help="client (its policies) or management (all).")
    ] = TokenType.CLIENT,
    ttl: Annotated[
        str | None,
        typer.Option("--ttl", help="How long it is valid (24h); default: until deleted."),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Create a token; prints its secret (the only time it is shown)."""
    _token_answer(ep.create_token(name, list(policy or []), type, ttl), address, token, output)


@token_app.command("list")
def token_list(
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Every token, by accessor (secrets are never shown again)."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(ep.tokens())
        if output.structured:
            common.print_data(result.raw, output)
            return
        if not result.value:
            common.console().print("No ACL tokens.")
            return
        table = render.table("Accessor ID", "Name", "Type", "Policies", "Expires")
        for t in result.value:
            table.add_row(
                t.accessor_id,
                escape(t.name or "-"),
                t.type.value,
                escape(", ".join(t.policies) or "-"),
                _expires(t),
            )
        common.console().print(table)


@token_app.command("info")
def token_info(
    accessor: AccessorArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """One token, by accessor."""
    _token_answer(ep.token(accessor), address, token, output)


@token_app.command("self")
def token_self(
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """The token this command runs with (--token or PODIUM_TOKEN)."""
    _token_answer(ep.token_self(), address, token, output)


@token_app.command("delete")
def token_delete(
    accessor: AccessorArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Delete a token: its secret stops working at once."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(ep.delete_token(accessor))
        if output.structured:
            common.print_data(result.raw, output)
            return
        common.console().print(f"Deleted ACL token {escape(accessor)} (index {result.value})")
