"""End to end: a Compose file, as it is, through `podium compose` onto real containers.

The worker reaches the api by its service name (``http://api:8080``), through the
project's default network that the docker driver creates on the node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import DevAgent, wait_until
from tests.e2e.test_docker import CLIENT, IMAGE, SKIP

pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

COMPOSE = f"""
name: shop
services:
  api:
    image: {IMAGE}
    command:
      - sh
      - -c
      - echo api up as $$ROLE; mkdir -p /tmp/w; echo pong from $$HOSTNAME > /tmp/w/index.html;
        exec httpd -f -p 8080 -h /tmp/w
    environment:
      ROLE: ${{ROLE:-backend}}
    deploy:
      replicas: 2
      resources: {{limits: {{cpus: "0.1", memory: 32M}}}}
  worker:
    image: {IMAGE}
    command: >-
      sh -c "echo worker up; until wget -q -O- http://api:8080/; do sleep 0.2; done;
      echo worker reached api; while true; do sleep 1; done"
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

    worker = next(a for a in running if a["group"] == "worker")
    out = wait_until(
        lambda: (
            (o := dev_agent.cli("alloc", "logs", worker["id"], "worker").stdout)
            and "worker reached api" in o
            and o
        ),
        timeout=30,
        what="the worker to reach the api by its service name",
    )
    assert "pong from" in out
    network = CLIENT.networks.get("shop_default")
    labels = network.attrs["Labels"]
    assert (labels["podium.managed"], labels["podium.project"]) == ("true", "shop")

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
    wait_until(
        lambda: (
            not [
                n for n in CLIENT.networks.list(names=["shop_default"]) if n.name == "shop_default"
            ]
        ),
        timeout=30,
        what="the project's network to be removed with its last container",
    )


HEALTHY = f"""
name: gated
services:
  db:
    image: {IMAGE}
    command: sh -c "mkdir -p /tmp; sleep 2; touch /tmp/ready; while true; do sleep 1; done"
    healthcheck:
      test: test -f /tmp/ready && echo ready
      interval: 300ms
      retries: 1
      start_period: 20s
    deploy: {{resources: {{limits: {{memory: 16M}}}}}}
  web:
    image: {IMAGE}
    command: sh -c "echo web up; while true; do sleep 1; done"
    depends_on:
      db: {{condition: service_healthy}}
    deploy: {{resources: {{limits: {{memory: 16M}}}}}}
"""


def test_service_healthy_holds_the_dependent_until_the_healthcheck_passes(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    """Docker's HEALTHCHECK, through the driver's health verdict and the agent's check, holds
    ``web`` back until ``db`` is healthy (``depends_on: service_healthy``)."""
    compose = tmp_path / "compose.yaml"
    compose.write_text(HEALTHY)
    dev_agent.cli("compose", "up", "-f", str(compose), "--detach", check=True, timeout=60)
    db = dev_agent.wait_running("gated", 1, timeout=30)[0]
    assert db["group"] == "db"
    assert [a["group"] for a in dev_agent.allocs("gated")] == ["db"]  # web waits
    running = dev_agent.wait_running("gated", 2, timeout=60)
    web = next(a for a in running if a["group"] == "web")
    db = dev_agent.get(f"/v1/allocation/{db['id']}")
    assert db["checks"]["db-driver-health"]["status"] == "passing", db["checks"]
    started = {a["group"]: a["create_time"] for a in dev_agent.allocs("gated")}
    assert started["web"] - started["db"] >= 2.0, started  # not before db's file appeared
    assert web["client_status"] == "running"
    dev_agent.cli("compose", "down", "--project", "gated", check=True, timeout=60)
