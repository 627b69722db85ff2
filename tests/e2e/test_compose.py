"""End to end: a Compose file, as it is, through `podium compose` onto real containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import DevAgent, wait_until
from tests.e2e.test_docker import IMAGE, SKIP

pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

COMPOSE = f"""
name: shop
services:
  api:
    image: {IMAGE}
    command: ["sh", "-c", "echo api up as $$ROLE; while true; do sleep 1; done"]
    environment:
      ROLE: ${{ROLE:-backend}}
    deploy:
      replicas: 2
      resources: {{limits: {{cpus: "0.1", memory: 32M}}}}
  worker:
    image: {IMAGE}
    command: sh -c "echo worker up; while true; do sleep 1; done"
    depends_on: [api]
    deploy:
      resources: {{limits: {{memory: 32M}}}}
"""


def test_compose_up_ps_down(dev_agent: DevAgent, tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(COMPOSE)

    converted = dev_agent.cli("compose", "convert", "-f", str(compose), check=True)
    assert "driver: docker" in converted.stdout and "api" in converted.stdout

    dev_agent.cli("compose", "up", "-f", str(compose), check=True, timeout=120)
    running = dev_agent.wait_running("shop", 3, timeout=60)
    assert sorted(a["group"] for a in running) == ["api", "api", "worker"]

    api = next(a for a in running if a["group"] == "api")
    out = wait_until(
        lambda: (
            (o := dev_agent.cli("alloc", "logs", api["id"], "api").stdout) and "api up" in o and o
        ),
        what="the api container's output",
    )
    assert "api up as backend" in out  # ${ROLE:-backend} interpolated by the converter

    ps = dev_agent.cli("compose", "ps", "--project", "shop", check=True)
    assert ps.stdout.count("running") >= 3

    dev_agent.cli("compose", "down", "--project", "shop", check=True, timeout=120)
    wait_until(
        lambda: all(
            a["client_status"] not in ("running", "pending")
            for a in dev_agent.get("/v1/allocations")
        ),
        timeout=60,
        what="the project's containers to stop",
    )
