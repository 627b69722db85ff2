"""End to end with the server and the agent in separate processes (`podium server`,
`podium agent --servers`): the server killed with -9 and started again loses nothing,
and the agent carries on without restarting its tasks."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import (
    PODIUM,
    DevAgent,
    free_port,
    kill_recorded_tasks,
    wait_until,
    write_job,
)


class Split:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.server: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        # reuse the dev-agent helpers (cli, get, allocs) against this address
        self.view = DevAgent(addr=self.addr, data_dir=tmp / "agent", log_path=tmp / "agent.log")

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as f:
            return subprocess.Popen(
                [*PODIUM, *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start_server(self) -> None:
        self.server = self._spawn(
            [
                "server",
                "--data-dir",
                str(self.tmp / "server"),
                "--http-addr",
                f"127.0.0.1:{self.port}",
                "--heartbeat-ttl",
                "2",
            ],
            "server.log",
        )
        wait_until(
            lambda: httpx.get(f"{self.addr}/v1/status", timeout=1).status_code == 200,
            what="the server",
        )

    def start_agent(self) -> None:
        self.agent = self._spawn(
            [
                "agent",
                "--servers",
                self.addr,
                "--data-dir",
                str(self.tmp / "agent"),
                "--name",
                "worker-1",
                "--raw-exec",
            ],
            "agent.log",
        )
        wait_until(
            lambda: [n for n in self.view.get("/v1/nodes") if n["status"] == "ready"],
            what="the agent's node",
        )

    def stop(self) -> None:
        for p in (self.agent, self.server):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Split]:
    s = Split(tmp_path)
    try:
        s.start_server()
        s.start_agent()
        yield s
    finally:
        try:
            for job in s.view.get("/v1/jobs"):
                httpx.delete(f"{s.addr}/v1/job/{job['id']}", params={"purge": "true"}, timeout=5)
            wait_until(
                lambda: all(
                    a["client_status"] not in ("running", "pending")
                    for a in s.view.get("/v1/allocations")
                ),
                timeout=20,
            )
        except (AssertionError, httpx.HTTPError):
            pass
        s.stop()
        kill_recorded_tasks(tmp_path)


def test_server_kill9_agent_carries_on(split: Split, tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        """
job: steady
groups:
  g:
    count: 2
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sh, args: ["-c", "while true; do sleep 0.2; done"]}
""",
    )
    split.view.cli("job", "run", path, check=True)
    before = split.view.wait_running("steady", 2)
    pids = {a["id"]: a["task_states"]["t"]["pid"] for a in before}

    assert split.server is not None
    os.kill(split.server.pid, signal.SIGKILL)
    split.server.wait(10)
    # the agent keeps its tasks while no server answers
    wait_until(lambda: all(psutil.pid_exists(p) for p in pids.values()), timeout=3)
    split.start_server()

    after = split.view.wait_running("steady", 2)
    assert {a["id"]: a["task_states"]["t"]["pid"] for a in after} == pids
    assert all(a["task_states"]["t"]["restarts"] == 0 for a in after)
    node = split.view.get("/v1/nodes")[0]
    assert node["name"] == "worker-1" and node["status"] == "ready"
    # and the restarted server still schedules onto the agent
    split.view.cli("job", "scale", "steady", "g", "3", check=True)
    split.view.wait_running("steady", 3)
    # its heartbeats found the restarted server's heartbeat lane (a new free port: the
    # old one refused them, they went to the API's port, whose answer named the new lane)
    wait_until(lambda: lane_heard(split.addr) > 0, timeout=30, what="a heartbeat on the lane")


def lane_heard(addr: str) -> float:
    """``podium_heartbeat_lane_total{outcome="heard"}`` of the server at ``addr``."""
    text = httpx.get(f"{addr}/v1/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('podium_heartbeat_lane_total{outcome="heard"}'):
            return float(line.split()[-1])
    return 0.0


def test_the_agents_heartbeats_are_heard_on_the_servers_heartbeat_lane(split: Split) -> None:
    wait_until(lambda: lane_heard(split.addr) >= 2, timeout=30, what="heartbeats on the lane")
    status = httpx.get(f"{split.addr}/v1/nodes", timeout=5).json()
    assert [n["status"] for n in status] == ["ready"]
