"""Three hosts (network namespaces), each with its own `podium agent`, one `podium server`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cluster.conftest import SHARED, Cluster
from tests.e2e.conftest import PODIUM, write_job

SLEEPER = """
job: {name}
groups:
  g:
    count: {count}
    tasks:
      t:
        driver: raw_exec
        config: {{command: /bin/sh, args: ["-c", "while true; do sleep 0.2; done"]}}
        resources: {{cpu: 50, memory: 32}}
"""


def run_sleeper(cluster: Cluster, tmp_path: Path, name: str, count: int) -> None:
    path = write_job(tmp_path, SLEEPER.format(name=name, count=count), f"{name}.yaml")
    cluster.view.cli("job", "run", path, check=True)
    cluster.view.wait_running(name, count, timeout=30)


@pytest.mark.xdist_group(SHARED)
def test_agents_register_and_a_job_spreads(reset_cluster: Cluster, tmp_path: Path) -> None:
    cluster = reset_cluster  # only runs a job: the shared cluster does
    table = cluster.view.cli("node", "status", check=True).stdout
    for name in ("host1", "host2", "host3"):
        assert name in table
    nodes = json.loads(cluster.view.cli("node", "status", "-o", "json", check=True).stdout)
    by_name = {n["name"]: n for n in nodes}
    assert set(by_name) == {"host1", "host2", "host3"}
    for i, name in enumerate(("host1", "host2", "host3"), start=1):
        node = by_name[name]
        assert node["status"] == "ready"
        assert node["datacenter"] == "dc1"
        assert node["meta"]["rack"] == f"r{i}"
        # the agent's own HTTP (logs) listens on its namespace's address, not loopback
        assert node["http_addr"].startswith(f"http://{cluster.hosts[name].ip}:")

    run_sleeper(cluster, tmp_path, "spread", 3)
    running = cluster.view.running("spread")
    assert sorted(cluster.node_name(a["node_id"]) for a in running) == ["host1", "host2", "host3"]
    # each task really runs inside its host's namespace
    for a in running:
        host = cluster.hosts[cluster.node_name(a["node_id"])]
        assert host.owns_pid(a["task_states"]["t"]["pid"])
    # logs are proxied by the server to the agent inside the namespace
    out = cluster.view.cli("alloc", "logs", running[0]["id"][:8], check=True)
    assert out.returncode == 0


def test_agent_flags_are_checked(tmp_path: Path) -> None:
    def agent(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *PODIUM,
                "agent",
                "--servers",
                "http://127.0.0.1:9",
                "--data-dir",
                str(tmp_path),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )

    bad = agent("--meta", "rack")
    assert bad.returncode == 2  # a usage error
    assert "--meta 'rack' is not KEY=VALUE" in bad.stderr
    assert agent("--meta", "=r1").returncode == 2
    bad = agent("--agent-http-addr", "nowhere")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
