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
from podium.models.limits import COUNT_CEILING, DEFAULT_MAX_COUNT

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6}
_UNITS |= {"mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30}


def parse_size(text: str) -> int:
    """``8MiB``, ``500KB``, ``1048576`` as bytes; ValueError for anything else."""
    raw = text.strip().lower()
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(digits) :].strip()
    if not digits.strip().isdigit() or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: write bytes, or a number with KiB, MiB, GiB")
    return int(digits.strip()) * _UNITS[unit]


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
    max_count: Annotated[
        int,
        typer.Option(
            "--max-count",
            help="The most instances one group, and one job in all, may ask for: larger "
            "counts are refused at job run, plan, scale and compose.",
        ),
    ] = DEFAULT_MAX_COUNT,
    max_request_body: Annotated[
        str,
        typer.Option(
            "--max-request-body",
            help="The largest request body the API reads (bytes, or KiB/MiB/GiB); larger "
            "ones are answered 413.",
        ),
    ] = "8MiB",
    request_read_timeout: Annotated[
        float,
        typer.Option(
            "--request-read-timeout",
            help="Seconds a client has to send a whole request (headers and body) after it "
            "connects or starts one; then the connection is closed.",
        ),
    ] = 10.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            help="Open connections the API accepts (each agent holds one); more are "
            "answered 503 and closed. Default: 10,000, or less to fit `ulimit -n`.",
            show_default=False,
        ),
    ] = None,
    max_log_streams: Annotated[
        int,
        typer.Option(
            "--max-log-streams",
            help="Log streams (podium alloc logs) the server relays from agents at once; "
            "more are answered 429 with Retry-After.",
        ),
    ] = 256,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-hosts",
            help="A further name the API answers to while ACLs are off (repeat it, or "
            "comma-separate; `*`: any). By default only its bind address, loopback and "
            "this machine's names and addresses: other Host headers get 421 (DNS rebinding).",
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
        if not 1 <= max_count <= COUNT_CEILING:
            common.usage(f"--max-count must be between 1 and {COUNT_CEILING}, got {max_count}")
        try:
            body_limit = parse_size(max_request_body)
        except ValueError as exc:
            common.usage(f"--max-request-body: {exc}")
        if body_limit < 1024:
            common.usage("--max-request-body must be at least 1KiB")
        if request_read_timeout <= 0:
            common.usage("--request-read-timeout must be a positive number of seconds")
        if max_log_streams < 1:
            common.usage("--max-log-streams must be at least 1")
        if max_connections is not None and max_connections < 1:
            common.usage("--max-connections must be at least 1")
        from podium.runtime import AgentConfig, run_server

        config = AgentConfig(
            data_dir=data_dir,
            http_addr=http_addr,
            log_level=log_level.value,
            heartbeat_ttl=heartbeat_ttl,
            heartbeat_grace=heartbeat_grace,
            keyring_file=keyring_file,
            acl=acl,
            max_count=max_count,
            max_request_body=body_limit,
            request_read_timeout=request_read_timeout,
            max_connections=max_connections,
            max_log_streams=max_log_streams,
            allowed_hosts=[h for v in allowed_hosts or [] for h in v.split(",") if h.strip()],
        )
        if audit_log is not None:
            config.audit_log = audit_log
        if dns_addr is not None:
            config.dns_addr = check_dns_addr(dns_addr)
        apply_tls_options(config, secure, cert_ttl, ca_cert, ca_key)
        apply_identity_ttl(config, identity_ttl)
        outcome = run_server(config)
    if outcome:
        raise typer.Exit(outcome)
