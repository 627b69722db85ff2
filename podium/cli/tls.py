"""``podium join-token`` and ``podium tls``: the cluster's join tokens and certificates
(docs/tls.md).

``join-token agent`` asks the server (``GET /v1/operator/join-token/agent``; ``--rotate``:
``POST …?rotate=true``), which derives the token from a key only it holds; it needs a token
with ``operator: write`` (``--secure`` turns access control on).
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


def _print_info(answer: dict[str, Any]) -> None:
    agents = answer.get("agents") or []
    rotation = answer.get("rotation")
    for key, value in answer.items():
        if key in ("agents", "rotation"):
            continue
        if key == "ca_trusted":
            value = ", ".join(f"{fp[:16]}…" for fp in value)
        typer.echo(f"{key.replace('_', ' '):<24}{value}")
    if rotation:
        typer.echo(
            f"{'rotation':<24}phase {rotation['phase']}: {rotation['old'][:16]}… → "
            f"{rotation['new'][:16]}… (started {rotation['started']})"
        )
    if not agents:
        return
    typer.echo("")
    labels = {fp: f"{fp[:16]}…" for fp in answer.get("ca_trusted", [])}
    new = rotation["new"] if rotation else ""
    typer.echo(f"{'AGENT':<24}{'NODE ID':<38}{'CERT FROM CA':<30}{'TRUSTS NEW CA':<15}EXPIRES")
    for a in agents:
        ca = a["ca_fingerprint"]
        label = labels.get(ca, f"{ca[:16]}…")
        if ca == answer.get("ca_fingerprint"):
            label += " (signing)" if not rotation else " (new)"
        elif rotation and ca == rotation["old"]:
            label += " (old)"
        trusts = ("yes" if new in a.get("trusts", []) else "no") if rotation else "-"
        expires = a["not_after"] if a["in_date"] else f"{a['not_after']} (expired)"
        typer.echo(f"{a['name'][:23]:<24}{a['node_id']:<38}{label:<30}{trusts:<15}{expires}")


@app.command("info")
def info(address: AddressOpt = common.DEFAULT_ADDR, output: OutputOpt = Output.TABLE) -> None:
    """The server's CA fingerprint, its own certificate, a CA rotation in progress, and
    each agent: which CA its certificate is from, whether it trusts a rotation's new CA."""
    with common.handle_errors(output=output):
        answer = common.make_client(address).query(_raw("GET", "/v1/operator/tls")).value
        if output.structured:
            common.print_data(answer, output)
            return
        _print_info(answer)


def _progress(answer: dict[str, Any]) -> str:
    rotation = answer.get("rotation")
    live = [a for a in answer.get("agents", []) if a["in_date"]]
    if not rotation:
        return f"done: only CA {answer['ca_fingerprint'][:16]}… is trusted"
    if rotation["phase"] == "trust":
        n = sum(1 for a in live if rotation["new"] in a.get("trusts", []))
        return f"phase trust: {n}/{len(live)} agents trust the new CA"
    n = sum(1 for a in live if a["ca_fingerprint"] == rotation["new"])
    return f"phase reissue: {n}/{len(live)} agents hold a certificate from the new CA"


@app.command("rotate-ca")
def rotate_ca(
    finish: Annotated[
        bool,
        typer.Option(
            "--finish",
            help="Drop the old CA now, whichever agents have not moved over (they must join "
            "again with a current token).",
        ),
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Start the rotation and return at once.")
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="How long to wait for the rotation (e.g. 10m).")
    ] = "10m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Replace the cluster CA without a restart: the new CA is trusted beside the old one,
    then signs (the server's and every agent's certificate are re-issued under it), then the
    old one is dropped.  Waits and reports until every agent has moved over."""
    import time

    from podium.models import parse_duration

    with common.handle_errors(output=output):
        try:
            limit = parse_duration(timeout)
        except ValueError as exc:
            common.usage(f"--timeout {timeout}: {exc}")
        path = "/v1/operator/tls/rotate-ca"
        params = {"finish": "true"} if finish else {}
        client = common.make_client(address)
        before = client.query(_raw("GET", "/v1/operator/tls")).value["ca_fingerprint"]
        answer = client.query(_raw("POST", path, params)).value
        if not finish and not output.structured:
            new = (answer.get("rotation") or {}).get("new", answer["ca_fingerprint"])
            typer.echo(f"Rotating the cluster CA: {before[:16]}… → {new[:16]}…")
        deadline = time.monotonic() + limit
        last = ""
        while not detach:
            line = _progress(answer)
            if line != last and not output.structured:
                typer.echo(line)
                last = line
            if answer.get("rotation") is None:
                break
            if time.monotonic() > deadline:
                common.fail(
                    f"the CA rotation is still in progress after {timeout} ({line}): "
                    "`podium tls info` shows which agents have not moved over; "
                    "`podium tls rotate-ca --finish` drops the old CA now (those agents "
                    "must then join again)"
                )
            time.sleep(1.0)
            # a new client each time: the CA file (the server's ca.crt, a bundle during the
            # rotation) is read again, and the server's certificate may be from the new CA
            answer = common.make_client(address).query(_raw("GET", "/v1/operator/tls")).value
        if output.structured:
            common.print_data(answer, output)
        elif answer.get("rotation") is None:
            typer.echo(
                f"New join tokens pin CA {answer['ca_fingerprint'][:16]}… "
                "(`podium join-token agent`); the old ones no longer let agents join."
            )


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
