"""Day-two operations on a secure cluster (issue 16): restart, signal, the files and the
agent's monitor are relayed by the server to the agent's TLS endpoint (verified as that
node, with the server's certificate), and the agent answers no one else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import wait_until
from tests.tls.conftest import SecureCluster
from tests.tls.test_secure_cluster import run_sleeper

Make = Callable[..., SecureCluster]


def test_lifecycle_files_and_monitor_over_tls(secure_cluster: Make, tmp_path: Path) -> None:
    c = secure_cluster()
    c.start_agent("a1", "--join-token", c.token())
    alloc = run_sleeper(c, tmp_path, "ops")
    aid = str(alloc["id"])
    pid = alloc["task_states"]["t"]["pid"]  # type: ignore[index]

    listing = json.loads(c.cli("alloc", "fs", aid, "alloc/logs", "-o", "json", check=True).stdout)
    assert "t.stdout" in {e["name"] for e in listing["entries"]}
    assert "hello-tls" in c.cli("alloc", "fs", aid, "alloc/logs/t.stdout", check=True).stdout

    c.cli("alloc", "signal", aid, "-s", "SIGCONT", check=True)
    c.cli("alloc", "restart", aid, check=True)

    def restarted() -> bool:
        (a,) = c.running("ops")
        s = a["task_states"]["t"]
        return bool(s["state"] == "running" and s["pid"] not in (None, pid))

    wait_until(restarted, timeout=30, what="the task to run again")

    # the agent's monitor, through the server (a few lines, then it ends by itself)
    node = c.get("/v1/nodes")[0]
    with c.http() as http:
        r = http.get(
            "/v1/agent/monitor", params={"node_id": node["id"], "duration": "300ms"}, timeout=30
        )
    assert r.status_code == 200, r.text
    first = json.loads(r.text.splitlines()[0])
    assert first["message"] == "monitoring agent a1 at level info"

    # straight to the agent's endpoint without a server's certificate: refused
    with httpx.Client(verify=False, timeout=10) as direct:
        try:
            got = direct.post(f"{node['http_addr']}/v1/client/allocation/{aid}/restart", json={})
        except httpx.HTTPError:
            return  # the handshake itself refused a client without a certificate
    assert got.status_code in (401, 403), got.text
