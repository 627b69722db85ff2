"""One simulation: start the server and the agents, submit the jobs, measure, check.

The figures (printed by ``podium sim`` as its last line):

- ``seconds``: from the first job registration to the moment the last instance
  was first reported by its agent (running, or already exited when failures are
  injected), as stamped by the server when the report arrived;
- ``scheduler_placements_per_s``: placements committed over the time spent
  inside :meth:`Server.process_eval` (snapshot, scheduler, plan applier);
- ``server_rss_mb``: peak RSS of this process (which holds the agents too unless
  ``agent_procs``; then ``agents_rss_mb`` is the workers' peak, summed);
- ``server_cpu_s``: CPU seconds this process used from the first registration on
  (``agents_cpu_s``: the agents' worker processes', summed, over the same span);
- ``api_p50_ms`` / ``api_p99_ms``: latencies seen by :mod:`podium.sim.probe` (its job
  registrations and reads pooled, not its heartbeats; ``api_p99_ms_by_op`` per kind of
  request, heartbeats included);
- ``commits``, ``commit_ms_p50`` / ``commit_ms_p99``: the server's commits over the same
  span and the time of each ``StateStore.commit`` (rows encoded, the backend's durable
  write, the tables updated, the waiters woken), ``commit_s`` their sum (the event loop
  does nothing else meanwhile); ``store_write_ms_p50`` / ``_p99`` and ``store_write_s``:
  the backend's write alone (SQLite's transaction, etcd's txn; nothing for ``memory``).

- ``nodes_down``, ``allocs_lost``, ``placements_total``: nodes the servers declared down over
  the timed span, the run's allocations lost, and every allocation made for the run's jobs
  (replacements included).  With ``fail_rate`` 0 any node down, any allocation lost or more
  placements than the target is a broken invariant (:func:`podium.sim.health.stability_problems`);
- ``event_loop_lag_p99_ms``: how late the server's event loop (``server``) and the agents'
  worker processes' (``agents``: the worst worker's) ran a timer due every 0.1 s, over the
  timed span;
- ``shed``: requests the server answered 429 because its loop ran more than ``shed_lag``
  behind (``sync``, ``read``; podium.server.shed), over the whole run;
- ``heartbeats``: heartbeats' times to their answers over the timed span (``count``,
  ``p50_ms``, ``p99_ms``, ``max_ms``): ``probe``, the probe's own node's, one heartbeat a
  round from a process with nothing else to do (what a real machine's agent would see);
  ``agents``, the simulated agents', from first send to answer, retries included, which also
  counts how late their shared worker's loop noticed the answer (with several worker
  processes, the worst one's quantiles);
- ``gc_full_pauses``: the full (generation 2) collections of the server's process and of the
  worst agents' worker over the timed span: ``count``, ``max_ms``, ``total_s``
  (:mod:`podium.gcpause` keeps them short by freezing their survivors);
- ``machine``: CPU model, cpus, Python, load and a calibration loop's milliseconds measured
  at the start of the run (:func:`podium.sim.health.machine`), so that figures from other
  machines can be set beside these.
With the store on etcd (:mod:`podium.sim.etcd`), also ``etcd_endpoints``,
``etcd_members`` (members this run started; None for a cluster given by ``--etcd``),
``etcd_cpu_s`` (the CPU those members used over the same span as ``server_cpu_s``),
``etcd_put_ms_p50`` (etcd's own floor: single small puts through the same client,
measured once the agents are registered, before the jobs arrive) and
``etcd_reload_matches``: a fresh backend's load of the cluster returns the index and the
allocations the server holds (else a broken invariant).

With ``failover`` (etcd, agent worker processes): two servers on the etcd cluster, the
leader crashed once half the instances are placed; ``failover`` gives the placements at the
crash (``at_placements``), the seconds until the other led (``new_leader_after_s``, at most
10 or a broken invariant), what the survivor lacks of the crashed leader's jobs, nodes and
allocations and of the run's jobs (``lost_writes``, 0 or a broken invariant), and its first
placements of the run's instances (``placements_total``: the target, each placed once).  The
invariants and ``etcd_reload_matches`` are then checked on the survivor's store.

With ``secure`` (TLS with a cluster CA, ACL on, each agent with its own certificate: see
:mod:`podium.sim.secure`), also ``secure``: what the TLS listener saw (connections, those
with an agent certificate, the nodes those named) and what it answered a caller with no
token and no certificate (401s expected; anything else is a broken invariant).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn

from podium import eventloop, gcpause
from podium.client import AsyncClient, ServerUnreachable
from podium.client import acl as acl_endpoints
from podium.errors import APIError
from podium.models import AllocClientUpdate, ClientStatus, JobSpec
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.server.forward import LeaderForward
from podium.server.ha import HighAvailability
from podium.server.lane import HeartbeatLane
from podium.sim import health, invariants
from podium.sim.etcd import SimEtcd
from podium.sim.nodes import (
    GC_THRESHOLD,
    HEARTBEAT_SECONDS,
    SYNC_WAIT,
    SimAgent,
    SimDriver,
    node_shapes,
    raise_fd_limit,
    sim_settings,
)
from podium.sim.workload import sim_job
from podium.state import Backend, NullBackend, SqliteBackend, StateStore, Txn
from podium.state.backend import Row
from podium.state.events import event_count

log = logging.getLogger("podium.sim")


@dataclass
class SimConfig:
    nodes: int = 100
    jobs: int = 10
    count: int = 100
    """Instances per job."""
    store: str = "sqlite"
    """``sqlite`` (in a temporary directory unless ``data_dir``), ``memory``, or ``etcd``
    (real etcd: members of the run's own unless ``etcd``)."""
    etcd: list[str] | None = None
    """With ``store="etcd"``: an etcd cluster's client URLs to use (under a fresh cluster
    name, deleted at the end) instead of starting members."""
    etcd_members: int = 1
    """With ``store="etcd"`` and no ``etcd``: members to start (3: the quorum's cost)."""
    failover: bool = False
    """With ``store="etcd"`` and ``agent_procs``: two servers on the etcd cluster, one
    leading; the leader crashes once half the instances are placed (see ``_failover``)."""
    node_classes: int = 4
    constraints: bool = False
    spread_every: int = 10
    """With ``constraints``, every n-th job also spreads over racks (0: none)."""
    run_for: float = 0.0
    """Seconds each task runs (0: until stopped)."""
    fail_rate: float = 0.0
    """Share of tasks that exit 1 within ``fail_within`` seconds of starting."""
    fail_within: float = 5.0
    workers: int = 1
    heartbeat_ttl: float | None = None
    """Default: 10 s, or nodes / 50 s for big clusters (5,000 nodes: 100 s)."""
    shed_lag: float | None = None
    """The server's ``--shed-lag`` (podium.server.shed).  Default: the server's own with
    ``agent_procs``; 0 (never shed) with the agents in the server's process, whose event
    loop they share: their own work would count as the server's overload."""
    ineligible: float = 0.01
    """Share of nodes marked ineligible before the jobs arrive (nothing may land there)."""
    agent_procs: int = 0
    """Run the agents in this many worker processes over real HTTP (0: in this process,
    through httpx's ASGI transport)."""
    secure: bool = False
    """TLS on the API with a cluster CA, ACL on, agents with their own certificates
    (needs ``agent_procs`` >= 1: real sockets)."""
    probe: bool = True
    probe_interval: float = 0.05
    events: bool = False
    """A subscriber of the event stream in another process, over a real socket, from before
    the jobs arrive; every event the server's commits made must reach it (else a broken
    invariant).  Not with ``failover`` or ``secure``."""
    timeout: float = 1800.0
    seed: int = 0
    data_dir: str | None = None
    progress: Callable[[str], None] | None = None


@dataclass
class SimResult:
    figures: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _ms(values: list[float], q: float) -> float | None:
    return round(_percentile(values, q), 3) if values else None


class _TimedBackend:
    """The store's backend, timing each durable write (``ms``) while ``on``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.on = False
        self.ms: list[float] = []

    def load(self) -> tuple[int, Iterable[Row]]:
        return self.inner.load()

    def commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        if not self.on:
            return self.inner.commit(index, puts, deletes)
        start = time.perf_counter()
        self.inner.commit(index, puts, deletes)
        self.ms.append((time.perf_counter() - start) * 1000.0)
        return None

    def close(self) -> None:
        self.inner.close()

    def cluster_id(self) -> str | None:
        return self.inner.cluster_id()

    def set_cluster_id(self, cluster_id: str) -> None:
        self.inner.set_cluster_id(cluster_id)

    def snapshot(self, dest: str | os.PathLike[str]) -> None:
        self.inner.snapshot(dest)


class _Commits:
    """Times every ``StateStore.commit`` of the server (``ms``) while ``on``: wraps the
    store's method, through which every write of the server passes."""

    def __init__(self, store: StateStore) -> None:
        self.on = False
        self.ms: list[float] = []
        self.events: dict[int, int] | None = None
        """Once set (``--events``): per committed index, the changes it made to the
        event stream's topics (what a subscriber must be sent for it)."""
        self._inner = store.commit
        store.commit = self  # type: ignore[method-assign]

    def __call__(self, txn: Txn) -> int:
        if not self.on:
            index = self._inner(txn)
        else:
            start = time.perf_counter()
            index = self._inner(txn)
            self.ms.append((time.perf_counter() - start) * 1000.0)
        if self.events is not None and (n := event_count(txn)):
            self.events[index] = n
        return index


class _Reports:
    """Counts instances first reported by their agents (wraps ``Server.client_update_many``
    of each server, through which every agent's report passes, batched or not).  With
    several servers (``failover``), an instance counted on one is never counted again on
    another (a report the crashed leader took and the next one gets again)."""

    def __init__(self, *servers: Server) -> None:
        self.first = 0
        self.last_at = 0.0
        self.counted: set[str] | None = set() if len(servers) > 1 else None
        for server in servers:
            inner = server.client_update_many
            server.client_update_many = self._wrap(server, inner)  # type: ignore[method-assign,assignment]

    def _wrap(
        self, server: Server, inner: Callable[[list[tuple[str, list[AllocClientUpdate]]]], int]
    ) -> Callable[[list[tuple[str, list[AllocClientUpdate]]]], int]:
        def counted(reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
            self._count(server.store, reports)
            return inner(reports)

        return counted

    def _count(self, store: StateStore, reports: list[tuple[str, list[AllocClientUpdate]]]) -> None:
        seen: set[str] = set() if self.counted is None else self.counted
        for _node_id, updates in reports:
            for u in updates:
                if u.client_status == ClientStatus.PENDING or u.id in seen:
                    continue
                alloc = store.alloc(u.id)
                if (
                    alloc is not None
                    and alloc.client_status == ClientStatus.PENDING
                    and alloc.previous_allocation is None
                    and alloc.job_id.startswith("sim-")
                ):
                    seen.add(u.id)
                    self.first += 1
                    self.last_at = time.time()


BACKLOG = 4096
"""Listen backlog: thousands of agents connect at once when worker processes start."""


def _shed_lag(cfg: SimConfig) -> float:
    if cfg.shed_lag is not None:
        return cfg.shed_lag
    return ServerConfig.shed_lag if cfg.agent_procs > 0 else 0.0


def _listen() -> socket.socket:
    """A listening socket on loopback, on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


async def _serve_http(
    app: Any, tls: dict[str, Any] | None = None, sock: socket.socket | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """The real HTTP listener (loopback, a free port, or ``sock``) the probe and agent
    workers talk to; HTTPS with ``tls`` (uvicorn arguments, see
    :func:`podium.sim.secure.uvicorn_args`).

    Agents keep their connections between requests (each holds a blocking query of up
    to ``SYNC_WAIT``), so the idle keep-alive timeout is longer than that."""
    sock = sock or _listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=BACKLOG,
        timeout_keep_alive=int(SYNC_WAIT * 2),
        **(tls or {}),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="sim-http")
    return server, task, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


async def _serve_lane(server: Server, app: Any, tls: dict[str, Any] | None = None) -> HeartbeatLane:
    """The server's heartbeat lane (podium.server.lane) beside its listener, as `podium
    server` runs one: agents learn its URL from their registrations' answers."""

    def make(lane_app: Any) -> uvicorn.Server:
        config = uvicorn.Config(
            lane_app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=BACKLOG,
            timeout_keep_alive=int(SYNC_WAIT * 2),  # as the API's: agents keep theirs
            **(tls or {}),
        )
        return uvicorn.Server(config)  # on a thread, uvicorn leaves signals alone

    lane = HeartbeatLane(server, app, _listen(), make, tls=tls is not None)
    await lane.start()
    return lane


async def _crash_http(http: tuple[uvicorn.Server, asyncio.Task[None], str]) -> None:
    """Stop a listener as a killed process's would stop: the listening socket closed
    (connections refused from now on) and every open connection reset, mid-request
    or not (no answer is sent on any)."""
    server, task, _ = http
    server.should_exit = server.force_exit = True
    for listener in server.servers:
        listener.close()
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await task


@dataclass
class _Peer:
    """One of the servers of a ``failover`` simulation: its own store on etcd, its own
    replica and election, its API behind :class:`LeaderForward`, on its own port."""

    url: str
    server: Server
    store: StateStore
    backend: _TimedBackend
    commits: _Commits
    ha: HighAvailability
    forward: LeaderForward
    http: tuple[uvicorn.Server, asyncio.Task[None], str]
    lane: HeartbeatLane
    crashed: bool = False

    @classmethod
    async def start(cls, etcd: SimEtcd, ttl: float, workers: int, shed_lag: float) -> _Peer:
        sock = _listen()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        inner = etcd.backend()
        backend = _TimedBackend(inner)
        store = StateStore(backend)
        commits = _Commits(store)
        server = Server(
            store,
            ServerConfig(
                advertise_url=url,
                heartbeat_ttl=ttl,
                heartbeat_grace=ttl,
                workers=workers,
                shed_lag=shed_lag,
            ),
        )
        ha = HighAvailability(server, inner, etcd.endpoints, cluster=etcd.cluster)
        server.cluster = ha
        await server.start(lead=False)  # the duties start once elected
        await ha.start()
        forward = LeaderForward(create_app(server), ha, store, url=url)
        http = await _serve_http(forward, sock=sock)
        lane = await _serve_lane(server, forward)
        return cls(url, server, store, backend, commits, ha, forward, http, lane)

    async def crash(self) -> None:
        """As kill -9: the listener gone at once, no resignation (the lease runs out)."""
        self.crashed = True
        await _crash_http(self.http)
        await self.lane.stop()
        await self.ha.crash()

    async def stop(self) -> None:
        if not self.crashed:
            await self.lane.stop()
            self.http[0].should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.http[1]
            await self.ha.stop()
        self.store.release_waiters()
        await self.forward.aclose()
        await self.server.stop()
        self.store.close()


async def _leads(peers: list[_Peer], timeout: float) -> _Peer:
    """The peer (not crashed) that leads, once one does; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            for p in peers:
                if not p.crashed and p.ha.is_leader():
                    return p
            await asyncio.sleep(0.05)


NEW_LEADER_WITHIN = 10.0
"""Seconds the survivor has to take the lead after the leader's crash (the issue's bound)."""


async def _failover(
    peers: list[_Peer], placed: Callable[[], int], half: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Once ``placed()`` reaches ``half``, crash the leader; answer when another leads."""
    while placed() < half:
        await asyncio.sleep(0.02)
    leader = await _leads(peers, 30.0)
    at = placed()
    crashed_at = time.monotonic()
    await leader.crash()
    say(f"leader {leader.url} crashed at {at:,} placements")
    survivor = await _leads(peers, NEW_LEADER_WITHIN * 3)
    after = time.monotonic() - crashed_at
    say(f"{survivor.url} leads {after:.1f}s after the crash")
    return {"at_placements": at, "new_leader_after_s": round(after, 2), "crashed": leader}


def _lost_writes(crashed: StateStore, survivor: StateStore, job_ids: list[str]) -> list[str]:
    """What the survivor lacks: a job the simulation registered, or any job, node or
    allocation the crashed leader held (all of them acknowledged commits)."""
    lost = [f"job {j} registered by the simulation" for j in job_ids if survivor.job(j) is None]
    lost += [
        f"job {j.id} of the crashed leader"
        for j in crashed.jobs()
        if survivor.job(j.id, j.namespace) is None
    ]
    lost += [
        f"node {n.name} of the crashed leader"
        for n in crashed.nodes()
        if survivor.node(n.id) is None
    ]
    lost += [
        f"allocation {a.name} of the crashed leader"
        for a in crashed.allocs()
        if survivor.alloc(a.id) is None
    ]
    if survivor.index < crashed.index:
        lost.append(f"the survivor's index {survivor.index} < the crashed leader's {crashed.index}")
    return lost


async def _register(client: AsyncClient, spec: JobSpec, timeout: float) -> None:
    """Register ``spec``, again while no server can take it (a leader being elected:
    503, or a server gone): registering the same spec twice changes nothing placed."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await client.register_job(spec)
                return
            except ServerUnreachable:
                pass
            except APIError as exc:
                if exc.status != 503:
                    raise
            await asyncio.sleep(0.2)


def _child_env(**extra: str) -> dict[str, str]:
    """The environment of the workers and the probe: this one, less any ACL token or CA
    of the caller's (an agent proves itself with its certificate, never a token), plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PODIUM_TOKEN", "PODIUM_CACERT")}
    env.update(extra)
    return env


async def _start_workers(
    cfg: SimConfig, address: str, tmp: Path, tls_dir: Path | None = None
) -> list[asyncio.subprocess.Process]:
    """``agent_procs`` processes of :mod:`podium.sim.agents`, each with its share of nodes
    (and, secure, the directory of their certificates)."""
    secure = ["--tls-dir", str(tls_dir)] if tls_dir is not None else []
    procs = min(cfg.agent_procs, cfg.nodes)
    out = []
    for k in range(procs):
        first = cfg.nodes * k // procs
        count = cfg.nodes * (k + 1) // procs - first
        # fmt: off
        out.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "podium.sim.agents", address,
            "--nodes", str(cfg.nodes), "--first", str(first), "--count", str(count),
            "--node-classes", str(cfg.node_classes), "--seed", str(cfg.seed),
            "--fail-rate", str(cfg.fail_rate), "--fail-within", str(cfg.fail_within),
            "--data-dir", str(tmp), *secure,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_child_env(),
        ))
        # fmt: on
    return out


def _tell(worker: asyncio.subprocess.Process, command: str) -> None:
    """A line to a worker of agents (``reset``, ``figures``: see :mod:`podium.sim.agents`)."""
    if worker.stdin is not None and not worker.stdin.is_closing():
        worker.stdin.write(command.encode() + b"\n")


async def _worker_figures(workers: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    """Each worker's figures line (its RSS, its event loop's lag), asked for while its
    agents still run; a worker that does not answer within 30 s is left out."""
    out: list[dict[str, Any]] = []
    for w in workers:
        _tell(w, "figures")
    for w in workers:
        if w.stdout is None:
            continue
        with contextlib.suppress(TimeoutError, ValueError):
            async with asyncio.timeout(30):
                while line := await w.stdout.readline():
                    if line.startswith(b"{"):
                        out.append(json.loads(line))
                        break
    return out


WORKER_STOP_WAIT = 5.0
"""Seconds a worker has to stop its agents once told (its figures were taken before): past
it, it is killed.  Its thousands of simulated agents hold nothing real, and stopping a
million mock tasks one by one took most of a full-size run's 30 s wait."""


async def _stop_workers(workers: list[asyncio.subprocess.Process]) -> None:
    """Close each worker's stdin (it stops its agents and exits); kill what lingers."""
    for w in workers:
        if w.stdin is not None and not w.stdin.is_closing():
            w.stdin.close()
    for w in workers:
        try:
            async with asyncio.timeout(WORKER_STOP_WAIT):
                if w.stdout is not None:
                    await w.stdout.read()
                await w.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                w.kill()
            await w.wait()


async def _simulate(cfg: SimConfig, tmp: Path, etcd: SimEtcd | None) -> SimResult:
    say = cfg.progress or (lambda _msg: None)
    host = health.machine()  # before anything runs: the calibration loop measures the CPU
    say(
        f"machine: {host['cpu_model']}, {host['cpus']} cpus, python {host['python']}, "
        f"calibration {host['calibration_ms']} ms, load {host['load']}"
    )
    proc = psutil.Process()
    lag = health.LagSampler()
    lag.start()
    ttl = cfg.heartbeat_ttl or max(10.0, cfg.nodes / 50.0)
    peers: list[_Peer] = []
    inner: Backend
    if etcd is not None and cfg.failover:
        inner = NullBackend()  # unused: each peer has its own backend on etcd
    elif etcd is not None:
        inner = etcd.backend()
    elif cfg.store == "sqlite":
        inner = SqliteBackend(tmp / "server" / "state.db")
    else:
        inner = NullBackend()
    backend = _TimedBackend(inner)
    store = StateStore(backend)
    commits = _Commits(store)
    tls = None
    counts = None
    if cfg.secure:
        from podium.sim import secure  # TLS (cryptography) only when secure

        tls = secure.server_tls(tmp / "server" / "tls")
        counts = secure.TLSCounts()
    server = Server(
        store,
        ServerConfig(
            heartbeat_ttl=ttl,
            heartbeat_grace=ttl,
            workers=cfg.workers,
            shed_lag=_shed_lag(cfg),
            acl=cfg.secure,
            data_dir=str(tmp / "server") if cfg.secure else None,
        ),
    )
    app: Any
    if etcd is not None and cfg.failover:
        # two servers on the cluster: the first leads before the second starts
        store.close()
        peers.append(await _Peer.start(etcd, ttl, cfg.workers, _shed_lag(cfg)))
        await _leads(peers, 30.0)
        peers.append(await _Peer.start(etcd, ttl, cfg.workers, _shed_lag(cfg)))
        first = peers[0]
        server, store, backend, commits = first.server, first.store, first.backend, first.commits
        app = first.forward
        reports = _Reports(*(p.server for p in peers))
        urls = [p.url for p in peers]
        client = AsyncClient(urls[0], fallbacks=urls[1:], timeout=300)
        say(f"servers {', '.join(urls)} on etcd, {first.url} leads")
    else:
        await server.start()
        reports = _Reports(server)
        app = create_app(server, tls=tls)
        client = AsyncClient("http://podium", transport=httpx.ASGITransport(app=app), timeout=300)
    token = ""
    if cfg.secure:
        # the management token, as `podium acl bootstrap` prints it: the jobs, the
        # eligibility changes and the probe's requests carry it
        token = (await client.query(acl_endpoints.bootstrap())).value.secret_id
        client.set_token(token)
    driver = SimDriver(cfg.fail_rate, cfg.fail_within, cfg.seed)
    agents: list[SimAgent] = []
    http: tuple[uvicorn.Server, asyncio.Task[None], str] | None = None
    lanes: list[HeartbeatLane] = []
    probe: asyncio.subprocess.Process | None = None
    subscriber: asyncio.subprocess.Process | None = None
    peak_rss = 0
    workers: list[asyncio.subprocess.Process] = []
    worker_procs: list[psutil.Process] = []
    peak_agents_rss = 0
    shapes = node_shapes(cfg.nodes, cfg.node_classes, cfg.seed)
    failing: asyncio.Task[dict[str, Any]] | None = None
    try:
        started = time.perf_counter()
        if cfg.agent_procs > 0 and tls is not None and counts is not None:
            issue_started = time.perf_counter()
            tls_dir = tmp / "agents-tls"
            secure.issue_agents(tls, [s.name for s in shapes], tls_dir)
            say(
                f"issued {cfg.nodes} agent certificates in "
                f"{time.perf_counter() - issue_started:.1f}s"
            )
            http = await _serve_http(app, secure.uvicorn_args(tls, counts))
            lanes.append(await _serve_lane(server, app, secure.uvicorn_args(tls, counts)))
            workers = await _start_workers(cfg, http[2], tmp, tls_dir)
            worker_procs = [psutil.Process(w.pid) for w in workers]
        elif peers:
            workers = await _start_workers(cfg, ",".join(p.url for p in peers), tmp)
            worker_procs = [psutil.Process(w.pid) for w in workers]
        elif cfg.agent_procs > 0:
            http = await _serve_http(app)
            lanes.append(await _serve_lane(server, app))
            workers = await _start_workers(cfg, http[2], tmp)
            worker_procs = [psutil.Process(w.pid) for w in workers]
        else:
            for i, shape in enumerate(shapes):
                settings = sim_settings(shape.name, str(tmp / "agents"), "http://podium")
                agent = SimAgent(shape, settings, client, driver)
                await agent.start(http_addr="")
                agents.append(agent)
                if i % 500 == 499:
                    await asyncio.sleep(0)  # let the first ones register meanwhile
        async with asyncio.timeout(max(60.0, cfg.nodes / 20)):
            while len(store.nodes()) < cfg.nodes:
                if any(w.returncode is not None for w in workers):
                    raise RuntimeError("an agent worker process exited before registering")
                await asyncio.sleep(0.05)
        say(f"{cfg.nodes} agents registered in {time.perf_counter() - started:.1f}s")

        ineligible: set[str] = set()
        by_name = {n.name: n.id for n in store.nodes()}
        step = int(1 / cfg.ineligible) if cfg.ineligible > 0 else 0
        for i in range(0, len(shapes), step) if step else ():
            node_id = by_name[shapes[i].name]
            await client.node_eligibility(node_id, False)
            ineligible.add(node_id)

        samples: dict[str, list[float]] = {}
        if cfg.probe:
            if http is None and not peers:
                http = await _serve_http(app)
                lanes.append(await _serve_lane(server, app))
            probe = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "podium.sim.probe",
                ",".join(p.url for p in peers) if peers else http[2] if http else "",
                "--interval",
                str(cfg.probe_interval),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                # secure: the management token and the CA, as a person's CLI has them
                env=_child_env(PODIUM_TOKEN=token, PODIUM_CACERT=str(tls.directory / "ca.crt"))
                if tls is not None
                else _child_env(),
            )
            assert probe.stdout is not None
            async with asyncio.timeout(60):
                await probe.stdout.readline()  # "ready": its first round is done

        if cfg.events:
            if http is None:
                http = await _serve_http(app)
                lanes.append(await _serve_lane(server, app))
            subscriber = await _start_subscriber(http[2], store, commits)

        etcd_floor: list[float] = []
        if etcd is not None:
            # etcd's own floor, on the loop (nothing else runs meanwhile: ~0.5 s)
            etcd_floor = etcd.put_floor()
            say(
                f"etcd ({len(etcd.endpoints)} endpoints): put floor "
                f"{statistics.median(etcd_floor):.2f} ms (median of {len(etcd_floor)})"
            )

        total = cfg.jobs * cfg.count
        servers = [p.server for p in peers] or [server]
        timers = [(p.commits, p.backend) for p in peers] or [(commits, backend)]

        def stats() -> tuple[int, float, int]:
            return (
                sum(s.stats.placements for s in servers),
                sum(s.stats.seconds for s in servers),
                sum(s.stats.plan_rejections for s in servers),
            )

        stats0 = stats()
        for c, b in timers:
            c.on = b.on = True
        if peers:
            failing = asyncio.create_task(
                _failover(peers, lambda: stats()[0] - stats0[0], (total + 1) // 2, say)
            )
        t0 = time.time()
        lag.reset()
        gcpause.WATCH.reset()
        HEARTBEAT_SECONDS.clear()
        for w in workers:
            _tell(w, "reset")
        down0 = sum(s.nodes.missed_heartbeats for s in servers)
        cpu0 = proc.cpu_times()
        agents_cpu0 = _cpu_seconds(worker_procs)
        etcd_cpu0 = etcd.cpu_seconds() if etcd is not None else None
        for j in range(cfg.jobs):
            spec = sim_job(
                j,
                cfg.count,
                run_for=cfg.run_for,
                constraints=cfg.constraints,
                spread_every=cfg.spread_every,
                seed=cfg.seed,
            )
            await _register(client, JobSpec.model_validate(spec), max(60.0, cfg.timeout / 10))
        say(f"{cfg.jobs} jobs of {cfg.count} registered in {time.time() - t0:.1f}s")

        last_say = time.monotonic()
        deadline = time.monotonic() + cfg.timeout
        while reports.first < total and time.monotonic() < deadline:
            if failing is not None and failing.done() and failing.exception() is not None:
                break
            await asyncio.sleep(0.2)
            peak_rss = max(peak_rss, proc.memory_info().rss)
            if worker_procs:
                with contextlib.suppress(psutil.Error):
                    rss = sum(p.memory_info().rss for p in worker_procs)
                    peak_agents_rss = max(peak_agents_rss, rss)
            if time.monotonic() - last_say >= 5.0:
                last_say = time.monotonic()
                say(
                    f"{time.time() - t0:6.1f}s: placed {stats()[0] - stats0[0]:,}, "
                    f"reported {reports.first:,}/{total:,}, rss {peak_rss / 2**20:,.0f} MB"
                )
        seconds = (reports.last_at or time.time()) - t0
        for c, b in timers:
            c.on = b.on = False
        server_lag_p99 = lag.p99_ms()
        server_gc = gcpause.WATCH.figures()
        in_process_heartbeats = health.heartbeat_figures(HEARTBEAT_SECONDS)
        worker_figures = await _worker_figures(workers)
        nodes_down = sum(s.nodes.missed_heartbeats for s in servers) - down0
        failover: dict[str, Any] | None = None
        crashed: _Peer | None = None
        if failing is not None:
            async with asyncio.timeout(NEW_LEADER_WITHIN * 6):
                failover = await failing
            crashed = failover.pop("crashed")
            survivor = await _leads(peers, 30.0)
            server, store = survivor.server, survivor.store
        peak_rss = max(peak_rss, proc.memory_info().rss)
        cpu1 = proc.cpu_times()
        agents_cpu_s = _cpu_seconds(worker_procs) - agents_cpu0
        etcd_cpu1 = etcd.cpu_seconds() if etcd is not None else None
        timed_out = reports.first < total

        if probe is not None:
            assert probe.stdin is not None and probe.stdout is not None
            probe.stdin.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(60):
                    out = await probe.stdout.read()
                    await probe.wait()
                samples = json.loads(out.decode().strip().splitlines()[-1])["samples"]
        probe_heartbeats = samples.pop("heartbeat", [])
        latencies = [ms for values in samples.values() for ms in values]

        # let the broker drain (probe jobs, follow-ups) before judging the state
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while any(server.broker.stats()[k] for k in ("ready", "inflight", "waiting")):
                    await asyncio.sleep(0.05)
        problems = invariants.check(store, ineligible, exact_counts=cfg.fail_rate == 0)
        run_allocs = [a for a in store.allocs() if a.job_id.startswith("sim-")]
        allocs_lost = sum(1 for a in run_allocs if a.client_status == ClientStatus.LOST)
        placements_made = len(run_allocs)
        if failover is None:  # a crashed leader's own placements are judged apart, below
            problems.extend(
                health.stability_problems(
                    nodes_down=nodes_down,
                    allocs_lost=allocs_lost,
                    placements_total=placements_made,
                    target=total,
                    fail_rate=cfg.fail_rate,
                )
            )
        event_figures: dict[str, Any] | None = None
        if subscriber is not None and commits.events is not None:
            event_figures, event_problems = await _check_events(subscriber, commits.events)
            problems.extend(event_problems)
        if failover is not None and crashed is not None:
            lost = _lost_writes(crashed.store, store, [f"sim-{j}" for j in range(cfg.jobs)])
            problems.extend(f"failover lost {what}" for what in lost)
            placements_total = sum(
                1
                for a in store.allocs()
                if a.job_id.startswith("sim-") and a.previous_allocation is None
            )
            if placements_total != total:
                problems.append(
                    f"failover: {placements_total:,} first placements on the survivor, "
                    f"target {total:,}"
                )
            if failover["new_leader_after_s"] > NEW_LEADER_WITHIN:
                problems.append(
                    f"failover: a new leader only {failover['new_leader_after_s']}s "
                    f"after the crash (bound {NEW_LEADER_WITHIN:.0f}s)"
                )
            failover.update(lost_writes=len(lost), placements_total=placements_total)
        reload_problems: list[str] = []
        if etcd is not None:
            # on the loop: nothing commits while a fresh backend reads the cluster back
            fresh = etcd.backend()
            try:
                reload_problems = invariants.reload_matches(store, fresh, "etcd_reload_matches")
            finally:
                fresh.close()
            problems.extend(reload_problems)
        secure_figures: dict[str, int] | None = None
        if tls is not None and counts is not None and http is not None:
            secure_figures = {
                **counts.figures(),
                **await secure.refusals(http[2], tls.ca.cert_pem, secure.sim_node_id(0)),
            }
            problems.extend(_secure_problems(secure_figures, cfg.nodes))
        if timed_out:
            problems.insert(0, f"timed out: {reports.first:,} of {total:,} instances reported")
        # memory: nothing to time
        writes = [ms for _, b in timers for ms in b.ms] if cfg.store != "memory" else []
        commit_ms = [ms for c, _ in timers for ms in c.ms]
        stats1 = stats()
        placed = stats1[0] - stats0[0]
        sched_s = stats1[1] - stats0[1]
        figures: dict[str, Any] = {
            "nodes": cfg.nodes,
            "jobs": cfg.jobs,
            "count": cfg.count,
            "store": cfg.store,
            "placements": reports.first,
            "seconds": round(seconds, 3),
            "placements_per_s": round(reports.first / seconds, 1) if seconds > 0 else 0.0,
            "scheduler_placements_per_s": round(placed / sched_s, 1) if sched_s > 0 else 0.0,
            "plan_rejections": stats1[2] - stats0[2],
            "server_rss_mb": round(peak_rss / 2**20, 1),
            "agent_procs": cfg.agent_procs,
            "agents_rss_mb": round(peak_agents_rss / 2**20, 1) if workers else None,
            "agents_cpu_s": round(agents_cpu_s, 1) if workers else None,
            "server_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
            "api_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "api_p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
            "api_requests": len(latencies),
            "api_p99_ms_by_op": {
                op: round(_percentile(values, 0.99), 1)
                for op, values in {**samples, "heartbeat": probe_heartbeats}.items()
                if values
            },
            "secure": secure_figures,
            "commits": len(commit_ms),
            "commit_s": round(sum(commit_ms) / 1000.0, 2),
            "commit_ms_p50": _ms(commit_ms, 0.5),
            "commit_ms_p99": _ms(commit_ms, 0.99),
            "store_write_ms_p50": _ms(writes, 0.5),
            "store_write_ms_p99": _ms(writes, 0.99),
            "store_write_s": round(sum(writes) / 1000.0, 2) if writes else None,
            "nodes_down": nodes_down,
            "allocs_lost": allocs_lost,
            "placements_total": placements_made,
            "event_loop_lag_p99_ms": {
                "server": server_lag_p99,
                "agents": max(
                    (f["loop_lag_p99_ms"] for f in worker_figures if f.get("loop_lag_p99_ms")),
                    default=None,
                )
                if worker_figures
                else None,
            },
            "shed": {what: sum(s.shedder.shed[what] for s in servers) for what in ("sync", "read")},
            "heartbeats": {
                "probe": health.heartbeat_figures([ms / 1000.0 for ms in probe_heartbeats]),
                "agents": health.worst_heartbeats(
                    [in_process_heartbeats, *(f.get("heartbeats") or {} for f in worker_figures)]
                ),
            },
            "gc_full_pauses": {
                "server": server_gc,
                "agents": max(
                    (f["gc_full_pauses"] for f in worker_figures if f.get("gc_full_pauses")),
                    key=lambda g: g["max_ms"] or 0.0,
                    default=None,
                ),
            },
            "machine": host,
            "invariants_ok": not problems,
        }
        if etcd is not None:
            figures.update(
                etcd_endpoints=len(etcd.endpoints),
                etcd_members=etcd.members,
                etcd_put_ms_p50=_ms(etcd_floor, 0.5),
                etcd_cpu_s=round(etcd_cpu1 - etcd_cpu0, 1)
                if etcd_cpu0 is not None and etcd_cpu1 is not None
                else None,
                etcd_reload_matches=not reload_problems,
            )
        if failover is not None:
            figures["failover"] = failover
        if event_figures is not None:
            figures["events"] = event_figures
        return SimResult(figures, problems)
    finally:
        lag.stop()
        for child in (probe, subscriber):
            if child is not None and child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
        await _stop_workers(workers)
        store.release_waiters()
        for lane in lanes:
            await lane.stop()
        if http is not None:
            http[0].should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await http[1]
        await client.aclose()
        if failing is not None and not failing.done():
            failing.cancel()
            with contextlib.suppress(BaseException):
                await failing
        if peers:
            for p in peers:
                await p.stop()
        else:
            await server.stop()
            store.close()


async def _start_subscriber(
    address: str, store: StateStore, commits: _Commits
) -> asyncio.subprocess.Process:
    """The event stream's subscriber (podium.sim.subscriber), from the store's index now
    on; the commits after it are counted from the same moment (nothing awaited between)."""
    start = store.index
    commits.events = {}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "podium.sim.subscriber",
        address,
        "--index",
        str(start),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=_child_env(),
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        ready = await proc.stdout.readline()
    if ready.strip() != b"ready":
        raise RuntimeError(f"the event subscriber did not start: {ready!r}")
    return proc


async def _check_events(
    proc: asyncio.subprocess.Process, expected: dict[int, int]
) -> tuple[dict[str, Any], list[str]]:
    """Tell the subscriber the last index to wait for; compare what it was sent, index by
    index, with what the commits wrote.  Figures and problems."""
    assert proc.stdin is not None and proc.stdout is not None
    upto = max(expected, default=0)
    proc.stdin.write(f"{upto}\n".encode())
    await proc.stdin.drain()
    proc.stdin.close()
    async with asyncio.timeout(180):
        out = await proc.stdout.read()
        await proc.wait()
    got = json.loads(out.decode().strip().splitlines()[-1])
    counts = {int(k): v for k, v in got["counts"].items() if int(k) <= upto}
    wanted = {k: v for k, v in expected.items() if k <= upto}
    missing = sorted(k for k, n in wanted.items() if counts.get(k, 0) < n)
    extra = sorted(k for k, n in counts.items() if n > wanted.get(k, 0))
    problems = []
    if got["error"]:
        problems.append(f"events: the stream ended with an error: {got['error']}")
    if missing:
        problems.append(f"events: {len(missing)} indexes short of events, first {missing[:5]}")
    if extra:
        problems.append(f"events: {len(extra)} indexes with events never committed: {extra[:5]}")
    figures = {
        "expected": sum(wanted.values()),
        "received": sum(counts.values()),
        "indexes": len(wanted),
        "missing_indexes": len(missing),
        "extra_indexes": len(extra),
        "mb": round(got["bytes"] / 2**20, 1),
    }
    return figures, problems


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    """CPU seconds (user and system) the worker processes have used so far."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _secure_problems(figures: dict[str, int], nodes: int) -> list[str]:
    """What a secure simulation must have seen: every node's agent connected with its own
    certificate, and a caller with neither token nor certificate refused."""
    out = []
    if figures["agent_cert_nodes"] != nodes:
        out.append(
            f"secure: {figures['agent_cert_nodes']} of {nodes} nodes connected with their "
            "agent certificates"
        )
    for key in ("anonymous_jobs_status", "certless_sync_status"):
        if figures[key] != 401:
            out.append(f"secure: {key} is {figures[key]}, not 401")
    return out


def simulate(cfg: SimConfig) -> SimResult:
    """Run one simulation to the end (blocking); see :class:`SimConfig`."""
    if cfg.secure and cfg.agent_procs < 1:
        raise ValueError("a secure simulation needs real sockets: agent_procs of 1 or more")
    for name in ("podium", "podium.agent", "podium.server"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if cfg.agent_procs > 0:
        raise_fd_limit()
    if cfg.failover and (cfg.store != "etcd" or cfg.agent_procs < 1 or cfg.secure):
        raise ValueError(
            "failover needs the store on etcd and real sockets (agent_procs of 1 or more), "
            "without secure"
        )
    if cfg.store not in ("sqlite", "memory", "etcd"):
        raise ValueError(f"unknown store {cfg.store!r}: sqlite, memory or etcd")
    if cfg.events and (cfg.failover or cfg.secure):
        raise ValueError("events: not with failover or secure (one server, no token)")
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    installed = gcpause.WATCH.installed
    gcpause.WATCH.install()  # full collections short, as a real server's (podium.gcpause)
    tmp = Path(cfg.data_dir or tempfile.mkdtemp(prefix="podium-sim-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            etcd = None
            if cfg.store == "etcd":
                # outside the event loop, so the members are stopped and the keys deleted
                # whatever ends the run (an error, Ctrl-C)
                etcd = stack.enter_context(
                    SimEtcd.open(
                        cfg.etcd, cfg.etcd_members, tmp / "etcd", keep=cfg.data_dir is not None
                    )
                )
                where = (
                    f"{len(etcd.endpoints)} given endpoints"
                    if etcd.members is None
                    else f"{etcd.members} member(s) of its own"
                )
                (cfg.progress or (lambda _m: None))(
                    f"store on etcd: {where}, cluster {etcd.cluster}"
                )
            return eventloop.run(_simulate(cfg, tmp, etcd))
    finally:
        gc.set_threshold(*previous)
        if not installed:  # this process is not a server's: its objects back to the collector
            gcpause.WATCH.uninstall()
            gc.unfreeze()
        if cfg.data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
