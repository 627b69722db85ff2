"""``podium server``: run only the control plane (API, scheduler, store) in this process;
``podium server members``: the cluster's servers.

Agents on other machines join it with ``podium agent --servers URL``.  With ``--etcd``,
several servers share one etcd cluster: one leads, the others follow (docs/ha.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from podium.cli import common, render
from podium.cli.agent import (
    AUDIT_LOG_HELP,
    DEFAULT_HTTP_ADDR,
    DNS_ADDR_HELP,
    CaCertOpt,
    CaKeyOpt,
    CertTtlOpt,
    IdentityTtlOpt,
    LogLevel,
    SecureOpt,
    apply_identity_ttl,
    apply_tls_options,
    check_dns_addr,
)
from podium.cli.common import AddressOpt, Output, OutputOpt, TokenOpt
from podium.cli.limits import (
    AllowedHostsOpt,
    HeartbeatPortOpt,
    MaxConnectionsOpt,
    MaxCountOpt,
    MaxLogStreamsOpt,
    MaxRequestBodyOpt,
    RequestReadTimeoutOpt,
    ShedLagOpt,
    apply_limits,
)
from podium.client import endpoints

app = typer.Typer(
    help="Run a Podium server (no tasks run here; agents join it with --servers); "
    "`podium server members` lists the cluster's servers.",
)


@app.callback(invoke_without_command=True)
def server(
    ctx: typer.Context,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir",
            help="Where the server keeps its state (SQLite), or, with --etcd, what is its "
            "own: keyring, TLS, audit log.",
            show_default=False,
        ),
    ] = None,
    http_addr: Annotated[
        str, typer.Option("--http-addr", help="HOST:PORT the HTTP API listens on.")
    ] = DEFAULT_HTTP_ADDR,
    heartbeat_ttl: Annotated[
        float,
        typer.Option(
            "--heartbeat-ttl",
            help="Seconds between a node's heartbeats; silent for TTL + grace, it is down.",
        ),
    ] = 10.0,
    heartbeat_grace: Annotated[
        float,
        typer.Option(
            "--heartbeat-grace",
            help="Seconds a node may stay silent past the TTL before it is marked down.",
        ),
    ] = 10.0,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log verbosity.")] = (
        LogLevel.INFO
    ),
    dns_addr: Annotated[
        str | None, typer.Option("--dns-addr", envvar="PODIUM_DNS_ADDR", help=DNS_ADDR_HELP)
    ] = None,
    acl: Annotated[
        bool,
        typer.Option(
            "--acl",
            help="Turn access control on: every request needs an ACL token that grants it "
            "(podium acl bootstrap creates the first). Default: off (anyone who reaches "
            "the API may do anything).",
        ),
    ] = False,
    keyring_file: Annotated[
        str | None,
        typer.Option(
            "--keyring-file",
            help="The key variables are encrypted with (created, 0600, if missing). "
            "Default: <data-dir>/server/keyring/. Back it up apart from the state.",
        ),
    ] = None,
    secure: SecureOpt = False,
    cert_ttl: CertTtlOpt = None,
    ca_cert: CaCertOpt = None,
    ca_key: CaKeyOpt = None,
    identity_ttl: IdentityTtlOpt = None,
    audit_log: Annotated[
        str | None, typer.Option("--audit-log", help=AUDIT_LOG_HELP, show_default=False)
    ] = None,
    max_count: MaxCountOpt = None,
    max_request_body: MaxRequestBodyOpt = None,
    request_read_timeout: RequestReadTimeoutOpt = None,
    max_connections: MaxConnectionsOpt = None,
    max_log_streams: MaxLogStreamsOpt = None,
    shed_lag: ShedLagOpt = None,
    heartbeat_port: HeartbeatPortOpt = None,
    allowed_hosts: AllowedHostsOpt = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="The host agents and other servers reach this server at, given to agents "
            "in /v1/status/peers [the --http-addr host; listening on 0.0.0.0: the address "
            "of the default route's interface].",
            show_default=False,
        ),
    ] = None,
    etcd: Annotated[
        str | None,
        typer.Option(
            "--etcd",
            envvar="PODIUM_ETCD_ENDPOINTS",
            help="Comma-separated etcd client URLs (http://10.0.0.1:2379,...): keep the "
            "cluster's state in etcd and share it with the other servers given the same "
            "URLs; one is elected leader, the others follow and forward writes to it "
            "(docs/ha.md). Default: SQLite in --data-dir, one server.",
            show_default=False,
        ),
    ] = None,
    etcd_cluster: Annotated[
        str,
        typer.Option(
            "--etcd-cluster",
            help="The Podium cluster's name in etcd (its keys are under /podium/NAME/).",
        ),
    ] = "default",
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="This server's name in `podium server members` [its URL].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a Podium server (no tasks run here; agents join it with --servers)."""
    if ctx.invoked_subcommand is not None:
        return
    with common.handle_errors():
        if data_dir is None:
            common.usage("podium server needs --data-dir (where the server keeps its state)")
        if heartbeat_ttl <= 0:
            common.usage("--heartbeat-ttl must be a positive number of seconds")
        if heartbeat_grace < 0:
            common.usage("--heartbeat-grace must be zero or a positive number of seconds")
        from podium.runtime import AgentConfig, run_server

        config = AgentConfig(
            data_dir=data_dir,
            http_addr=http_addr,
            log_level=log_level.value,
            heartbeat_ttl=heartbeat_ttl,
            heartbeat_grace=heartbeat_grace,
            keyring_file=keyring_file,
            acl=acl,
        )
        apply_limits(
            config,
            runs_server=True,
            max_count=max_count,
            max_request_body=max_request_body,
            request_read_timeout=request_read_timeout,
            max_connections=max_connections,
            max_log_streams=max_log_streams,
            allowed_hosts=allowed_hosts,
            shed_lag=shed_lag,
            heartbeat_port=heartbeat_port,
        )
        if advertise is not None:
            if not advertise.strip():
                common.usage("--advertise must not be empty")
            config.advertise_host = advertise.strip()
        if etcd is not None:
            config.etcd = parse_etcd_urls(etcd, "--etcd")
            if secure:
                common.usage(
                    "--secure with --etcd is not supported yet: servers on etcd would need "
                    'one CA and join tokens they share (docs/ha.md, "Not yet"); run them '
                    "with --acl on a private network, or one server with --secure"
                )
            config.etcd_cluster = check_cluster_name(etcd_cluster, "--etcd-cluster")
        if name is not None:
            config.server_name = name.strip() or None
        if audit_log is not None:
            config.audit_log = audit_log
        if dns_addr is not None:
            config.dns_addr = check_dns_addr(dns_addr)
        apply_tls_options(config, secure, cert_ttl, ca_cert, ca_key)
        apply_identity_ttl(config, identity_ttl)
        outcome = run_server(config)
    if outcome:
        raise typer.Exit(outcome)


