"""End to end: the isolated exec driver (cgroups, namespaces, unprivileged user)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import DevAgent, wait_until, write_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the exec driver needs root")


def _exec_healthy(dev_agent: DevAgent) -> None:
    node = dev_agent.get("/v1/nodes")[0]
    info = node["drivers"].get("exec", {})
    if not info.get("healthy"):
        pytest.fail(f"exec driver unhealthy on a root machine: {info.get('description')}")


def test_exec_task_over_memory_limit_is_oom_killed(dev_agent: DevAgent, tmp_path: Path) -> None:
    _exec_healthy(dev_agent)
    path = write_job(
        tmp_path,
        """
job: hog
type: batch
groups:
  g:
    restart: {attempts: 0, mode: fail}
    reschedule: {attempts: 0, unlimited: false}
    tasks:
      t:
        driver: exec
        resources: {memory: 32}
        config:
          command: /bin/sh
          args: ["-c", "id -u; python3 -c 'b = bytearray(256 * 1024 * 1024); print(len(b))'"]
""",
    )
    dev_agent.cli("job", "run", path, timeout=60)
    alloc = wait_until(
        lambda: (a := dev_agent.allocs("hog")) and a[0]["client_status"] == "failed" and a[0],
        what="the allocation to fail",
    )
    state = alloc["task_states"]["t"]
    assert state["oom_killed"] is True
    assert any("memory" in e["message"].lower() for e in state["events"])
    status = dev_agent.cli("alloc", "status", alloc["id"], check=True)
    assert "OOM" in status.stdout


def test_exec_runs_isolated_as_its_own_uid(dev_agent: DevAgent, tmp_path: Path) -> None:
    _exec_healthy(dev_agent)
    path = write_job(
        tmp_path,
        """
job: iso
type: batch
groups:
  g:
    tasks:
      t:
        driver: exec
        config:
          command: /bin/sh
          args: ["-c", "echo uid=$(id -u); echo pids=$(ls /proc | grep -c '^[0-9]')"]
""",
    )
    dev_agent.cli("job", "run", path, check=True, timeout=60)
    alloc = wait_until(
        lambda: (a := dev_agent.allocs("iso")) and a[0]["client_status"] == "complete" and a[0],
        what="completion",
    )
    out = dev_agent.cli("alloc", "logs", alloc["id"], check=True).stdout
    uid = int(out.split("uid=")[1].split()[0])
    assert 70000 <= uid <= 79999  # the allocation's own uid (docs: the exec uid range)
    pids = int(out.split("pids=")[1].split()[0])
    assert pids < 10  # its own PID namespace: only its own few processes are visible
