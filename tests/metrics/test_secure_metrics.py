"""Under ``--secure`` (TLS and ACLs, real processes): a server's metrics need a token with
operator read; an agent's own endpoint refuses a client without a server's certificate,
and the server relays the agent's metrics (and an allocation's usage) over its TLS link."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import wait_until, write_job
from tests.tls.conftest import SecureCluster, secure_cluster  # noqa: F401

Make = Callable[..., SecureCluster]

JOB = """
job: tls-usage
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        resources: {cpu: 100, memory: 32}
        config: {command: /bin/sleep, args: ["300"]}
"""


def test_metrics_and_usage_through_a_secure_server(
    secure_cluster: Make,  # noqa: F811
    tmp_path: Path,
) -> None:
    c = secure_cluster()
    c.start_agent("a1", "--join-token", c.token())
    c.cli("job", "run", "--detach", write_job(tmp_path, JOB), check=True)
    alloc = wait_until(lambda: c.running("tls-usage"), timeout=30, what="the task")[0]
    node = c.get(f"/v1/node/{alloc['node_id']}")

    ca = ssl.create_default_context(cafile=str(c.ca))
    with httpx.Client(base_url=c.addr, verify=ca, timeout=30) as anonymous:
        assert anonymous.get("/v1/metrics").status_code == 401
        assert anonymous.get(f"/v1/node/{node['id']}/metrics").status_code == 401
    with c.http() as admin:
        own = admin.get("/v1/metrics")
        assert own.status_code == 200, own.text
        assert "podium_api_requests_total" in own.text
        relayed = admin.get(f"/v1/node/{node['id']}/metrics")
        assert relayed.status_code == 200, relayed.text
        names = {f.name for f in text_string_to_metric_families(relayed.text)}
        assert "podium_agent_tasks" in names
        stats = admin.get(f"/v1/allocation/{alloc['id']}/stats")
        assert stats.status_code == 200, stats.text
        assert stats.json()["tasks"]["t"]["memory_bytes"] > 0
    # the agent's own endpoint: a server's certificate, or nothing
    assert node["http_addr"].startswith("https://")
    with httpx.Client(verify=ca, timeout=10) as stranger:
        try:
            r = stranger.get(f"{node['http_addr']}/v1/metrics")
        except httpx.HTTPError:
            pass  # refused in the TLS handshake: no client certificate
        else:
            assert r.status_code in (401, 403), r.text
