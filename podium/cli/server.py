"""``podium server``: run only the control plane (API, scheduler, store) in this process.

Agents on other machines join it with ``podium agent --servers URL``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from podium.cli import common
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
from podium.cli.limits import (
    AllowedHostsOpt,
    MaxConnectionsOpt,
    MaxCountOpt,
    MaxLogStreamsOpt,
    MaxRequestBodyOpt,
    RequestReadTimeoutOpt,
    apply_limits,
)


def server(
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Where the server keeps its SQLite state.")
    ],
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
) -> None:
    """Run a Podium server (no tasks run here; agents join it with --servers)."""
    with common.handle_errors():
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
        )
        if advertise is not None:
            if not advertise.strip():
                common.usage("--advertise must not be empty")
            config.advertise_host = advertise.strip()
        if audit_log is not None:
            config.audit_log = audit_log
        if dns_addr is not None:
            config.dns_addr = check_dns_addr(dns_addr)
        apply_tls_options(config, secure, cert_ttl, ca_cert, ca_key)
        apply_identity_ttl(config, identity_ttl)
        outcome = run_server(config)
    if outcome:
        raise typer.Exit(outcome)
