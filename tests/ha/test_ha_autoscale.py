"""Autoscaling with three real ``podium server --etcd`` processes on a real etcd cluster:
only the leader evaluates (its loop is one of the leader's duties), its decisions are
replicated to every server, and after the leader is killed the new one carries on from the
stored scaling events: it shrinks the group the old leader grew, once, without repeating
the old leader's decision.  The metric is a Prometheus query answered by a small real
HTTP server (tests/server/fake_prometheus.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.ha.cluster import HACluster, etcd_binary
from tests.server.fake_prometheus import FakePrometheus, serve_prometheus

pytestmark = pytest.mark.skipif(
    etcd_binary() is None,
    reason="etcd is not installed (Debian's etcd-server package: /usr/bin/etcd)",
)


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    with serve_prometheus() as prom:
        yield prom


def job(prom: FakePrometheus) -> dict[str, Any]:
    return {
        "job": "web",
        "groups": {
            "g": {
                "scaling": {
                    "min": 1,
                    "max": 4,
                    "policy": {
                        "metric": "prometheus",
                        "query": {"url": prom.url, "expr": "sum(up)"},
                        "target": 10,
                        "evaluation_interval": "1s",
                        "cooldown": "2s",
                    },
                },
                "tasks": {
                    "t": {
                        "driver": "raw_exec",
                        "config": {"command": "/bin/sleep", "args": ["3600"]},
                        "resources": {"cpu": 10, "memory": 10},
                    }
                },
            }
        },
    }


def changes(url: str) -> list[tuple[int, int]]:
    r = httpx.get(f"{url}/v1/job/web/scale", timeout=5)
    r.raise_for_status()
    events = r.json()["groups"]["g"]["events"]
    return [(e["previous_count"], e["count"]) for e in reversed(events) if e["count"] is not None]


def test_the_leader_scales_and_its_successor_carries_on(
    cluster: HACluster, prometheus: FakePrometheus
) -> None:
    cluster.start_all()
    leader = cluster.wait_leader()
    followers = [s for s in cluster.servers if s is not leader]

    prometheus.value = 35.0  # 3.5 times the target: 1 -> 4 (its max, where it stays)
    r = httpx.post(f"{followers[0].url}/v1/jobs", json={"job": job(prometheus)}, timeout=15)
    assert r.status_code == 200, r.text
    # Decided by the leader, read from every server's replica.
    for s in cluster.servers:
        wait_until(lambda s=s: changes(s.url) == [(1, 4)], timeout=60, what=f"s{s.index}: 1 -> 4")

    cluster.kill(leader.index)
    new = cluster.wait_leader(other_than=leader.url, among=followers)
    prometheus.value = 0.0
    wait_until(
        lambda: changes(new.url) == [(1, 4), (4, 1)],
        timeout=60,
        what="the new leader to scale in to 1",
    )
    versions = httpx.get(f"{new.url}/v1/job/web/versions", timeout=5).json()
    reasons = [v["description"] for v in sorted(versions, key=lambda v: v["version"])]
    assert reasons == [
        "",
        "autoscaler: prometheus 35 of target 10 -> 4 (max)",
        "autoscaler: prometheus 0 of target 10 -> 1 (min)",
    ], reasons
    other = next(s for s in followers if s is not new)
    wait_until(lambda: changes(other.url) == [(1, 4), (4, 1)], what="the follower to have it")
