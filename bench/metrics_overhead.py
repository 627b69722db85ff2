"""Benchmark: what the API's request metrics cost on its hottest routes.

    python bench/metrics_overhead.py [--requests 2000] [--runs 15] [--nodes 100] [--http]

One in-memory server; its app is called directly over ASGI (no sockets, no HTTP client:
only the server's own work is timed, so the middleware's share is not diluted by a
client's).  Two apps over the same server: the one ``create_app`` builds (requests counted
and timed by podium.server.api_metrics, the store's and worker's hooks on), and the same
without the request-metrics middleware and with the hooks off.  Each run sends
``--requests`` requests of one route, round robin over ``--nodes`` registered nodes, to
one app, then to the other (alternating which goes first); the medians of ``--runs``
runs of each are printed as requests per CPU second of this process (short interleaved
runs and CPU time: the machine may be shared), with their ratio.

``--http``: the same comparison through real HTTP: two ``uvicorn`` servers (subprocesses,
Podium's own uvicorn setup with uvloop and its edge guards), one with and one without
the request metrics; a keep-alive client sends the heartbeats and syncs, and the
servers' CPU time (psutil) per request is compared: the share a real server pays,
HTTP parsing included.

Routes: an agent's heartbeat (``PUT /v1/node/{id}/heartbeat``) and its allocation sync
(``GET /v1/client/node/{id}/allocations``, a delta answer with nothing new: what 5,000
agents send most), the two requests every node sends all the time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psutil

from podium import eventloop
from podium.runtime import tune_gc
from podium.server.api import create_app
from podium.server.api_metrics import RequestMetrics
from podium.server.core import Server
from podium.state import StateStore

Call = Callable[[str, str, bytes, list[tuple[bytes, bytes]], bytes], Any]


async def call(
    app: Any,
    method: str,
    path: str,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> tuple[int, bytes]:
    """One request through the ASGI app: its status and body."""
    delivered = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    hdrs = [(b"host", b"127.0.0.1"), *(headers or [])]
    if body:
        hdrs.append((b"content-type", b"application/json"))
        hdrs.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": hdrs,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 7634),
    }
    await app(scope, receive, send)
    return status, b"".join(chunks)


def without_request_metrics(server: Server) -> Any:
    app = create_app(server)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]
    return app


async def register(app: Any, n: int) -> list[tuple[str, list[tuple[bytes, bytes]]]]:
    nodes = []
    for i in range(n):
        node_id = str(uuid.uuid4())
        body = json.dumps(
            {
                "id": node_id,
                "name": f"bench-{i}",
                "resources": {"cpu": 100_000, "memory": 100_000},
                "drivers": {"mock": {"detected": True, "healthy": True}},
            }
        ).encode()
        status, answer = await call(app, "PUT", "/v1/node/register", body=body)
        assert status == 200, answer
        secret = json.loads(answer)["node_secret"]
        nodes.append((node_id, [(b"x-podium-node-secret", secret.encode())]))
    return nodes


async def rate(
    app: Any, route: str, nodes: list[tuple[str, list[tuple[bytes, bytes]]]], requests: int
) -> float:
    """Requests per second of ``route`` through ``app``, per second of this process' CPU
    (the machine may be shared: other processes' load moves wall time more than CPU)."""
    started = time.process_time()
    for i in range(requests):
        node_id, headers = nodes[i % len(nodes)]
        if route == "heartbeat":
            status, _ = await call(app, "PUT", f"/v1/node/{node_id}/heartbeat", headers=headers)
        else:
            status, _ = await call(
                app,
                "GET",
                f"/v1/client/node/{node_id}/allocations",
                b"since=1",
                headers=headers,
            )
        if status != 200:
            raise SystemExit(f"{route}: status {status}")
    return requests / (time.process_time() - started)


async def main(args: argparse.Namespace) -> None:
    server = Server(StateStore())
    await server.start(lead=False)  # no leader's loops: only the API's work is timed
    with_metrics = create_app(server)
    without = without_request_metrics(server)
    nodes = await register(with_metrics, args.nodes)
    tune_gc()  # as `podium server` does after start-up
    hooks = (server.store.commit_observer, server.worker.stats.observe)

    def hooks_on(on: bool) -> None:
        server.store.commit_observer, server.worker.stats.observe = hooks if on else (None, None)

    print(
        f"{platform.node()}: Python {platform.python_version()}, {args.requests} requests "
        f"per run, {args.runs} runs, {args.nodes} nodes"
    )
    for route in ("heartbeat", "sync"):
        await rate(with_metrics, route, nodes, 1000)  # warm both
        await rate(without, route, nodes, 1000)
        on: list[float] = []
        off: list[float] = []
        for run in range(args.runs):
            order = [(True, with_metrics), (False, without)]
            if run % 2:
                order.reverse()
            for metrics, app in order:
                hooks_on(metrics)
                (on if metrics else off).append(await rate(app, route, nodes, args.requests))
        hooks_on(True)
        a, b = statistics.median(on), statistics.median(off)
        print(
            f"{route:9s}: with metrics {a:8,.0f}/s, without {b:8,.0f}/s, "
            f"ratio {a / b:.3f} (runs with: {', '.join(f'{x:,.0f}' for x in on)}; "
            f"without: {', '.join(f'{x:,.0f}' for x in off)})"
        )
    await server.stop()


CHILD = """
import socket, sys
from podium import eventloop
from podium.runtime import _uvicorn, tune_gc
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore
sys.path.insert(0, sys.argv[3])
from metrics_overhead import without_request_metrics

async def main():
    server = Server(StateStore())
    await server.start(lead=False)
    if sys.argv[2] == "on":
        app = create_app(server)
    else:
        app = without_request_metrics(server)
        server.store.commit_observer = server.worker.stats.observe = None
    tune_gc()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    await _uvicorn(app, "warning").serve(sockets=[sock])

eventloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_server(metrics: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(port), "on" if metrics else "off", here],
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/v1/status/leader", timeout=1)
            return proc, base
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the benchmark's server did not start") from None
            time.sleep(0.1)


def http_nodes(http: httpx.Client, n: int) -> list[tuple[str, dict[str, str]]]:
    nodes = []
    for i in range(n):
        node_id = str(uuid.uuid4())
        r = http.put(
            "/v1/node/register",
            json={
                "id": node_id,
                "name": f"bench-{i}",
                "resources": {"cpu": 100_000, "memory": 100_000},
                "drivers": {"mock": {"detected": True, "healthy": True}},
            },
        )
        r.raise_for_status()
        nodes.append((node_id, {"X-Podium-Node-Secret": r.json()["node_secret"]}))
    return nodes


def http_cpu_per_request(
    proc: subprocess.Popen[bytes],
    http: httpx.Client,
    nodes: list[tuple[str, dict[str, str]]],
    route: str,
    requests: int,
) -> float:
    """The server's CPU seconds per request of ``route``."""
    ps = psutil.Process(proc.pid)
    before = ps.cpu_times()
    for i in range(requests):
        node_id, headers = nodes[i % len(nodes)]
        if route == "heartbeat":
            r = http.put(f"/v1/node/{node_id}/heartbeat", headers=headers)
        else:
            r = http.get(
                f"/v1/client/node/{node_id}/allocations", params={"since": 1}, headers=headers
            )
        if r.status_code != 200:
            raise SystemExit(f"{route}: {r.status_code} {r.text}")
    after = ps.cpu_times()
    return (after.user + after.system - before.user - before.system) / requests


def main_http(args: argparse.Namespace) -> None:
    servers = {on: http_server(on) for on in (True, False)}
    try:
        clients = {
            on: httpx.Client(base_url=base, timeout=10) for on, (_p, base) in servers.items()
        }
        nodes = {on: http_nodes(clients[on], args.nodes) for on in servers}
        print(
            f"{platform.node()}: Python {platform.python_version()}, over HTTP, "
            f"{args.requests} requests per run, {args.runs} runs, {args.nodes} nodes"
        )
        for route in ("heartbeat", "sync"):
            cpu: dict[bool, list[float]] = {True: [], False: []}
            for on in servers:  # warm up
                http_cpu_per_request(servers[on][0], clients[on], nodes[on], route, 500)
            for run in range(args.runs):
                order = [True, False] if run % 2 == 0 else [False, True]
                for on in order:
                    cpu[on].append(
                        http_cpu_per_request(
                            servers[on][0], clients[on], nodes[on], route, args.requests
                        )
                    )
            a, b = statistics.median(cpu[True]), statistics.median(cpu[False])
            print(
                f"{route:9s}: server CPU per request with metrics {a * 1e6:6.1f} µs, "
                f"without {b * 1e6:6.1f} µs: {1 / a:8,.0f} vs {1 / b:8,.0f} requests per "
                f"CPU second, ratio {b / a:.3f}"
            )
    finally:
        for proc, _base in servers.values():
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--http", action="store_true", help="through real HTTP (uvicorn)")
    parsed = parser.parse_args()
    if parsed.http:
        main_http(parsed)
    else:
        eventloop.run(main(parsed))
