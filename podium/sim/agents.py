"""A worker process of simulated agents (``podium sim --agent-procs N``).

    python -m podium.sim.agents http://127.0.0.1:PORT --nodes 5000 --first 0 --count 2500

The address may name several servers of one cluster, comma-separated (``podium sim
--failover``): agent ``i`` talks to server ``i mod n`` first and to the others when that
one cannot be reached (the SDK client's ``fallbacks``), as ``podium agent --servers``.

Runs agents ``first`` .. ``first + count - 1`` of the cluster's node shapes (the
same shapes :func:`podium.sim.nodes.node_shapes` gives the in-process mode) and
talks to the server over real HTTP on loopback, each agent with its own SDK client
(its own connection pool, as each machine has); with ``--tls-dir`` (``podium sim
--secure``) over HTTPS, each agent with its own certificate and node id from that
directory (see :mod:`podium.sim.secure`).  It
prints ``ready`` once its agents are started; a line ``reset`` on its stdin forgets the
event-loop lag measured so far (the run's start), a line ``figures`` makes it print one
JSON line (its peak RSS, its event loop's lag p99: :class:`podium.sim.health.LagSampler`,
its agents' heartbeats' times to their answers: :func:`podium.sim.health.heartbeat_figures`),
and when its stdin closes it stops its agents and prints that line once more.  Its agents log errors only
(``PODIUM_SIM_AGENT_LOG=WARNING`` for more, on its stderr).

A process of its own, so the server's process keeps a core (and its RSS) to
itself, and agents' work (HTTP clients, runners, task state machines) is
measured apart from the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from podium import eventloop, gcpause
from podium.client import AsyncClient
from podium.sim.health import LagSampler, heartbeat_figures
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


def http_client(
    address: str, ssl_context: ssl.SSLContext | None = None, fallbacks: Sequence[str] = ()
) -> AsyncClient:
    """One agent's SDK client over real HTTP (aiohttp, as a real agent's): its own
    connection pool, connections kept while idle for as long as a blocking query waits;
    with ``ssl_context`` (``--secure``), HTTPS presenting the agent's own certificate.

    One pool per agent, not one shared by thousands, as each machine has its own.  No
    ACL token (``$PODIUM_TOKEN`` is not passed to workers): a secure agent proves itself
    with its certificate and its node secret only."""
    return AsyncClient(
        address,
        timeout=SYNC_WAIT + 60.0,
        keepalive=SYNC_WAIT * 2,
        ssl_context=ssl_context,
        fallbacks=fallbacks,
    )


def servers_for(address: str, i: int) -> list[str]:
    """The servers agent ``i`` knows, the one it talks to first leading: the comma-
    separated ``address`` rotated by ``i`` (agents spread over the servers)."""
    servers = [a.strip() for a in address.split(",") if a.strip()]
    k = i % len(servers)
    return servers[k:] + servers[:k]


async def run_agents(args: argparse.Namespace) -> dict[str, Any]:
    proc = psutil.Process()
    driver = SimDriver(args.fail_rate, args.fail_within, args.seed * 1_000 + args.first)
    shapes = node_shapes(args.nodes, args.node_classes, args.seed)[
        args.first : args.first + args.count
    ]
    data_dir = Path(args.data_dir or tempfile.gettempdir()) / "agents"
    certs = None
    if args.tls_dir:
        from podium.sim.secure import AgentCerts  # TLS (cryptography) only when secure

        certs = AgentCerts.load(Path(args.tls_dir))
    agents: list[SimAgent] = []
    peak = 0
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    lag = LagSampler()
    lag.start()

    def figures() -> dict[str, Any]:
        return {
            "agents": len(agents),
            "rss_mb": round(max(peak, proc.memory_info().rss) / 2**20, 1),
            "loop_lag_p99_ms": lag.p99_ms(),
            "heartbeats": heartbeat_figures(HEARTBEAT_SECONDS),
            "gc_full_pauses": gcpause.WATCH.figures(),
        }

    def emit() -> None:
        sys.stdout.write(json.dumps(figures()) + "\n")
        sys.stdout.flush()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "reset":
                loop.call_soon_threadsafe(lag.reset)
                loop.call_soon_threadsafe(HEARTBEAT_SECONDS.clear)
                loop.call_soon_threadsafe(gcpause.WATCH.reset)
            elif line.strip() == "figures":
                loop.call_soon_threadsafe(emit)
        loop.call_soon_threadsafe(closed.set)

    loop.run_in_executor(None, watch_stdin)
    try:
        for i, shape in enumerate(shapes):
            servers = servers_for(args.address, args.first + i)
            settings = sim_settings(shape.name, str(data_dir), servers[0])
            settings.servers = servers
            if certs is not None:
                client = http_client(servers[0], certs.context(shape.name), servers[1:])
                agent = SimAgent(shape, settings, client, driver, node_id=certs.node_id(shape.name))
            else:
                client = http_client(servers[0], fallbacks=servers[1:])
                agent = SimAgent(shape, settings, client, driver)
            await agent.start(http_addr="")
            agents.append(agent)
            if i % 250 == 249:
                await asyncio.sleep(0.01)  # let the first ones register meanwhile
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while not closed.is_set():
            peak = max(peak, proc.memory_info().rss)
            try:
                async with asyncio.timeout(0.5):
                    await closed.wait()
            except TimeoutError:
                pass
        peak = max(peak, proc.memory_info().rss)
    finally:
        lag.stop()
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
        await asyncio.gather(*(a.client.aclose() for a in agents), return_exceptions=True)
    return figures()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="simulated agents for podium sim")
    parser.add_argument("address", help="the server's URL (several: comma-separated)")
    parser.add_argument("--nodes", type=int, required=True, help="nodes in the whole cluster")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--node-classes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-within", type=float, default=5.0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--tls-dir",
        default=None,
        help="secure: the agents' certificates (podium.sim.secure.issue_agents' directory)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PODIUM_SIM_AGENT_LOG", "ERROR"))
    raise_fd_limit()
    gc.set_threshold(*GC_THRESHOLD)
    gcpause.WATCH.install()
    figures = eventloop.run(run_agents(args))
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
