"""Many ``logs?follow=true`` through a real server to a real agent (issue 14): one pooled
client relays them, at most --max-log-streams at once (the rest get 429 and Retry-After),
and meanwhile heartbeats are answered: the node is never marked down."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import PODIUM, kill_recorded_tasks, stop_process, wait_until
from tests.limits.realserver import latency, real_server

STREAMS = 40
CLIENTS = 200


async def _follow_all(addr: str, alloc_id: str, hold: float) -> tuple[list[int], list[str]]:
    """CLIENTS concurrent follows; each open one reads a first chunk and stays open for
    ``hold`` seconds.  Returns the statuses and the Retry-After of refused ones."""
    limits = httpx.Limits(max_connections=CLIENTS + 10)
    statuses: list[int] = []
    retry: list[str] = []
    async with httpx.AsyncClient(base_url=addr, timeout=60, limits=limits) as c:

        async def one() -> None:
            params = {"follow": "true", "task": "t"}
            async with c.stream("GET", f"/v1/allocation/{alloc_id}/logs", params=params) as r:
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry.append(r.headers.get("retry-after", ""))
                    await r.aread()
                    return
                async for _ in r.aiter_raw():
                    break
                await asyncio.sleep(hold)

        await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return statuses, retry


def test_many_follows_are_bounded_and_heartbeats_go_on(tmp_path: Path) -> None:
    with real_server(
        tmp_path,
        "--heartbeat-ttl",
        "1",
        "--heartbeat-grace",
        "1",
        "--max-log-streams",
        str(STREAMS),
    ) as server:
        with open(tmp_path / "agent.log", "ab") as log:
            agent = subprocess.Popen(
                [
                    *PODIUM,
                    "agent",
                    "--servers",
                    server.addr,
                    "--data-dir",
                    str(tmp_path / "agent"),
                    "--name",
                    "w1",
                    "--raw-exec",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            with httpx.Client(base_url=server.addr, timeout=30) as c:
                wait_until(
                    lambda: [n for n in c.get("/v1/nodes").json() if n["status"] == "ready"],
                    timeout=60,
                    what="the agent's node",
                )
                spec = {
                    "job": "ticker",
                    "groups": {
                        "g": {
                            "tasks": {
                                "t": {
                                    "driver": "raw_exec",
                                    "config": {
                                        "command": "/bin/sh",
                                        "args": ["-c", "while true; do echo tick; sleep 0.1; done"],
                                    },
                                }
                            }
                        }
                    },
                }
                assert c.post("/v1/jobs", json={"job": spec}).status_code == 200
                alloc = wait_until(
                    lambda: [
                        a
                        for a in c.get("/v1/job/ticker/allocations").json()
                        if a["client_status"] == "running"
                    ],
                    timeout=60,
                    what="the ticker to run",
                )[0]
                hold = 4.0  # four heartbeat TTLs
                started = time.monotonic()
                statuses, retry = asyncio.run(_follow_all(server.addr, alloc["id"], hold))
                took = time.monotonic() - started
                assert statuses.count(200) >= STREAMS // 2, statuses
                assert statuses.count(200) <= STREAMS, statuses.count(200)
                assert statuses.count(429) == CLIENTS - statuses.count(200)
                assert set(retry) == {"5"}
                assert took >= hold
                # the node was never marked down, and the allocation never lost
                node = c.get("/v1/nodes").json()[0]
                assert node["status"] == "ready", node
                events = c.get(f"/v1/allocation/{alloc['id']}").json()
                assert events["client_status"] == "running"
                assert latency(f"{server.addr}/v1/status") < 1.0
                # the relays were released: a new follow is served again
                r = c.get(f"/v1/allocation/{alloc['id']}/logs", params={"task": "t"})
                assert r.status_code == 200 and "tick" in r.text
                c.delete("/v1/job/ticker", params={"purge": "true"})
        finally:
            stop_process(agent)
            kill_recorded_tasks(tmp_path)
