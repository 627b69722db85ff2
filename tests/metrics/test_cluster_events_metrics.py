"""What happens in the cluster shows in the metrics: an agent that goes silent is a missed
heartbeat and a down node on the server; a task that keeps exiting is restarts on its
agent (in process: the server's app and the agent's own app, over httpx's ASGI transport)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from podium.agent.http import create_agent_app
from tests.server.conftest import Cluster, mock_job


async def scrape(transport: httpx.AsyncBaseTransport) -> dict[tuple[str, str], float]:
    """(sample name, sorted label values joined) -> value."""
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
        r = await c.get("/v1/metrics")
    assert r.status_code == 200, r.text
    return {
        (s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }


async def test_a_silent_agent_is_a_missed_heartbeat_and_a_down_node(cluster: Cluster) -> None:
    assert cluster._transport is not None
    agent = await cluster.add_agent("quiet")
    before = await scrape(cluster._transport)
    assert before[("podium_heartbeat_missed_total", "")] == 0
    assert before[("podium_nodes", "status=ready")] == 1
    await agent.stop()
    cluster.agents.remove(agent)
    await cluster.until(
        lambda: cluster.store.nodes()[0].status == "down", timeout=10, what="the node down"
    )
    after = await scrape(cluster._transport)
    assert after[("podium_heartbeat_missed_total", "")] == 1
    assert after[("podium_nodes", "status=down")] == 1
    assert after[("podium_nodes", "status=ready")] == 0


async def test_restarts_and_task_states_on_the_agent(cluster: Cluster) -> None:
    agent = await cluster.add_agent("busy")
    agent_app = httpx.ASGITransport(app=create_agent_app(agent))
    await cluster.run(
        mock_job(
            "flappy",
            run_for="0.05s",
            exit_code=1,
            restart={"attempts": 3, "interval": "1h", "delay": "0s", "mode": "fail"},
        )
    )
    await cluster.run(mock_job("steady", count=2))
    await cluster.until(lambda: len(cluster.running("steady")) == 2, what="steady running")
    await cluster.until(
        lambda: any(a.client_status == "failed" for a in cluster.allocs("flappy")),
        what="flappy to exhaust its restarts",
    )
    m = await scrape(agent_app)
    # flappy: one start and three restarts on the first placement (its replacements may
    # be starting meanwhile: count from the agent's own record)
    assert m[("podium_agent_task_restarts_total", "")] >= 3
    assert m[("podium_agent_task_restarts_total", "")] == agent.metrics.task_restarts
    assert m[("podium_agent_task_starts_total", "driver=mock")] == sum(
        agent.metrics.task_starts.values()
    )
    assert m[("podium_agent_task_starts_total", "driver=mock")] >= 2 + 4
    assert m[("podium_agent_tasks", "state=running")] >= 2
    assert m[("podium_agent_task_start_failures_total", "driver=mock")] == 0
    count = m[("podium_agent_task_start_duration_seconds_count", "")]
    assert count == m[("podium_agent_task_starts_total", "driver=mock")]
    assert m[("podium_agent_task_start_duration_seconds_bucket", "le=+Inf")] == count
