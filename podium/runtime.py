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
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from podium import eventloop

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


def _load_keyring(config: AgentConfig, data_dir: Path) -> Any:
    """The keys variables are sealed with: --keyring-file, else <data_dir>/server/keyring/."""
    from podium.server.keyring import Keyring, KeyringError

    try:
        if config.keyring_file:
            return Keyring.from_file(Path(config.keyring_file))
        return Keyring.load_or_create(data_dir / "server" / "keyring")
    except KeyringError as exc:
        raise ValueError(str(exc)) from exc


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _uvicorn(app: Any, level: str) -> _Uvicorn:
    config = uvicorn.Config(
        app,
        log_level="warning" if level != "debug" else "debug",
        access_log=level == "debug",
        lifespan="off",
        timeout_graceful_shutdown=2,
        limit_concurrency=None,
        backlog=2048,
    )
    return _Uvicorn(config)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # every heartbeat and sync is an HTTP request: only worth seeing when debugging
    if level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _loopback_transport(server: str, config: AgentConfig) -> Any:
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
        verify=tls_context(server), limits=httpx.Limits(keepalive_expiry=KEEPALIVE)
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
    sight (``gc.freeze``) and make young collections rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLD)


async def serve(config: AgentConfig, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or cancellation)."""
    from podium.agent.agent import Agent
    from podium.agent.config import AgentSettings
    from podium.agent.http import create_agent_app
    from podium.client import AsyncClient
    from podium.server.api import create_app
    from podium.server.core import Server, ServerConfig
    from podium.state import SqliteBackend, StateStore

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
    if run_server:
        keyring = _load_keyring(config, data_dir)
        store = StateStore(SqliteBackend(data_dir / "server" / "state.db"))
        dns = await _start_dns(config, store)
        server = Server(
            store,
            ServerConfig(
                heartbeat_ttl=config.heartbeat_ttl,
                heartbeat_grace=config.heartbeat_grace,
                acl=config.acl,
                data_dir=str(data_dir / "server"),
            ),
            keyring=keyring,
        )
        await server.start()
        tune_gc()
        uvicorns.append((_uvicorn(create_app(server), config.log_level), _bind(host, port)))
    servers = list(config.servers)
    if run_server and not servers:
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        servers = [f"http://{connect_host}:{port}"]

    agent = None
    client = None
    if config.client:
        if not servers:
            raise ValueError("an agent needs --servers (or --dev)")
        client = AsyncClient(
            servers[0],
            timeout=60.0,
            transport=_loopback_transport(servers[0], config),
            token=config.token,
        )
        raw_exec = config.raw_exec if config.raw_exec is not None else config.dev
        a_host, a_port = _agent_listen_addr(config, host, servers)
        settings = AgentSettings(
            data_dir=str(data_dir / "agent"),
            servers=servers,
            name=config.name,
            raw_exec_enabled=raw_exec,
            template_host_files=config.template_host_files,
            meta=config.meta,
            datacenter=config.datacenter,
            node_pool=config.node_pool,
        )
        agent = Agent(settings, client)
        if server is not None and not config.servers:
            _vouch_for_local_agent(server, agent)
        agent_sock = _bind(a_host, a_port)
        bound_host, bound_port = agent_sock.getsockname()[:2]
        advertised = _url_host(_advertised(config, bound_host, servers))
        uvicorns.append((_uvicorn(create_agent_app(agent), config.log_level), agent_sock))
        await agent.start(f"http://{advertised}:{bound_port}")
        log.info("agent %s: logs served on http://%s:%d", agent.node_name, advertised, bound_port)

    serve_tasks = [asyncio.create_task(u.serve(sockets=[s]), name="http") for u, s in uvicorns]
    if config.dev:
        log.info(
            "Podium dev agent: API http://%s:%d, data in %s%s",
            host,
            port,
            data_dir,
            " (temporary)" if ephemeral else "",
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
        if dns is not None:
            await dns.stop()
        if server is not None:
            await server.stop()
        if store is not None:
            store.close()
        if ephemeral:
            shutil.rmtree(data_dir, ignore_errors=True)


def run_agent(config: AgentConfig) -> int:
    """Blocking entry point of ``podium agent``; returns the exit status."""
    setup_logging(config.log_level)
    try:
        eventloop.run(serve(config))
    except KeyboardInterrupt:
        return 0
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
