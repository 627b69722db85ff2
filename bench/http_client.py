"""Benchmark: the client CPU of one API request, httpx against the SDK's aiohttp path.

    python bench/http_client.py [--requests 3000] [--concurrency 1 50]

A uvicorn on loopback (a subprocess, so its CPU is not counted) answers
``GET /v1/client/node/{id}/allocations`` with a 2 KB JSON body, as a sync answer
is.  This process sends the same request through ``httpx.AsyncClient`` (what the
SDK used for every request before) and through ``podium.client.AsyncClient``
without a transport (aiohttp, podium/client/_aio.py), sequentially and with
CONCURRENCY requests at once over one client, and prints the client's CPU per
request (``time.process_time``) and the ratio.  The agent sends one or two such
requests per allocation it runs, so this is most of an agent's cost per placement.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable

import httpx

from podium import eventloop
from podium.client import AsyncClient, endpoints

SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    BODY = b'{"index": 12, "allocations": [], "jobs": {}, "pad": "' + b"a" * 2000 + b'"}'
    async def answer(request):
        return Response(BODY, media_type="application/json", headers={"X-Podium-Index": "12"})
    app = Starlette(routes=[Route("/v1/client/node/{id}/allocations", answer)])
    uvicorn.run(app, port=int(sys.argv[1]), log_level="warning", access_log=False)
    """
)
HAVE = ",".join(f"sim-{i}@0@{1000 + i}" for i in range(40))


async def cpu_per_request(send: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await send()

    for _ in range(50):  # connections opened, caches warm
        await send()
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.process_time() - started) / n * 1e6


async def measure(address: str, n: int, concurrency: int) -> tuple[float, float]:
    params = {"index": "123", "wait": "30s", "since": "120", "have": HAVE}
    async with httpx.AsyncClient(
        base_url=address, limits=httpx.Limits(max_connections=None, max_keepalive_connections=None)
    ) as plain:

        async def via_httpx() -> object:
            response = await plain.get("/v1/client/node/n1/allocations", params=params)
            return response.json()

        httpx_us = await cpu_per_request(via_httpx, n, concurrency)
    async with AsyncClient(address) as sdk:
        endpoint = endpoints.node_sync("n1", since=120, have=HAVE.split(","))

        async def via_sdk() -> object:
            return await sdk.query(endpoint)

        sdk_us = await cpu_per_request(via_sdk, n, concurrency)
    return httpx_us, sdk_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 50])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(address + "/v1/client/node/n1/allocations")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(f"{'at once':>8} {'httpx us/req':>13} {'sdk (aiohttp) us/req':>21} {'ratio':>6}")
        for concurrency in args.concurrency:
            runs = [
                eventloop.run(measure(address, args.requests, concurrency))
                for _ in range(args.runs)
            ]
            h = statistics.median(r[0] for r in runs)
            a = statistics.median(r[1] for r in runs)
            print(f"{concurrency:>8} {h:>13.0f} {a:>21.0f} {h / a:>5.1f}x")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
