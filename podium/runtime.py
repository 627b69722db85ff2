"""The composition root: starts a server, an agent, or both in one process.

This is the only module that imports both :mod:`podium.server` and
:mod:`podium.agent`; the CLI's ``podium agent`` command calls :func:`run_agent`.
In ``--dev`` mode the server and the agent share one event loop, but the agent
still reaches the server through HTTP, exactly as it would across machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from podium import eventloop, gcpause
from podium.errors import PodiumError
from podium.models.volumes import HostVolume

log = logging.getLogger("podium")

DEFAULT_HTTP_ADDR = "127.0.0.1:7634"


@dataclass
class AgentConfig:
    dev: bool = False
    data_dir: str | None = None
    http_addr: str = DEFAULT_HTTP_ADDR
    servers: list[str] = field(default_factory=list)
    name: str | None = None
    log_level: str = "info"
    server: bool = False
    """Run a server in this process (implied by ``dev``)."""
    client: bool = True
    """Run an agent (node) in this process."""
    heartbeat_ttl: float = 10.0
    heartbeat_grace: float = 10.0
    """Seconds past the TTL before a silent node is marked down."""
    raw_exec: bool | None = None
    """Enable the raw_exec driver (default: only in dev mode)."""
    template_host_files: bool = False
    """Let templates read ``source`` files outside the task directory."""
    max_kill_timeout: float = 30.0
    """The agent's cap on every task's kill_timeout (seconds)."""
    docker_volumes: bool | None = None
    """Docker host bind mounts allowed (default: only in dev mode, for Compose's binds)."""
    docker_volume_allow: list[str] = field(default_factory=list)
    docker_allow_caps: list[str] | None = None
    exec_chroot: list[str] | None = None
    """``--exec-chroot`` binds (``PATH[:DEST]``); None: the driver's default list."""
    exec_user_denylist: list[str] | None = None
    """``--exec-user-denylist`` (names or uids); None: the driver's default list."""
    exec_uid_range: tuple[int, int] | None = None
    """``--exec-uid-range``; None: 70000-79999."""
    host_volumes: dict[str, HostVolume] = field(default_factory=dict)
    """``--host-volume`` declarations (docs/volumes.md)."""
    device_file: str | None = None
    """``--device-file``: simulated devices (docs/devices.md)."""
    meta: dict[str, str] = field(default_factory=dict)
    datacenter: str = "dc1"
    node_pool: str = "default"
    agent_http_addr: str | None = None
    """Where the agent serves logs (HOST:PORT, port 0: a free one).  Default: with a server in
    this process, the http_addr host; joining remote servers, the local address that routes to
    the first of them (so a server on another machine can reach it)."""
    advertise_host: str | None = None
    """The host registered as the node's http_addr when it listens on a wildcard address."""
    keyring_file: str | None = None
    """The key file variables are sealed with (created if missing); default: one created in
    <data_dir>/server/keyring/ on first start.  Never inside the store."""
    acl: bool = False
    """Access control on the server's API (``--acl``): every request needs a token that
    grants what its route requires (docs/acl.md)."""
    token: str | None = None
    """The ACL token the agent registers a new node with (``--token``/``PODIUM_TOKEN``)."""
    dns_addr: str | None = None
    """HOST:PORT of the service catalog's DNS server (with a server in this process);
    "" or "off" disables it.  None: 127.0.0.1:7653, skipped with a warning when taken."""
    secure: bool = False
    """TLS on the API, the agent's endpoint and every agent-server call (docs/tls.md)."""
    cert_ttl: float | None = None
    """Lifetime of the certificates the CA issues (None: 30 days)."""
    ca_cert: str | None = None
    ca_key: str | None = None
    """The CA to issue certificates with (default: <data_dir>/server/tls/, made if missing)."""
    join_token: str | None = None
    """``PDM-1-…``: how an agent of remote servers gets its first certificate."""
    identity_ttl: float | None = None
    """Lifetime of tasks' workload tokens (None: podium.server.identity.DEFAULT_TTL)."""
    audit_log: str | None = None
    """The audit log file (JSON lines, 0600, rotated); "off" disables it.  None:
    <data_dir>/server/audit/audit.log."""
    max_count: int | None = None
    """The most instances of a group and of a job (``--max-count``; None: the default)."""
    max_request_body: int | None = None
    """Bytes a request body may have (``--max-request-body``; None: edge's default)."""
    request_read_timeout: float | None = None
    """Seconds a request has to arrive, headers and body (``--request-read-timeout``)."""
    max_connections: int | None = None
    """Open connections per HTTP server (``--max-connections``; None: fit to the fd limit)."""
    max_log_streams: int | None = None
    """Log streams the server relays from agents at once (``--max-log-streams``)."""
    shed_lag: float | None = None
    """Event-loop lag past which syncs and reads are shed (``--shed-lag``; None: default)."""
    heartbeat_port: int | None = 0
    """The heartbeat lane's port (``--heartbeat-port``; 0: a free one; None: no lane;
    :mod:`podium.server.lane`)."""
    allowed_hosts: list[str] = field(default_factory=list)
    """Further names the API answers to while ACLs are off (``--allowed-hosts``; ``*``: any)."""
    etcd: list[str] = field(default_factory=list)
    """The etcd cluster's client URLs (``--etcd``): the store on etcd, with leader election
    among the servers that share it (docs/ha.md).  Empty: SQLite in the data dir."""
    etcd_cluster: str = "default"
    """The Podium cluster's name in etcd (keys under ``/podium/<name>/``)."""
    server_name: str | None = None
    """The server's name in ``podium server members`` (default: its URL)."""


def check_exec_options(
    chroot: list[str] | None, denylist: str | None, uid_range: str | None
) -> tuple[list[str] | None, list[str] | None, tuple[int, int] | None]:
    """The ``--exec-*`` flags checked as the exec driver will read them (the CLI may not
    import the drivers): ``ValueError`` names the flag and what is wrong."""
    from podium.drivers import rootfs, uids

    binds = None
    if chroot is not None:
        binds = []
        for spec in chroot:
            try:
                rootfs.parse_bind(spec)
            except PodiumError as exc:
                raise ValueError(f"--exec-chroot: {exc}") from None
            binds.append(spec)
    users = None
    if denylist is not None:
        users = [u.strip() for u in denylist.split(",") if u.strip()]
        for user in users:
            if not all(c.isalnum() or c in "._-" for c in user) or user.startswith("-"):
                raise ValueError(
                    f"--exec-user-denylist: {user!r} is not a user name or uid "
                    "(give names or uids separated by commas, such as nobody,1001)"
                )
    span = None
    if uid_range is not None:
        try:
            span = uids.parse_range(uid_range.strip())
        except PodiumError as exc:
            raise ValueError(f"--exec-uid-range: {exc}") from None
    return binds, users, span


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this process handles signals once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address {addr!r} must be HOST:PORT, such as 127.0.0.1:7634")
    return host.strip("[]"), int(port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _route_source(server_url: str) -> str | None:
    """The local address this machine uses to reach ``server_url`` (no packet is sent)."""
    from urllib.parse import urlsplit

    parts = urlsplit(server_url if "//" in server_url else f"http://{server_url}")
    if not parts.hostname:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(sockaddr)  # UDP connect only picks a route and a source address
            return str(s.getsockname()[0])
    except OSError:
        return None


def _agent_listen_addr(config: AgentConfig, api_host: str, servers: list[str]) -> tuple[str, int]:
    if config.agent_http_addr:
        return _split_addr(config.agent_http_addr)
    if not (config.dev or config.server) and servers:
        source = _route_source(servers[0])
        if source:
            return source, 0
    return (api_host if api_host not in ("0.0.0.0", "") else "127.0.0.1"), 0


def _server_url(config: AgentConfig, host: str, port: int, tls: bool) -> str:
    """The URL agents and other servers reach this server at (``/v1/status/peers``):
    ``--advertise``, else the address it listens on, else (listening on every address) the
    address of the interface its default route leaves by, else its host name."""
    name = config.advertise_host or (host if host not in ("0.0.0.0", "::", "") else "")
    if not name:
        name = _route_source("http://192.0.2.1") or socket.getfqdn()  # TEST-NET: no packet
    return f"{'https' if tls else 'http'}://{_url_host(name)}:{port}"


def _advertised(config: AgentConfig, bound_host: str, servers: list[str]) -> str:
    if config.advertise_host:
        return config.advertise_host
    if bound_host in ("0.0.0.0", "::", ""):
        return (_route_source(servers[0]) if servers else None) or "127.0.0.1"
    return bound_host


async def _start_dns(config: AgentConfig, store: Any) -> Any:
    """The catalog's DNS server, or None when disabled (or when the default address is taken:
    the warning says by what, and how to pick another)."""
    from podium.server.dns import DEFAULT_DNS_ADDR, DnsServer, bind_failure

    addr = (config.dns_addr if config.dns_addr is not None else DEFAULT_DNS_ADDR).strip()
    if addr.lower() in ("", "off"):
        return None
    host, port = _split_addr(addr)
    dns = DnsServer(store, host, port)
    try:
        await dns.start()
    except OSError as exc:
        why = bind_failure(addr, exc)
        if config.dns_addr is not None:
            raise OSError(
                f"cannot serve DNS: {why}; pick another address with --dns-addr HOST:PORT, "
                "or --dns-addr off"
            ) from exc
        log.warning(
            "DNS is off: %s; pick another address with --dns-addr HOST:PORT "
            "(or PODIUM_DNS_ADDR), or --dns-addr off to run without it",
            why,
        )
        return None
    return dns


def _load_keyring(config: AgentConfig, data_dir: Path, backend: Any = None) -> Any:
    """The keys variables are sealed with: --keyring-file, else <data_dir>/server/keyring/.
    On etcd (``backend``), every server must hold the cluster's key (podium.server.ha)."""
    from podium.server.keyring import Keyring, KeyringError

    try:
        if backend is not None:
            from podium.server.ha import cluster_keyring

            return cluster_keyring(backend, config.keyring_file, data_dir / "server" / "keyring")
        if config.keyring_file:
            return Keyring.from_file(Path(config.keyring_file))
        return Keyring.load_or_create(data_dir / "server" / "keyring")
    except KeyringError as exc:
        raise ValueError(str(exc)) from exc


def _server_tls(config: AgentConfig, data_dir: Path, host: str, port: int) -> Any:
    """The server's TLS state under ``--secure`` (None without), and the start-up checks
    that go with it: DNS stays on loopback; without TLS, a warning for a reachable API."""
    from podium.tls_runtime import is_loopback, open_server_tls

    if not config.secure:
        if not is_loopback(host):
            log.warning(
                "the HTTP API listens on %s:%d without --secure: anyone who can reach it can "
                "run any command on every node (raw_exec/exec jobs, as root), read and write "
                "every variable, register as a node and stop any job; use --secure",
                host,
                port,
            )
        return None
    dns = (config.dns_addr or "").strip()
    if dns and dns.lower() != "off" and not is_loopback(_split_addr(dns)[0]):
        raise ValueError(
            f"--dns-addr {dns} is not a loopback address: under --secure the DNS server "
            "answers only on this machine (DNS has no TLS); use 127.0.0.1:PORT or off"
        )
    from podium.tls import TLSError
    from podium.tls.ca import DEFAULT_CERT_TTL

    extra = [config.advertise_host] if config.advertise_host else []
    try:
        tls = open_server_tls(
            data_dir,
            host,
            ca_cert=config.ca_cert,
            ca_key=config.ca_key,
            cert_ttl=config.cert_ttl or DEFAULT_CERT_TTL,
            extra_names=extra,
        )
    except TLSError as exc:
        raise ValueError(str(exc)) from exc
    public = host if host not in ("0.0.0.0", "::", "") else (_route_source("8.8.8.8") or host)
    tls.advertise = f"https://{_url_host(public)}:{port}"
    log.info(
        "TLS on: CA %s (fingerprint %s); clients: --ca-cert %s",
        tls.ca.cert.subject.rfc4514_string(),
        tls.ca.fingerprint,
        config.ca_cert or tls.directory / "ca.crt",
    )
    return tls


async def _agent_tls(
    config: AgentConfig, settings: Any, servers: list[str], local: Any
) -> tuple[Any, Any]:
    """The agent's local state (its node id) and its certificate (kept, made by the server
    in this process, or obtained with --join-token)."""
    import uuid

    from podium.agent.localstate import LocalState
    from podium.tls import TLSError
    from podium.tls_runtime import agent_tls

    agent_dir = Path(settings.data_dir).absolute()
    agent_dir.mkdir(parents=True, exist_ok=True)
    state = LocalState(agent_dir / "agent.db")
    node_id = state.get("node_id")
    if not node_id:
        node_id = str(uuid.uuid4())
        state.put("node_id", node_id)
    name = settings.name or socket.gethostname()
    try:
        tls = await agent_tls(
            agent_dir / "tls",
            servers,
            node_id,
            name,
            join_token=config.join_token,
            local=local if not config.servers else None,
        )
    except TLSError as exc:
        state.close()
        raise ValueError(str(exc)) from exc
    return state, tls


def _open_audit(config: AgentConfig, data_dir: Path) -> Any:
    """The server's audit log: --audit-log, else <data_dir>/server/audit/audit.log; None when off."""
    from podium.server.audit import AuditLog

    where = (config.audit_log or "").strip()
    if where.lower() == "off":
        return None
    return AuditLog(Path(where) if where else data_dir / "server" / "audit" / "audit.log")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _uvicorn(
    app: Any,
    level: str,
    tls: ssl.SSLContext | None = None,
    limits: AgentConfig | None = None,
    keep_alive: int = 5,
) -> _Uvicorn:
    """``keep_alive``: seconds an idle connection is kept (uvicorn's default: 5)."""
    from podium.server import edge

    secure: dict[str, Any] = {}
    if tls is not None:
        from podium.tls_runtime import uvicorn_tls

        secure = uvicorn_tls(tls)
    limits = limits or AgentConfig()
    # The edge's guards (podium.server.edge): a body limit, a deadline for a request to
    # arrive, a cap on connections; uvicorn has none of them.
    app = edge.BodyLimit(app, limits.max_request_body or edge.DEFAULT_MAX_REQUEST_BODY)
    secure["http"] = edge.guarded_h11(
        limits.request_read_timeout or edge.DEFAULT_READ_TIMEOUT,
        limits.max_connections or edge.default_max_connections(),
        secure.get("http", H11Protocol),  # under TLS: the protocol that adds the TLS scope
    )
    config = uvicorn.Config(
        app,
        **secure,
        log_level="warning" if level != "debug" else "debug",
        access_log=level == "debug",
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=keep_alive,
        limit_concurrency=None,
        backlog=2048,
    )
    return _Uvicorn(config)


async def _start_lane(
    server: Any,
    app: Any,
    guard: Callable[[Any], Any],
    ctx: ssl.SSLContext | None,
    config: AgentConfig,
    host: str,
) -> Any:
    """The server's heartbeat lane (podium.server.lane), listening and told to agents:
    the API's TLS, edge guards and host check, on ``--heartbeat-port``."""
    from urllib.parse import urlsplit

    from podium.server.lane import HeartbeatLane

    assert config.heartbeat_port is not None
    keep_alive = int(server.config.heartbeat_ttl + server.config.heartbeat_grace) + 1
    try:
        sock = _bind(host, config.heartbeat_port)
    except OSError as exc:
        raise ValueError(
            f"--heartbeat-port {config.heartbeat_port}: cannot listen on {host} ({exc}); "
            "pick another port, 0 for a free one, or off"
        ) from None
    lane = HeartbeatLane(
        server,
        app,
        sock,
        # an agent keeps its lane connection from one heartbeat (every TTL/2) to the next
        lambda lane_app: _uvicorn(guard(lane_app), config.log_level, ctx, config, keep_alive),
        tls=ctx is not None,
        host=urlsplit(server.config.advertise_url).hostname,
    )
    await lane.start()
    return lane


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # every heartbeat and sync is an HTTP request: only worth seeing when debugging
    if level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _loopback_transport(server: str, config: AgentConfig, tls: Any = None) -> Any:
    """How the agent reaches a server in its own process (``--dev``, or ``--server``
    without ``--servers``): httpx, which the server has loaded anyway, instead of aiohttp
    (~10 MB of RSS once imported, a third of a dev agent's growth with 1,000 tasks).
    aiohttp's lower CPU per request (~0.1 vs ~0.5 ms) pays across many agents of one
    server (the simulator, a cluster's server); one agent's few dozen requests in a burst
    of 1,000 starts do not notice it.  None (aiohttp) for an agent of remote servers."""
    if not (config.dev or config.server) or config.servers:
        return None
    import httpx

    from podium.client._http import tls_context
    from podium.client.aio import KEEPALIVE

    return httpx.AsyncHTTPTransport(
        verify=tls.client_context if tls is not None else tls_context(server),
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE),
    )


def _vouch_for_local_agent(server: Any, agent: Any) -> None:
    """The agent of this process's own server needs no token to register its node: the
    server stores a secret for it directly (hashed, as registration would) and the agent
    presents it, so ``--dev --acl`` starts without a token."""
    from podium.models.acl import new_secret

    if server.store.node_secret(agent.node_id) is not None and agent.state.get("node_secret"):
        return
    secret = new_secret()
    txn = server.store.txn()
    txn.put_acl("node_secrets", server.trust.node_secret_record(agent.node_id, secret, txn.index))
    server.store.commit(txn)
    agent.state.put("node_secret", secret)
    agent.client.node_secrets[agent.node_id] = secret


SERVER_GC_THRESHOLD = (50_000, 20, 100)
"""CPython's default (700, 10, 10) runs a young collection every 700 allocations; a server
holding hundreds of thousands of stored models then spends 2-3x its work in the collector
(measured with ``podium sim``).  A server raises it, as the simulator does."""


def tune_gc() -> None:
    """Move what start-up loaded (the store, imported modules) out of the collector's
    sight (``gc.freeze``), make young collections rarer, and freeze what survives each full
    collection from then on (podium.gcpause: a full pass over a large store held the event
    loop for seconds)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLD)
    gcpause.WATCH.install()


async def serve(config: AgentConfig, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or cancellation)."""
    from podium.agent.agent import Agent
    from podium.agent.config import AgentSettings
    from podium.agent.http import create_agent_app
    from podium.client import AsyncClient
    from podium.server.api import create_app
    from podium.server.core import Server, ServerConfig
    from podium.server.proxy import DEFAULT_MAX_STREAMS
    from podium.state.datadir import open_etcd_store, open_store

    run_server = config.dev or config.server
    ephemeral = config.dev and config.data_dir is None
    data_dir = Path(config.data_dir or tempfile.mkdtemp(prefix="podium-dev-")).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    host, port = _split_addr(config.http_addr)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    uvicorns: list[tuple[_Uvicorn, socket.socket]] = []
    server = None
    store = None
    dns = None
    server_tls = agent_tls = None
    renewals: list[asyncio.Task[None]] = []
    audit = None
    store_lock = None
    agent_proxy = None
    ha = None
    forward = None
    lane = None
    if run_server:
        # first: a damaged or lost store stops the start before anything is written
        backend = None
        if config.etcd:
            store, backend, store_lock = open_etcd_store(data_dir, config.etcd, config.etcd_cluster)
        else:
            store, store_lock = open_store(data_dir)
        server_tls = _server_tls(config, data_dir, host, port)
        keyring = _load_keyring(config, data_dir, backend)
        dns = await _start_dns(config, store)
        server = Server(
            store,
            ServerConfig(
                name=config.server_name or "",
                advertise_url=_server_url(config, host, port, server_tls is not None),
                heartbeat_ttl=config.heartbeat_ttl,
                heartbeat_grace=config.heartbeat_grace,
                acl=config.acl or config.secure,  # --secure: TLS and ACL
                data_dir=str(data_dir / "server"),
                identity_ttl=config.identity_ttl or ServerConfig.identity_ttl,
                max_count=config.max_count or ServerConfig.max_count,
                shed_lag=ServerConfig.shed_lag if config.shed_lag is None else config.shed_lag,
            ),
            keyring=keyring,
        )
        if backend is not None:
            from podium.server.ha import HighAvailability

            ha = HighAvailability(server, backend, config.etcd, cluster=config.etcd_cluster)
            server.cluster = ha
            await server.start(lead=False)  # the duties start once elected
            await ha.start()
        else:
            await server.start()
        tune_gc()
        audit = _open_audit(config, data_dir)
        api = create_app(
            server,
            audit=audit,
            tls=server_tls,
            max_log_streams=config.max_log_streams or DEFAULT_MAX_STREAMS,
        )
        agent_proxy = api.state.agent_proxy
        app: Any = api
        if ha is not None:
            from podium.server.forward import LeaderForward

            app = forward = LeaderForward(api, ha, store, url=server.config.advertise_url)
        guard: Callable[[Any], Any] = lambda inner: inner  # noqa: E731
        if not server.config.acl:
            # Without tokens, the Host header is what stops DNS rebinding (podium.server.edge);
            # with ACLs on, a rebound page has no token, and the check would only get in the
            # way of load balancers' names.
            from podium.server.edge import HostCheck, local_names

            extra = [
                *config.allowed_hosts,
                *([config.advertise_host] if config.advertise_host else []),
            ]
            names = local_names(host, extra)
            guard = lambda inner: HostCheck(inner, names)  # noqa: E731
        app = guard(app)
        ctx = server_tls.server_context if server_tls is not None else None
        uvicorns.append((_uvicorn(app, config.log_level, ctx, config), _bind(host, port)))
        if config.heartbeat_port is not None:
            lane = await _start_lane(server, app, guard, ctx, config, host)
    servers = list(config.servers)
    if run_server and not servers:
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        scheme = "https" if server_tls is not None else "http"
        servers = [f"{scheme}://{_url_host(connect_host)}:{port}"]

    agent = None
    client = None
    if config.client:
        if not servers:
            raise ValueError("an agent needs --servers (or --dev)")
        raw_exec = config.raw_exec if config.raw_exec is not None else config.dev
        a_host, a_port = _agent_listen_addr(config, host, servers)
        settings = AgentSettings(
            data_dir=str(data_dir / "agent"),
            servers=servers,
            name=config.name,
            raw_exec_enabled=raw_exec,
            template_host_files=config.template_host_files,
            max_kill_timeout=config.max_kill_timeout,
            docker_volumes=(
                config.docker_volumes if config.docker_volumes is not None else config.dev
            ),
            docker_volume_allow=list(config.docker_volume_allow),
            docker_allow_caps=config.docker_allow_caps,
            exec_chroot=config.exec_chroot,
            exec_user_denylist=config.exec_user_denylist,
            meta=config.meta,
            datacenter=config.datacenter,
            node_pool=config.node_pool,
            host_volumes=dict(config.host_volumes),
            device_file=config.device_file,
        )
        if config.exec_uid_range is not None:
            settings.exec_uid_range = config.exec_uid_range
        state = None
        if config.secure or config.join_token or servers[0].startswith("https://"):
            state, agent_tls = await _agent_tls(config, settings, servers, server_tls)
        client = AsyncClient(
            servers[0],
            timeout=60.0,
            transport=_loopback_transport(servers[0], config, agent_tls),
            ssl_context=agent_tls.client_context if agent_tls is not None else None,
            token=config.token,
            fallbacks=servers[1:],  # the cluster's other servers, asked when one is down
        )
        agent = Agent(settings, client, state=state)
        if server is not None and not config.servers:
            _vouch_for_local_agent(server, agent)
        agent_sock = _bind(a_host, a_port)
        bound_host, bound_port = agent_sock.getsockname()[:2]
        advertised = _url_host(_advertised(config, bound_host, servers))
        agent_app: Any = create_agent_app(agent)
        scheme = "http"
        if agent_tls is not None:
            from podium.tls_runtime import agent_app_guard, follow_trust, renew_agent

            agent_app, scheme = agent_app_guard(agent_app), "https"
            agent_tls.on_client_context.append(client._set_ssl_context)
            local_tls = server_tls if not config.servers else None
            renew_now = asyncio.Event()
            renewals.append(
                asyncio.create_task(renew_agent(agent_tls, servers, local_tls, renew_now))
            )
            renewals.append(
                asyncio.create_task(follow_trust(agent_tls, servers, local_tls, renew_now))
            )
        else:
            # Plain HTTP: only the Host header keeps a rebound web page from reading task
            # logs (under TLS the endpoint wants a server's client certificate). Servers
            # dial the advertised address, so that is one of the names.
            from podium.server.edge import HostCheck, local_names

            agent_app = HostCheck(
                agent_app, local_names(bound_host, [advertised, *config.allowed_hosts])
            )
        ctx = agent_tls.server_context if agent_tls is not None else None
        uvicorns.append((_uvicorn(agent_app, config.log_level, ctx, config), agent_sock))
        await agent.start(f"{scheme}://{advertised}:{bound_port}")
        log.info(
            "agent %s: logs served on %s://%s:%d", agent.node_name, scheme, advertised, bound_port
        )
    if server_tls is not None:
        from podium.tls_runtime import renew_server

        renewals.append(asyncio.create_task(renew_server(server_tls)))

    serve_tasks = [asyncio.create_task(u.serve(sockets=[s]), name="http") for u, s in uvicorns]
    if config.dev:
        log.info(
            "Podium dev agent: API %s://%s:%d, data in %s%s",
            "https" if server_tls is not None else "http",
            host,
            port,
            data_dir,
            " (temporary)" if ephemeral else "",
        )
    if server_tls is not None:
        log.info(
            "clients: export PODIUM_ADDR=%s PODIUM_CACERT=%s",
            servers[0],
            config.ca_cert or server_tls.directory / "ca.crt",
        )
    if server is not None and server.config.acl:
        log.info(
            "access control is on: everything is denied without a token; "
            "`podium acl bootstrap` creates the management token (once)"
        )
    if ready is not None:
        ready.set()
    try:
        done_waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([done_waiter, *serve_tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in serve_tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        log.info("shutting down")
        for t in renewals:
            t.cancel()
        if agent is not None:
            if ephemeral:
                # Nobody could re-attach to these tasks later: stop them now.
                await agent.stop_all_tasks()
            await agent.stop()
        if client is not None:
            await client.aclose()
        if store is not None:
            store.release_waiters()  # blocking queries answer now, so HTTP can close cleanly
        for u, _ in uvicorns:
            u.should_exit = True
        for t in serve_tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(t, 5)
        if agent_proxy is not None:
            await agent_proxy.aclose()
        if lane is not None:
            await lane.stop()
        if forward is not None:
            await forward.aclose()
        if ha is not None:
            await ha.stop()  # resign first: a successor takes over at once
        if dns is not None:
            await dns.stop()
        if server is not None:
            await server.stop()
        if store is not None:
            store.close()
        if store_lock is not None:
            store_lock.close()
        if audit is not None:
            audit.close()
        if ephemeral:
            shutil.rmtree(data_dir, ignore_errors=True)


def run_agent(config: AgentConfig) -> int:
    """Blocking entry point of ``podium agent``; returns the exit status."""
    setup_logging(config.log_level)
    try:
        eventloop.run(serve(config))
    except KeyboardInterrupt:
        return 0
    except PodiumError as exc:
        from podium.state.errors import StoreError  # the agent alone never loads the store

        if not isinstance(exc, StoreError):
            raise
        print(f"podium: {exc}", file=sys.stderr)  # one line: the file and the recovery
        return 1
    except OSError as exc:
        print(f"podium: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"podium: {exc}", file=sys.stderr)
        return 1
    return 0


def run_server(config: AgentConfig) -> int:
    config.server = True
    config.client = False
    return run_agent(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_agent(AgentConfig(dev=True, data_dir=os.environ.get("PODIUM_DATA_DIR"))))
