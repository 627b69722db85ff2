"""End to end: a docker job through the real CLI and `podium agent --dev`, on a real engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DevAgent, wait_until, write_job

IMAGE = "podium-test/busybox:1"


def _engine() -> tuple[Any, str | None]:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        client.version()
    except Exception as exc:
        return None, f"no Docker Engine answers: {exc}"
    try:
        client.images.get(IMAGE)
    except Exception as exc:
        return None, f"test image {IMAGE} is missing (run scripts/test-image): {exc}"
    return client, None


CLIENT, SKIP = _engine()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def test_docker_job_runs_logs_serves_and_stops(dev_agent: DevAgent, tmp_path: Path) -> None:
    node = dev_agent.get("/v1/nodes")[0]
    info = node["drivers"].get("docker", {})
    assert info.get("healthy"), f"docker driver unhealthy: {info.get('description')}"
    path = write_job(
        tmp_path,
        f"""
job: boxes
type: service
groups:
  web:
    network:
      ports:
        http: {{}}
    tasks:
      srv:
        driver: docker
        resources: {{memory: 32, cpu: 100}}
        config:
          image: {IMAGE}
          command: /bin/sh
          args:
            - -c
            - echo "hello from $PODIUM_TASK_NAME"; echo oops >&2;
              echo served > /local/index.html; exec httpd -f -p 8080 -h /local
          ports: {{http: 8080}}
""",
    )
    dev_agent.cli("job", "run", path, check=True, timeout=60)
    alloc = dev_agent.wait_running("boxes", 1, timeout=60)[0]
    alloc_id = alloc["id"]
    containers = CLIENT.containers.list(filters={"label": f"podium.alloc_id={alloc_id}"})
    assert [c.name for c in containers] == [f"podium-srv-{alloc_id}"]

    logs = wait_until(
        lambda: (
            (r := dev_agent.cli("alloc", "logs", alloc_id[:8])).returncode == 0
            and "hello from srv" in r.stdout
            and r
        ),
        timeout=15,
        what="the container's output in alloc logs",
    )
    assert "oops" not in logs.stdout
    errs = dev_agent.cli("alloc", "logs", "--stderr", alloc_id[:8], check=True)
    assert "oops" in errs.stdout

    host_port = wait_until(
        lambda: dev_agent.get(f"/v1/allocation/{alloc_id}")["ports"]["http"]["value"],
        what="the allocation's port",
    )
    body = wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{host_port}/index.html", timeout=2).text,
        timeout=15,
        what="the container's port to answer",
    )
    assert body == "served\n"

    dev_agent.cli("job", "stop", "boxes", check=True, timeout=60)
    wait_until(
        lambda: (
            not CLIENT.containers.list(all=True, filters={"label": f"podium.alloc_id={alloc_id}"})
        ),
        timeout=30,
        what="the container to be removed",
    )
    final = dev_agent.allocs("boxes")
    assert all(a["desired_status"] == "stop" for a in final)
