"""``podium join-token`` and ``podium tls``: the cluster's join tokens and certificates
(docs/tls.md).

``join-token agent`` asks the server (``GET /v1/operator/join-token/agent``; ``--rotate``:
``POST …?rotate=true``), which derives the token from a key only it holds; until ACL tokens
give operators their rights, the server answers this only to callers on its own machine.
``tls ca create`` and ``tls cert show`` work on files, without a server.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli import common
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import Endpoint

join_token_app = typer.Typer(
    help="Print (or rotate) the token machines join the cluster with.", no_args_is_help=True
)
app = typer.Typer(help="The cluster's CA and certificates (--secure).", no_args_is_help=True)
ca_app = typer.Typer(help="The cluster CA.", no_args_is_help=True)
cert_app = typer.Typer(help="Certificates.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
app.add_typer(cert_app, name="cert")


def _raw(method: str, path: str, params: dict[str, str] | None = None) -> Endpoint[Any]:
    return Endpoint(method, path, lambda body: body, params=params or {})


@join_token_app.command("agent")
def join_token_agent(
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Make a new token: the old one refuses new joins (joined agents stay).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the token.")] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Print the command an agent runs to join this cluster (with the join token)."""
    with common.handle_errors(output=output):
        client = common.make_client(address)
        path = "/v1/operator/join-token/agent"
        if rotate:
            answer = client.query(_raw("POST", path, {"rotate": "true"})).value
        else:
            answer = client.query(_raw("GET", path)).value
        if output.structured:
            common.print_data(answer, output)
        elif quiet:
            typer.echo(answer["token"])
        else:
            if rotate:
                typer.echo("Rotated: the previous token no longer lets agents join.\n")
            typer.echo("An agent joins this cluster with:\n")
            typer.echo(f"    {answer['command']}\n")
            typer.echo(
                "The token pins the cluster CA (fingerprint "
                f"{answer['ca_fingerprint'][:16]}…); keep it secret: it lets a machine join."
            )


@app.command("info")
def info(address: AddressOpt = common.DEFAULT_ADDR, output: OutputOpt = Output.TABLE) -> None:
    """The server's CA fingerprint, its own certificate, and how many nodes hold one."""
    with common.handle_errors(output=output):
        answer = common.make_client(address).query(_raw("GET", "/v1/operator/tls")).value
        if output.structured:
            common.print_data(answer, output)
            return
        for key, value in answer.items():
            typer.echo(f"{key.replace('_', ' '):<24}{value}")


@ca_app.command("create")
def ca_create(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write ca.crt (0644) and ca.key (0600) in.")
    ],
    name: Annotated[str, typer.Option("--name", help="The CA's common name.")] = (
        "Podium cluster CA"
    ),
) -> None:
    """Create a CA to give servers with --ca-cert/--ca-key (a server makes its own without)."""
    from podium.tls import TLSError
    from podium.tls.ca import CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority

    with common.handle_errors():
        if (out / CA_KEY_FILE).exists() or (out / CA_CERT_FILE).exists():
            common.fail(
                f"{out} already holds a CA ({CA_CERT_FILE}/{CA_KEY_FILE}); not replacing it"
            )
        try:
            ca = CertificateAuthority.create(name)
            ca.save(out)
        except (OSError, TLSError) as exc:
            common.fail(f"cannot create the CA in {out}: {exc}")
        typer.echo(f"CA written to {out / CA_CERT_FILE} and {out / CA_KEY_FILE} (0600)")
        typer.echo(f"fingerprint: {ca.fingerprint}")


@cert_app.command("show")
def cert_show(
    path: Annotated[Path, typer.Argument(help="A PEM certificate file.")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """What a certificate names (role, node id), its fingerprint and validity."""
    from podium.tls import TLSError
    from podium.tls.ca import fingerprint, load_cert
    from podium.tls.identity import identity_of

    with common.handle_errors(output=output):
        try:
            cert = load_cert(path.read_bytes(), str(path))
        except OSError as exc:
            common.fail(f"cannot read {path}: {exc.strerror}")
        except TLSError as exc:
            common.fail(str(exc))
        identity = identity_of(cert)
        doc = {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "serial": str(cert.serial_number),
            "fingerprint": fingerprint(cert),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "expired": cert.not_valid_after_utc <= dt.datetime.now(dt.UTC),
            "role": identity.role if identity else None,
            "node_id": identity.node_id if identity else None,
        }
        if output.structured:
            common.print_data(doc, output)
            return
        for key, value in doc.items():
            typer.echo(f"{key.replace('_', ' '):<14}{value}")
