"""Benchmark: a server's CPU at rest with many agents attached.

    python bench/agents_at_rest.py [--agents 100] [--seconds 10] [--heartbeat-ttl 10] [--json]

A real `podium server` runs in a subprocess on loopback.  AGENTS agents run in this one Python
process as asyncio tasks (podium.agent.agent.Agent with only the mock driver, each with its own
podium.client.AsyncClient over real HTTP and its own data dir), so 100 nodes need no 100
interpreters.  A mock job puts one long-running allocation on every node.  Once everything runs,
the server is left alone for SECONDS: heartbeats (every TTL/2 per node) and the agents' parked
blocking queries are all it serves.  Printed: the server's CPU over that window (psutil
cpu_times delta / wall time, in cores), and the agents' process for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from podium.agent import secretsdir
from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.client import AsyncClient
from podium.drivers.mock import MockDriver

PODIUM = Path(sys.executable).parent / "podium"

JOB = """
job: at-rest
groups:
  g:
    count: {count}
    tasks:
      t:
        driver: mock
        config: {{run_for: 24h}}
        resources: {{cpu: 10, memory: 10}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await cond():
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


async def measure(n_agents: int, seconds: float, ttl: float, tmp: Path) -> dict[str, float]:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - owned by the server process
    server = subprocess.Popen(
        [
            str(PODIUM),
            "server",
            "--data-dir",
            str(tmp / "server"),
            "--http-addr",
            f"127.0.0.1:{port}",
            "--heartbeat-ttl",
            f"{ttl:g}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    agents: list[Agent] = []
    clients: list[AsyncClient] = []
    try:
        async with httpx.AsyncClient(base_url=addr, timeout=10) as http:

            async def server_up() -> bool:
                if server.poll() is not None:
                    raise SystemExit(f"server exited: {(tmp / 'server.log').read_text()}")
                return (await http.get("/v1/status")).status_code == 200

            await wait_for(server_up, 30, "the server")
            for i in range(n_agents):
                client = AsyncClient(addr, timeout=60.0)
                settings = AgentSettings(
                    data_dir=str(tmp / f"agent{i}"), servers=[addr], name=f"node{i:03d}"
                )
                agent = Agent(settings, client, drivers={"mock": MockDriver()})
                clients.append(client)
                agents.append(agent)
                await agent.start("http://127.0.0.1:1")  # no log server: mock tasks log nothing

            async def all_ready() -> bool:
                nodes = (await http.get("/v1/nodes")).json()
                return bool(sum(n["status"] == "ready" for n in nodes) == n_agents)

            await wait_for(all_ready, 120, f"{n_agents} ready nodes")
            job_file = tmp / "job.yaml"
            job_file.write_text(JOB.format(count=n_agents))
            subprocess.run(
                [str(PODIUM), "job", "run", "--detach", str(job_file)],
                check=True,
                capture_output=True,
                env={"PODIUM_ADDR": addr, "PATH": "/usr/bin:/bin"},
            )

            async def all_running() -> bool:
                allocs = (await http.get("/v1/job/at-rest/allocations")).json()
                return bool(sum(a["client_status"] == "running" for a in allocs) == n_agents)

            await wait_for(all_running, 120, f"{n_agents} running allocations")
            await asyncio.sleep(max(1.0, ttl / 2))  # let the start-up burst settle

        sproc = psutil.Process(server.pid)
        me = psutil.Process()
        s0, a0, w0 = cpu_seconds(sproc), cpu_seconds(me), time.monotonic()
        await asyncio.sleep(seconds)
        s1, a1, w1 = cpu_seconds(sproc), cpu_seconds(me), time.monotonic()
        wall = w1 - w0
        return {
            "agents": n_agents,
            "seconds": round(wall, 2),
            "heartbeat_ttl": ttl,
            "server_cores": round((s1 - s0) / wall, 4),
            "agents_process_cores": round((a1 - a0) / wall, 4),
            "server_rss_mb": round(sproc.memory_info().rss / 2**20, 1),
        }
    finally:
        for agent in agents:
            await agent.stop()
        for client in clients:
            await client.aclose()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--heartbeat-ttl", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-rest-"))
    try:
        result = asyncio.run(measure(args.agents, args.seconds, args.heartbeat_ttl, tmp))
    finally:
        secretsdir.unmount_under(str(tmp))  # the agents' tasks' secrets tmpfs (a root agent)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['agents']} agents at rest, heartbeat TTL {result['heartbeat_ttl']:g}s, "
        f"over {result['seconds']:.1f}s:\n"
        f"  server CPU  {result['server_cores']:.3f} cores  (RSS {result['server_rss_mb']} MB)\n"
        f"  agents' process CPU (all {result['agents']} in one) "
        f"{result['agents_process_cores']:.3f} cores"
    )


if __name__ == "__main__":
    main()