def parse_etcd_urls(value: str, flag: str) -> list[str]:
    """``http://h:p,https://h:p`` (``etcd://h:p`` is taken as http): each URL checked, a
    usage error naming the flag and the bad entry otherwise."""
    from urllib.parse import urlsplit

    urls = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("etcd://"):
            item = "http://" + item[len("etcd://") :]
        elif "://" not in item:
            item = "http://" + item
        parts = urlsplit(item)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            common.usage(
                f"{flag}: {raw.strip()!r} is not an etcd client URL (http://HOST:PORT, "
                "for example http://10.0.0.1:2379)"
            )
        urls.append(f"{parts.scheme}://{parts.netloc}")
    if not urls:
        common.usage(f"{flag} needs at least one etcd client URL (http://HOST:PORT)")
    return urls


def check_cluster_name(value: str, flag: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
        common.usage(
            f"{flag}: {value!r} is not a cluster name (letters, digits, '.', '_' and '-', "
            "at most 63, starting with a letter or digit)"
        )
    return value


@app.command("members")
def members(
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """The cluster's servers: address, leader or follower, the index each has applied,
    its last contact with etcd and etcd's revision then (any server answers)."""
    with common.handle_errors(output=output), common.make_client(address, token) as client:
        result = client.query(endpoints.members())
        if output.structured:
            common.print_data(result.raw, output)
            return
        answer = result.value
        t = render.table(
            "Name",
            "Address",
            "Role",
            "Applied index",
            "Last contact",
            "etcd revision",
            "Reported",
        )
        for m in answer.members:
            contact = "-" if m.last_contact is None else f"{m.last_contact * 1000:.0f}ms"
            t.add_row(
                m.name,
                m.url,
                "leader" if m.leader else "follower",
                str(m.applied_index),
                contact,
                str(m.etcd_revision) if m.etcd_revision else "-",
                f"{m.reported_ago:.0f}s ago",
            )
        common.console().print(t)
        if not answer.leader:
            common.console().print("No leader is elected now.")
