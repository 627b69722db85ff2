"""``podium agent``: run a server and/or a client agent in this process.

The CLI only gathers options; :mod:`podium.runtime` composes the server and
the agent (the CLI must not import them, see the import-linter contracts), so
it is imported only when the command runs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from enum import StrEnum
from typing import Annotated

import typer

from podium.cli import common
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

DEFAULT_HTTP_ADDR = "127.0.0.1:7634"
DEFAULT_DNS_ADDR = "127.0.0.1:7653"
"""The server's default (podium.server.dns.DEFAULT_DNS_ADDR, which the CLI may not import)."""
DNS_ADDR_HELP = (
    "HOST:PORT where a server answers DNS for <service>.service.podium "
    f'[{DEFAULT_DNS_ADDR}; when taken, DNS is off with a warning]; "" or off disables it.'
)


def check_dns_addr(value: str) -> str:
    """``--dns-addr``: HOST:PORT, or "" / off."""
    value = value.strip()
    if value.lower() in ("", "off"):
        return ""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        common.usage(f"--dns-addr {value!r} must be HOST:PORT (such as {DEFAULT_DNS_ADDR}) or off")
    return value


SecureOpt = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="TLS on the API and every agent call, from the cluster CA (made on first start "
        "in <data-dir>/server/tls/); agents join with a join token. See docs/tls.md.",
    ),
]
CertTtlOpt = Annotated[
    str | None,
    typer.Option(
        "--cert-ttl",
        help="Lifetime of the certificates the CA issues, such as 720h or 60s [30 days]; "
        "renewed at two thirds of it.",
    ),
]
CaCertOpt = Annotated[
    str | None,
    typer.Option("--ca-cert", help="With --secure: a CA certificate (PEM) to issue from."),
]
CaKeyOpt = Annotated[
    str | None,
    typer.Option("--ca-key", help="With --secure: the key of --ca-cert (PEM, unencrypted)."),
]
IdentityTtlOpt = Annotated[
    str | None,
    typer.Option(
        "--identity-ttl",
        help="Lifetime of the workload tokens tasks get (PODIUM_TOKEN), such as 1h or 30s "
        "[1h]; agents renew them at two thirds of it. See docs/acl.md.",
    ),
]


def apply_identity_ttl(config: object, identity_ttl: str | None) -> None:
    """``--identity-ttl`` (a server's setting: with --dev or --server)."""
    if identity_ttl is None:
        return
    from podium.models import parse_duration

    try:
        seconds = parse_duration(identity_ttl)
    except ValueError as exc:
        common.usage(f"--identity-ttl: {exc}")
    if seconds < 3:
        common.usage(f"--identity-ttl {identity_ttl} is too short: at least 3s")
    config.identity_ttl = seconds  # type: ignore[attr-defined]


def apply_tls_options(
    config: object,
    secure: bool,
    cert_ttl: str | None,
    ca_cert: str | None,
    ca_key: str | None,
) -> None:
    """Check the TLS flags and put them on the runtime's config."""
    from podium.models import parse_duration

    if (ca_cert is None) != (ca_key is None):
        common.usage("give both --ca-cert and --ca-key, or neither")
    if not secure and (cert_ttl is not None or ca_cert is not None):
        common.usage("--cert-ttl, --ca-cert and --ca-key need --secure")
    if cert_ttl is not None:
        try:
            seconds = parse_duration(cert_ttl)
        except ValueError as exc:
            common.usage(f"--cert-ttl: {exc}")
        if seconds < 5:
            common.usage(f"--cert-ttl {cert_ttl} is too short: at least 5s")
        config.cert_ttl = seconds  # type: ignore[attr-defined]
    config.secure = secure  # type: ignore[attr-defined]
    config.ca_cert = ca_cert  # type: ignore[attr-defined]
    config.ca_key = ca_key  # type: ignore[attr-defined]


def apply_task_limits(
    config: object,
    max_kill_timeout: str | None,
    docker_volumes: bool | None,
    docker_volume_allow: list[str] | None,
    docker_allow_caps: str | None,
) -> None:
    """``--max-kill-timeout`` and the ``--docker-*`` allowances, checked, on the config."""
    from podium.models import parse_duration

    if max_kill_timeout is not None:
        try:
            seconds = parse_duration(max_kill_timeout)
        except ValueError as exc:
            common.usage(f"--max-kill-timeout: {exc}")
        config.max_kill_timeout = seconds  # type: ignore[attr-defined]
    if docker_volumes is not None:
        config.docker_volumes = docker_volumes  # type: ignore[attr-defined]
    prefixes = []
    for value in docker_volume_allow or []:
        if not value.startswith("/"):
            common.usage(f"--docker-volume-allow {value!r} must be an absolute host path")
        prefixes.append(value.rstrip("/") or "/")
    if prefixes and docker_volumes is False:
        common.usage("--docker-volume-allow contradicts --no-docker-volumes")
    if prefixes:
        config.docker_volumes = True  # type: ignore[attr-defined]
        config.docker_volume_allow = prefixes  # type: ignore[attr-defined]
    if docker_allow_caps is not None:
        caps = [c.strip() for c in docker_allow_caps.split(",") if c.strip()]
        for cap in caps:
            name = cap.upper().removeprefix("CAP_")
            if not name.replace("_", "").isalnum():
                common.usage(f"--docker-allow-caps: {cap!r} is not a capability name")
        config.docker_allow_caps = caps  # type: ignore[attr-defined]


