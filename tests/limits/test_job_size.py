"""Job size against a real ``podium server``: huge counts are refused with what and where,
change nothing and cost nothing; the largest allowed count is placed while the API answers.

Issue 14: ``count: 1000000000`` was accepted, the scheduler built a placement per instance
on the event loop and the server grew to 23 GB.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PODIUM, wait_until
from tests.limits.realserver import job, latency, real_server

LIMIT_MSG = "groups.web.count: 1000000000 is above this server's limit of 10000 (--max-count)"


def _error(r: httpx.Response) -> str:
    assert r.status_code == 400, (r.status_code, r.text)
    return str(r.json()["error"])


@pytest.mark.parametrize(
    ("count", "said"),
    [
        (1_000_000_000, LIMIT_MSG),
        (1e9, "groups.web.count: expected an integer, got 1000000000.0"),
        ("1e9", "groups.web.count: expected an integer, got '1e9'"),
        (True, "groups.web.count: expected an integer, got true"),
        (10_001, "groups.web.count: 10001 is above this server's limit of 10000"),
    ],
)
def test_a_huge_count_is_refused_and_changes_nothing(tmp_path: Path, count: Any, said: str) -> None:
    with real_server(tmp_path) as server, httpx.Client(base_url=server.addr, timeout=30) as c:
        server.add_nodes(3)
        before = c.get("/v1/status").json()["index"]
        assert said in _error(c.post("/v1/jobs", json=job(count)))
        assert said in _error(c.post("/v1/job/big/plan", json=job(count)))
        assert c.get("/v1/jobs").json() == []
        assert c.get("/v1/evaluations").json() == []
        assert c.get("/v1/status").json()["index"] == before
        assert server.rss_mb() < 300, server.rss_mb()


def test_scale_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    with real_server(tmp_path) as server, httpx.Client(base_url=server.addr, timeout=30) as c:
        server.add_nodes(3)
        assert c.post("/v1/jobs", json=job(5)).status_code == 200
        version = c.get("/v1/job/big").json()["version"]
        r = c.post("/v1/job/big/scale", json={"group": "web", "count": 1_000_000_000})
        assert LIMIT_MSG in _error(r)
        r = c.post("/v1/job/big/scale", json={"group": "web", "count": True})
        assert "count" in _error(r)
        got = c.get("/v1/job/big").json()
        assert (got["version"], got["spec"]["groups"]["web"]["count"]) == (version, 5)
        assert server.rss_mb() < 300


def test_max_count_flag_bounds_groups_and_the_job_total(tmp_path: Path) -> None:
    with (
        real_server(tmp_path, "--max-count", "50") as server,
        httpx.Client(base_url=server.addr, timeout=30) as c,
    ):
        said = _error(c.post("/v1/jobs", json=job(51)))
        assert "groups.web.count: 51 is above this server's limit of 50 (--max-count)" in said
        two = job(30)
        two["job"]["groups"]["db"] = two["job"]["groups"]["web"]
        said = _error(c.post("/v1/jobs", json=two))
        assert "add up to 60 instances, above this server's limit of 50 per job" in said
        assert c.post("/v1/jobs", json=job(50)).status_code == 200


def test_the_largest_count_is_placed_while_the_api_answers(tmp_path: Path) -> None:
    """10,000 instances on 100 simulated nodes (registered over the API, never heartbeating
    within the long TTL): every instance placed once, and GET /v1/status answered within a
    second throughout (one evaluation places at most 1,000)."""
    with real_server(tmp_path, "--heartbeat-ttl", "600") as server:
        server.add_nodes(100, cpu=100_000, memory=100_000)
        status = f"{server.addr}/v1/status"
        with httpx.Client(base_url=server.addr, timeout=60) as c:
            assert c.post("/v1/jobs", json=job(10_000)).status_code == 200
            worst = 0.0
            samples = 0
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                worst = max(worst, latency(status))
                samples += 1
                summary = c.get("/v1/job/big").json()["summary"]["web"]
                if summary["pending"] == 10_000:
                    break
            else:
                raise AssertionError(f"not placed in time: {summary}")
            evals = c.get("/v1/job/big/evaluations").json()
        print(f"placed 10,000: {samples} samples of /v1/status, worst {worst:.3f}s")
        assert len(evals) >= 10
        assert all(e["status"] == "complete" for e in evals)
        assert worst < 1.0, f"the API took {worst:.3f}s to answer during placement"
        wait_until(lambda: server.rss_mb() > 0)


def test_compose_replicas_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  web:\n    image: podium-test/busybox:1\n    deploy: {replicas: 1000000000}\n"
    )
    with real_server(tmp_path) as server, httpx.Client(base_url=server.addr, timeout=30) as c:
        env = {**os.environ, "PODIUM_ADDR": server.addr, "NO_COLOR": "1", "COLUMNS": "200"}
        out = subprocess.run(
            [*PODIUM, "compose", "up", "-d", "--file", str(compose), "--project", "p"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert out.returncode != 0
        said = out.stdout + out.stderr
        assert "1000000000 is above this server's limit of 10000 (--max-count)" in said, said
        assert c.get("/v1/jobs").json() == []
        assert server.rss_mb() < 300
