"""What the end-to-end benchmarks share: a fresh `podium agent --dev` and a wait on a group.

with dev_agent() as (http, proc):
    http.post("/v1/jobs", json={"job": spec})
    first = wait_group_running(http, "bench", "g", 1000)
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PODIUM = Path(sys.executable).parent / "podium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dev_agent(stop_timeout: float = 60.0) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """Start a dev agent on a free port with a fresh data dir; yield once its node is ready.

    On exit the agent gets SIGTERM (SIGKILL after ``stop_timeout``).
    """
    port = free_port()
    data = tempfile.mkdtemp(prefix="podium-bench-")
    agent = subprocess.Popen(
        [
            str(PODIUM),
            "agent",
            "--dev",
            "--data-dir",
            data,
            "--http-addr",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                nodes = http.get("/v1/nodes").json()
                if nodes and nodes[0]["status"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("the dev agent did not come up")
        yield http, agent
    finally:
        http.close()
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        shutil.rmtree(data, ignore_errors=True)


def wait_group_running(
    http: httpx.Client,
    job: str,
    group: str,
    count: int,
    timeout: float = 300.0,
    since: float | None = None,
) -> float | None:
    """Block (with blocking queries) until ``count`` allocations of the group run.

    Returns the seconds until the first one ran, from ``since`` (a perf_counter
    reading; default: the call).
    """
    start = time.perf_counter() if since is None else since
    deadline = time.monotonic() + timeout
    first: float | None = None
    index = 0
    while True:
        r = http.get(f"/v1/job/{job}", params={"index": index, "wait": "5s"})
        r.raise_for_status()
        index = int(r.headers["X-Podium-Index"])
        summary = r.json()["summary"][group]
        if first is None and summary["running"] > 0:
            first = time.perf_counter() - start
        if summary["running"] >= count:
            return first
        if summary["failed"]:
            raise RuntimeError(f"tasks failed: {summary}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all running after {timeout:.0f} s: {summary}")
