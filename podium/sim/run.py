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
- ``api_p50_ms`` / ``api_p99_ms``: latencies seen by :mod:`podium.sim.probe` (all its
  requests pooled; ``api_p99_ms_by_op`` per kind of request).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn

from podium import eventloop
from podium.client import AsyncClient
from podium.client import acl as acl_endpoints
from podium.models import AllocClientUpdate, ClientStatus, JobSpec
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.sim import invariants
from podium.sim.nodes import (
    GC_THRESHOLD,
    SYNC_WAIT,
    SimAgent,
    SimDriver,
    node_shapes,
    raise_fd_limit,
    sim_settings,
)
from podium.sim.workload import sim_job
from podium.state import SqliteBackend, StateStore

log = logging.getLogger("podium.sim")


@dataclass
class SimConfig:
    nodes: int = 100
    jobs: int = 10
    count: int = 100
    """Instances per job."""
    store: str = "sqlite"
    """``sqlite`` (in a temporary directory unless ``data_dir``) or ``memory``."""
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


class _Reports:
    """Counts instances first reported by their agents (wraps ``Server.client_update_many``,
    through which every agent's report passes, batched or not)."""

    def __init__(self, server: Server) -> None:
        self.first = 0
        self.last_at = 0.0
        self._server = server
        self._inner = server.client_update_many
        server.client_update_many = self  # type: ignore[method-assign]

    def __call__(self, reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
        store = self._server.store
        seen: set[str] = set()
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
        return self._inner(reports)


BACKLOG = 4096
"""Listen backlog: thousands of agents connect at once when worker processes start."""


async def _serve_http(
    app: Any, tls: dict[str, Any] | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """The real HTTP listener (loopback, a free port) the probe and agent workers talk to;
    HTTPS with ``tls`` (uvicorn arguments, see :func:`podium.sim.secure.uvicorn_args`).

    Agents keep their connections between requests (each holds a blocking query of up
    to ``SYNC_WAIT``), so the idle keep-alive timeout is longer than that."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
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


async def _stop_workers(workers: list[asyncio.subprocess.Process]) -> None:
    """Close each worker's stdin (it stops its agents and exits); kill what lingers."""
    for w in workers:
        if w.stdin is not None and not w.stdin.is_closing():
            w.stdin.close()
    for w in workers:
        try:
            async with asyncio.timeout(30):
                if w.stdout is not None:
                    await w.stdout.read()
                await w.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                w.kill()
            await w.wait()


async def _simulate(cfg: SimConfig) -> SimResult:
    say = cfg.progress or (lambda _msg: None)
    proc = psutil.Process()
    tmp = Path(cfg.data_dir or tempfile.mkdtemp(prefix="podium-sim-"))
    tmp.mkdir(parents=True, exist_ok=True)
    ttl = cfg.heartbeat_ttl or max(10.0, cfg.nodes / 50.0)
    backend = SqliteBackend(tmp / "server" / "state.db") if cfg.store == "sqlite" else None
    store = StateStore(backend)
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
            acl=cfg.secure,
            data_dir=str(tmp / "server") if cfg.secure else None,
        ),
    )
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
    probe: asyncio.subprocess.Process | None = None
    peak_rss = 0
    workers: list[asyncio.subprocess.Process] = []
    worker_procs: list[psutil.Process] = []
    peak_agents_rss = 0
    shapes = node_shapes(cfg.nodes, cfg.node_classes, cfg.seed)
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
            workers = await _start_workers(cfg, http[2], tmp, tls_dir)
            worker_procs = [psutil.Process(w.pid) for w in workers]
        elif cfg.agent_procs > 0:
            http = await _serve_http(app)
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
            if http is None:
                http = await _serve_http(app)
            probe = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "podium.sim.probe",
                http[2],
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

        total = cfg.jobs * cfg.count
        stats0 = (server.stats.placements, server.stats.seconds, server.stats.plan_rejections)
        t0 = time.time()
        cpu0 = proc.cpu_times()
        agents_cpu0 = _cpu_seconds(worker_procs)
        for j in range(cfg.jobs):
            spec = sim_job(
                j,
                cfg.count,
                run_for=cfg.run_for,
                constraints=cfg.constraints,
                spread_every=cfg.spread_every,
                seed=cfg.seed,
            )
            await client.register_job(JobSpec.model_validate(spec))
        say(f"{cfg.jobs} jobs of {cfg.count} registered in {time.time() - t0:.1f}s")

        last_say = time.monotonic()
        deadline = time.monotonic() + cfg.timeout
        while reports.first < total and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            peak_rss = max(peak_rss, proc.memory_info().rss)
            if worker_procs:
                with contextlib.suppress(psutil.Error):
                    rss = sum(p.memory_info().rss for p in worker_procs)
                    peak_agents_rss = max(peak_agents_rss, rss)
            if time.monotonic() - last_say >= 5.0:
                last_say = time.monotonic()
                say(
                    f"{time.time() - t0:6.1f}s: placed {server.stats.placements - stats0[0]:,}, "
                    f"reported {reports.first:,}/{total:,}, rss {peak_rss / 2**20:,.0f} MB"
                )
        seconds = (reports.last_at or time.time()) - t0
        peak_rss = max(peak_rss, proc.memory_info().rss)
        cpu1 = proc.cpu_times()
        agents_cpu_s = _cpu_seconds(worker_procs) - agents_cpu0
        timed_out = reports.first < total

        if probe is not None:
            assert probe.stdin is not None and probe.stdout is not None
            probe.stdin.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(60):
                    out = await probe.stdout.read()
                    await probe.wait()
                samples = json.loads(out.decode().strip().splitlines()[-1])["samples"]
        latencies = [ms for values in samples.values() for ms in values]

        # let the broker drain (probe jobs, follow-ups) before judging the state
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while any(server.broker.stats()[k] for k in ("ready", "inflight", "waiting")):
                    await asyncio.sleep(0.05)
        problems = invariants.check(store, ineligible, exact_counts=cfg.fail_rate == 0)
        secure_figures: dict[str, int] | None = None
        if tls is not None and counts is not None and http is not None:
            secure_figures = {
                **counts.figures(),
                **await secure.refusals(http[2], tls.ca.cert_pem, secure.sim_node_id(0)),
            }
            problems.extend(_secure_problems(secure_figures, cfg.nodes))
        if timed_out:
            problems.insert(0, f"timed out: {reports.first:,} of {total:,} instances reported")
        placed = server.stats.placements - stats0[0]
        sched_s = server.stats.seconds - stats0[1]
        figures: dict[str, Any] = {
            "nodes": cfg.nodes,
            "jobs": cfg.jobs,
            "count": cfg.count,
            "store": cfg.store,
            "placements": reports.first,
            "seconds": round(seconds, 3),
            "placements_per_s": round(reports.first / seconds, 1) if seconds > 0 else 0.0,
            "scheduler_placements_per_s": round(placed / sched_s, 1) if sched_s > 0 else 0.0,
            "plan_rejections": server.stats.plan_rejections - stats0[2],
            "server_rss_mb": round(peak_rss / 2**20, 1),
            "agent_procs": cfg.agent_procs,
            "agents_rss_mb": round(peak_agents_rss / 2**20, 1) if workers else None,
            "agents_cpu_s": round(agents_cpu_s, 1) if workers else None,
            "server_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
            "api_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "api_p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
            "api_requests": len(latencies),
            "api_p99_ms_by_op": {
                op: round(_percentile(values, 0.99), 1) for op, values in samples.items() if values
            },
            "secure": secure_figures,
            "invariants_ok": not problems,
        }
        return SimResult(figures, problems)
    finally:
        if probe is not None and probe.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                probe.kill()
            await probe.wait()
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
        await _stop_workers(workers)
        store.release_waiters()
        if http is not None:
            http[0].should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await http[1]
        await client.aclose()
        await server.stop()
        store.close()
        if cfg.data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


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
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        return eventloop.run(_simulate(cfg))
    finally:
        gc.set_threshold(*previous)