def apply_exec_options(
    config: object,
    exec_chroot: list[str] | None,
    exec_user_denylist: str | None,
    exec_uid_range: str | None,
) -> None:
    """``--exec-chroot``, ``--exec-user-denylist``, ``--exec-uid-range``: checked by the
    runtime's ``check_exec_options`` (as the exec driver reads them; the CLI may not import
    the drivers), put on the config."""
    if exec_chroot is None and exec_user_denylist is None and exec_uid_range is None:
        return
    from podium.runtime import (  # type: ignore[import-not-found, unused-ignore]
        check_exec_options,
    )

    try:
        binds, users, span = check_exec_options(exec_chroot, exec_user_denylist, exec_uid_range)
    except ValueError as exc:
        common.usage(str(exc))
    if binds is not None:
        config.exec_chroot = binds  # type: ignore[attr-defined]
    if users is not None:
        config.exec_user_denylist = users  # type: ignore[attr-defined]
    if span is not None:
        config.exec_uid_range = span  # type: ignore[attr-defined]


def apply_volumes_and_devices(
    config: object, host_volume: list[str] | None, device_file: str | None
) -> None:
    """``--host-volume`` (each an existing directory, names once) and ``--device-file``
    (read and checked now, so a typo fails here, not at the node's registration)."""
    import os

    from podium.models.devices import parse_device_file
    from podium.models.volumes import parse_host_volumes

    if host_volume:
        try:
            volumes = parse_host_volumes(host_volume)
        except ValueError as exc:
            common.usage(f"--host-volume: {exc}")
        for name, vol in volumes.items():
            if not os.path.isdir(vol.path):
                common.usage(f"--host-volume: host volume {name!r}: {vol.path} is no directory")
        config.host_volumes = volumes  # type: ignore[attr-defined]
    if device_file:
        try:
            with open(device_file, encoding="utf-8") as f:
                parse_device_file(f.read(), device_file)
        except OSError as exc:
            common.usage(f"--device-file {device_file}: {exc.strerror or exc}")
        except ValueError as exc:
            common.usage(f"--device-file: {exc}")
        config.device_file = os.path.abspath(device_file)  # type: ignore[attr-defined]


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _split_servers(values: list[str] | None) -> list[str]:
    """``--servers a:1,b:2`` and ``--servers a:1 --servers b:2`` mean the same."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def _parse_meta(values: list[str] | None) -> dict[str, str]:
    """``--meta rack=r1 --meta zone=a`` → ``{"rack": "r1", "zone": "a"}``."""
    meta: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        key = key.strip()
        if not sep or not key:
            common.usage(f"--meta {value!r} is not KEY=VALUE (for example --meta rack=r1)")
        meta[key] = val.strip()
    return meta


AUDIT_LOG_HELP = (
    "With a server here: the audit log file (every write to the API as a JSON line, 0600, "
    "rotated at 64 MiB, 10 kept), or 'off'. Default: <data-dir>/server/audit/audit.log."
)


def agent(
    dev: Annotated[
        bool,
        typer.Option(
            "--dev", help="Server and client in one process, state in a temporary directory."
        ),
    ] = False,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Where state and allocation dirs live.")
    ] = None,
    http_addr: Annotated[
        str, typer.Option("--http-addr", help="HOST:PORT the HTTP API listens on.")
    ] = DEFAULT_HTTP_ADDR,
    servers: Annotated[
        list[str] | None,
        typer.Option(
            "--servers",
            help="Servers a client agent joins (HOST:PORT; repeat or separate with commas): "
            "the first is asked first; one that cannot be reached is passed over for the next.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="This node's name (default: the hostname).")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log verbosity.")] = (
        LogLevel.INFO
    ),
    server: Annotated[
        bool, typer.Option("--server", help="Also run a server in this process (implied by --dev).")
    ] = False,
    client: Annotated[
        bool,
        typer.Option("--client/--no-client", help="Run a client (a node that runs tasks)."),
    ] = True,
    raw_exec: Annotated[
        bool | None,
        typer.Option(
            "--raw-exec/--no-raw-exec",
            help="Offer the raw_exec driver (unisolated; default: only with --dev).",
        ),
    ] = None,
    template_host_files: Annotated[
        bool,
        typer.Option(
            "--template-host-files",
            help="Let templates read source files outside the task's directory.",
        ),
    ] = False,
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta",
            help="Node metadata KEY=VALUE, for constraints such as ${meta.rack} (repeatable).",
        ),
    ] = None,
    datacenter: Annotated[
        str | None, typer.Option("--datacenter", help="The datacenter this node is in [dc1].")
    ] = None,
    node_pool: Annotated[
        str | None,
        typer.Option("--node-pool", help="The node pool this node belongs to [default]."),
    ] = None,
    agent_http_addr: Annotated[
        str | None,
        typer.Option(
            "--agent-http-addr",
            help=(
                "HOST:PORT where this node serves task logs to the servers (port 0: any free "
                "port). Default: the local address that routes to the first server, any port."
            ),
        ),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="The host others reach this machine at (when it listens on 0.0.0.0): servers "
            "for this node's logs endpoint; agents for its server (/v1/status/peers).",
        ),
    ] = None,
    dns_addr: Annotated[
        str | None,
        typer.Option("--dns-addr", envvar="PODIUM_DNS_ADDR", help=DNS_ADDR_HELP),
    ] = None,
    secure: SecureOpt = False,
    cert_ttl: CertTtlOpt = None,
    ca_cert: CaCertOpt = None,
    ca_key: CaKeyOpt = None,
    identity_ttl: IdentityTtlOpt = None,
    join_token: Annotated[
        str | None,
        typer.Option(
            "--join-token",
            envvar="PODIUM_JOIN_TOKEN",
            help="PDM-1-…: join secure servers (https://) with this token; "
            "`podium join-token agent` prints it. Needed once: the certificate is kept.",
        ),
    ] = None,
    audit_log: Annotated[
        str | None, typer.Option("--audit-log", help=AUDIT_LOG_HELP, show_default=False)
    ] = None,
    acl: Annotated[
        bool,
        typer.Option(
            "--acl",
            help="With --server or --dev: turn access control on (every request needs an "
            "ACL token; podium acl bootstrap creates the first).",
        ),
    ] = False,
    max_kill_timeout: Annotated[
        str | None,
        typer.Option(
            "--max-kill-timeout",
            help="The longest any task's kill_timeout may delay SIGKILL after the kill "
            "signal, such as 30s or 2m [30s].",
        ),
    ] = None,
    docker_volumes: Annotated[
        bool | None,
        typer.Option(
            "--docker-volumes/--no-docker-volumes",
            help="Let docker tasks bind-mount host paths (default: only with --dev). Binds "
            "inside the allocation's own directory and named volumes are always allowed.",
        ),
    ] = None,
    docker_volume_allow: Annotated[
        list[str] | None,
        typer.Option(
            "--docker-volume-allow",
            help="With --docker-volumes: a host path prefix binds may name (repeatable; "
            "none given: any path).",
        ),
    ] = None,
    docker_allow_caps: Annotated[
        str | None,
        typer.Option(
            "--docker-allow-caps",
            help="Capabilities docker tasks may cap_add, comma-separated, or ALL "
            "[Docker's default set: AUDIT_WRITE,CHOWN,DAC_OVERRIDE,FOWNER,FSETID,KILL,"
            "MKNOD,NET_BIND_SERVICE,NET_RAW,SETFCAP,SETGID,SETPCAP,SETUID,SYS_CHROOT].",
        ),
    ] = None,
    exec_chroot: Annotated[
        list[str] | None,
        typer.Option(
            "--exec-chroot",
            help="A host path exec tasks see, read-only: PATH, or PATH:DEST to show it at "
            "DEST (absolute; repeatable). Given, it replaces the default list (/bin, /lib*, "
            "/usr, /sbin and the /etc essentials: passwd, group, hosts, resolv.conf, "
            "ld.so.*, certificates, time zone; never shadow).",
        ),
    ] = None,
    exec_user_denylist: Annotated[
        str | None,
        typer.Option(
            "--exec-user-denylist",
            help="Users exec tasks may not run as, comma-separated names or uids "
            "(default: root,bin,daemon,sys,adm,sync,shadow,operator); root and uid 0 are refused "
            "whatever it says.",
        ),
    ] = None,
    exec_uid_range: Annotated[
        str | None,
        typer.Option(
            "--exec-uid-range",
            help="FIRST-LAST: the uids exec tasks that name no user run as, one per "
            "allocation [70000-79999]; uids of the node's accounts are skipped.",
        ),
    ] = None,
    host_volume: Annotated[
        list[str] | None,
        typer.Option(
            "--host-volume",
            help="A host directory tasks may mount, NAME=PATH[,read_only] (repeatable; "
            "docs/volumes.md).",
        ),
    ] = None,
    device_file: Annotated[
        str | None,
        typer.Option(
            "--device-file",
            envvar="PODIUM_DEVICE_FILE",
            help="Simulate the devices (GPUs) described in this JSON file: a test aid "
            "(docs/devices.md).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="PODIUM_TOKEN",
            help="ACL token with node: write, to register this node with servers that run "
            "with --acl (needed once: the node then proves itself with its node secret).",
        ),
    ] = None,
    max_count: MaxCountOpt = None,
    max_request_body: MaxRequestBodyOpt = None,
    request_read_timeout: RequestReadTimeoutOpt = None,
    max_connections: MaxConnectionsOpt = None,
    max_log_streams: MaxLogStreamsOpt = None,
    shed_lag: ShedLagOpt = None,
    heartbeat_port: HeartbeatPortOpt = None,
    allowed_hosts: AllowedHostsOpt = None,
) -> None:
    """Run a Podium agent.

    --dev runs a server and a client in one process with throwaway state: a
    cluster of one machine.  Otherwise give --data-dir, and --server to run a
    server, or --servers to join one as a client.
    """
    with common.handle_errors():
        server_list = _split_servers(servers)
        node_meta = _parse_meta(meta)
        for flag, value in (("--datacenter", datacenter), ("--node-pool", node_pool)):
            if value is not None and not value.strip():
                common.usage(f"{flag} must not be empty")
        if agent_http_addr is not None:
            host, _, port = agent_http_addr.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                common.usage(
                    f"--agent-http-addr {agent_http_addr!r} must be HOST:PORT, "
                    "such as 10.0.0.5:0 or 0.0.0.0:4647"
                )
        if not dev and not data_dir:
            common.usage("give --data-dir (or --dev for a throwaway one-machine cluster)")
        try:
            from podium.runtime import (  # type: ignore[import-not-found, unused-ignore]
                AgentConfig,
                run_agent,
            )
        except ImportError as exc:
            common.fail(f"this build of podium cannot run an agent ({exc})")
        config = AgentConfig(
            dev=dev,
            data_dir=data_dir,
            http_addr=http_addr,
            servers=server_list,
            name=name,
            log_level=log_level.value,
        )
        # The roles and node settings only when asked for, so their defaults stay the runtime's.
        if node_meta:
            config.meta = node_meta
        if datacenter is not None:
            config.datacenter = datacenter.strip()
        if node_pool is not None:
            config.node_pool = node_pool.strip()
        if agent_http_addr is not None:
            config.agent_http_addr = agent_http_addr
        if advertise is not None:
            config.advertise_host = advertise
        if dns_addr is not None:
            config.dns_addr = check_dns_addr(dns_addr)
        if (secure or cert_ttl or ca_cert) and not (dev or server):
            common.usage(
                "--secure, --cert-ttl and --ca-cert/--ca-key are for a server (--dev or "
                "--server); an agent of remote servers is secure with https:// --servers "
                "and --join-token"
            )
        apply_tls_options(config, secure, cert_ttl, ca_cert, ca_key)
        if identity_ttl is not None and not (dev or server):
            common.usage("--identity-ttl is a server's setting: give it with --dev or --server")
        apply_identity_ttl(config, identity_ttl)
        if join_token is not None:
            if not server_list or not all(s.startswith("https://") for s in server_list):
                common.usage("--join-token needs --servers https://HOST:PORT (a secure server)")
            from podium.tls import TLSError
            from podium.tls.token import parse_token

            try:
                parse_token(join_token)
            except TLSError as exc:
                common.usage(f"--join-token: {exc}")
            config.join_token = join_token
        if audit_log is not None:
            config.audit_log = audit_log
        if server:
            config.server = True
        if not client:
            config.client = False
        if raw_exec is not None:
            config.raw_exec = raw_exec
        config.template_host_files = template_host_files
        apply_task_limits(
            config, max_kill_timeout, docker_volumes, docker_volume_allow, docker_allow_caps
        )
        apply_exec_options(config, exec_chroot, exec_user_denylist, exec_uid_range)
        apply_volumes_and_devices(config, host_volume, device_file)
        apply_limits(
            config,
            runs_server=dev or server,
            max_count=max_count,
            max_request_body=max_request_body,
            request_read_timeout=request_read_timeout,
            max_connections=max_connections,
            max_log_streams=max_log_streams,
            allowed_hosts=allowed_hosts,
            shed_lag=shed_lag,
            heartbeat_port=heartbeat_port,
        )
        config.acl = acl
        config.token = token
        try:
            outcome: object = run_agent(config)
            if inspect.isawaitable(outcome):  # tolerate a coroutine entry point
                outcome = asyncio.run(_await(outcome))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
    if isinstance(outcome, int) and outcome:
        raise typer.Exit(outcome)


async def _await(awaitable: Awaitable[object]) -> object:
    return await awaitable
