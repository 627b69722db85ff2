"""What the end-to-end benchmarks share: a fresh `podium agent --dev` and a wait on a group.

with dev_agent() as (http, proc):
    http.post("/v1/jobs", json={"job": spec})
    first = wait_group_running(http, "bench", "g", 1000)
"""

from __future__ import annotations

import contextlib
import os
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

from podium.agent import secretsdir

PODIUM = Path(sys.executable).parent / "podium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dev_agent(
    stop_timeout: float = 60.0, data_parent: str | None = None
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """Start a dev agent on a free port with a fresh data dir; yield once its node is ready.

    On exit the agent gets SIGTERM (SIGKILL after ``stop_timeout``).  The data dir is a new
    one in ``data_parent`` (default: the system's temp dir), removed on exit unless
    ``data_parent`` was given: then the caller removes it, when it suits the measurement,
    and the tasks the agent left running are SIGKILLed (not stopped through the API, which
    would delete their files now).
    """
    port = free_port()
    data = tempfile.mkdtemp(prefix="podium-bench-", dir=data_parent)
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
        if data_parent is not None:
            kill_tasks(data)
        # The tasks' secrets tmpfs stay mounted while an agent with a data dir leaves them
        # running (for the next agent); the dir is deleted here or by the caller.
        secretsdir.unmount_under(data)
        if data_parent is None:
            shutil.rmtree(data, ignore_errors=True)


def kill_tasks(data_dir: str) -> int:
    """SIGKILL the tasks of shims whose command line names ``data_dir``, and the shims:
    each shim leads its task's process group (an older shim's task led its own: its
    children are killed one by one).  Answers how many shims there were."""
    needle = data_dir.encode()
    shims = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"shim.sh") for a in args[:2]) and any(needle in a for a in args):
                shims.append(int(entry))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in shims:
                with contextlib.suppress(OSError):
                    os.killpg(int(entry), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.kill(int(entry), signal.SIGKILL)
    for pid in shims:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    return len(shims)


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
