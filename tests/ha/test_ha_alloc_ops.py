"""Day-two operations through a follower (issue 16): ``alloc stop`` is a write the leader
commits (forwarded, as every write), and ``alloc restart`` is relayed to the agent by the
leader; a follower's monitor shows its own log."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.ha.cluster import HACluster, etcd_binary
from tests.ha.test_ha_servers import agent, running, sleep_job

pytestmark = pytest.mark.skipif(
    etcd_binary() is None,
    reason="etcd is not installed (Debian's etcd-server package: /usr/bin/etcd)",
)


def test_stop_and_restart_through_a_follower(tmp_path: Path, cluster: HACluster) -> None:
    cluster.start_all()
    leader = cluster.wait_leader()
    follower = next(s for s in cluster.servers if s is not leader)
    with agent(tmp_path, [s.url for s in cluster.servers]):
        r = httpx.post(f"{leader.url}/v1/jobs", json=sleep_job("web", 2), timeout=10)
        assert r.status_code == 200, r.text
        before = wait_until(
            lambda: (lambda rs: rs if len(rs) == 2 else None)(running(leader.url, "web")),
            timeout=60,
            what="2 allocations running",
        )
        victim, other = before[0]["id"], before[1]["id"]
        r = httpx.post(f"{follower.url}/v1/allocation/{victim}/stop", timeout=10)
        assert r.status_code == 200, r.text
        ev = follower.get(f"/v1/evaluation/{r.json()['eval_id']}")
        assert ev.status_code == 200 and ev.json()["triggered_by"] == "alloc-stop"
        after = wait_until(
            lambda: (
                lambda rs: rs if len(rs) == 2 and victim not in {a["id"] for a in rs} else None
            )(running(follower.url, "web")),
            timeout=60,
            what="the replacement to run",
        )
        assert any(a["previous_allocation"] == victim for a in after)

        pid = next(a for a in after if a["id"] == other)["task_states"]["t"]["pid"]
        r = httpx.post(f"{follower.url}/v1/allocation/{other}/restart", json={}, timeout=10)
        assert r.status_code == 200, r.text

        def restarted() -> bool:
            a = follower.get(f"/v1/allocation/{other}").json()
            s = a["task_states"]["t"]
            return bool(s["state"] == "running" and s["pid"] not in (None, pid))

        wait_until(restarted, timeout=30, what="the task to run again")

        r = follower.get("/v1/agent/monitor", params={"duration": "200ms"}, timeout=30)
        assert r.status_code == 200
        assert json.loads(r.text.splitlines()[0])["message"].startswith("monitoring this server")
