"""A server's ``/v1/metrics`` through the real app (in process, over httpx's ASGI
transport; agents with the mock driver): the text parses with prometheus_client's own
parser, and after a scripted workload its counters equal what the API reports."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from podium.models import ClientStatus
from tests.server.conftest import Cluster, mock_job


def http(cluster: Cluster) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=cluster._transport, base_url="http://podium", timeout=30)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value, parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(c: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await c.get("/v1/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=1.0.0")
    return samples(r.text)


async def test_counters_match_what_the_api_reports_after_a_workload(cluster: Cluster) -> None:
    for n in range(2):
        await cluster.add_agent(f"node{n}")
    async with http(cluster) as c:
        # the workload: two jobs, one scaled up then down, the other stopped
        await cluster.run(mock_job("web", count=3))
        await cluster.run(mock_job("batchy", count=2))
        await cluster.until(lambda: len(cluster.running("web")) == 3, what="web running")
        await cluster.until(lambda: len(cluster.running("batchy")) == 2, what="batchy running")
        await cluster.client.scale_job("web", "g", 5)
        await cluster.until(lambda: len(cluster.running("web")) == 5, what="web scaled up")
        await cluster.client.scale_job("web", "g", 4)
        await cluster.client.stop_job("batchy")
        await cluster.until(lambda: len(cluster.running("batchy")) == 0, what="batchy stopped")
        await cluster.settled("web")
        await cluster.settled("batchy")
        # quiet: nothing left to change what is compared below
        await cluster.until(
            lambda: all(a.client_status.terminal for a in cluster.allocs("batchy")),
            what="batchy's tasks to exit",
        )
        await cluster.until(
            lambda: sum(not a.client_status.terminal for a in cluster.allocs("web")) == 4,
            what="web's fifth allocation to stop",
        )
        before = await scrape(c)
        jobs_route = dict(method="GET", route="/v1/jobs", status="200")
        n_calls = 17
        for _ in range(n_calls):
            assert (await c.get("/v1/jobs")).status_code == 200
        for _ in range(3):  # a raw path must be counted under its template
            assert (await c.get("/v1/job/web")).status_code == 200
        assert (await c.get("/v1/job/no-such-job")).status_code == 404
        for n in range(3):  # made-up methods and paths must not make series of their own
            await c.request(f"BREW{n}", f"/v1/pot-{n}")
        after = await scrape(c)

        allocs = (await c.get("/v1/allocations", params={"namespace": "*"})).json()
        evals = (await c.get("/v1/evaluations", params={"namespace": "*"})).json()
        nodes = (await c.get("/v1/nodes")).json()
        jobs = (await c.get("/v1/jobs", params={"namespace": "*"})).json()

    # placements: every allocation the API lists was placed by a committed plan
    assert value(after, "podium_scheduler_placements_total") == len(allocs) == 3 + 2 + 2
    # evaluations: every evaluation the scheduler completed, as the API lists them
    completed = [e for e in evals if e["status"] == "complete"]
    assert value(after, "podium_scheduler_evaluations_total") == len(completed)
    assert value(after, "podium_scheduler_plan_rejections_total") == 0
    assert value(after, "podium_scheduler_evaluation_duration_seconds_count") >= len(completed)
    assert value(after, "podium_applier_commit_duration_seconds_count") >= len(completed)
    # requests, by the route's template
    assert (
        value(after, "podium_api_requests_total", **jobs_route)
        - value(before, "podium_api_requests_total", **jobs_route)
        == n_calls
    )
    job_route = dict(method="GET", route="/v1/job/{job_id}")
    assert value(after, "podium_api_requests_total", **job_route, status="200") == 3
    assert value(after, "podium_api_requests_total", **job_route, status="404") == 1
    assert not any("web" in dict(labels).get("route", "") for _n, labels in after), (
        "a raw path leaked into a label"
    )
    assert (
        value(after, "podium_api_requests_total", method="other", route="unmatched", status="404")
        == 3
    )
    assert (
        value(after, "podium_api_request_duration_seconds_count", method="GET", route="/v1/jobs")
        >= n_calls
    )
    # gauges read from the state
    by_status: dict[str, int] = {}
    for a in allocs:
        by_status[a["client_status"]] = by_status.get(a["client_status"], 0) + 1
    for status in ClientStatus:
        assert value(after, "podium_allocations", client_status=status.value) == by_status.get(
            status.value, 0
        ), status
    assert value(after, "podium_nodes", status="ready") == len(nodes) == 2
    for status in ("pending", "running", "dead"):
        listed = [j for j in jobs if j["status"] == status]
        assert value(after, "podium_jobs", status=status) == len(listed), status
    assert value(after, "podium_store_index") > 0
    assert value(after, "podium_store_commit_duration_seconds_count") > 0
    assert value(after, "podium_server_leader") == 1
    assert value(after, "podium_broker_evaluations", state="ready", type="service") == 0
    assert value(after, "podium_process_resident_memory_bytes") > 0
    assert value(after, "podium_process_open_fds") > 0


async def test_json_format_has_the_same_families(cluster: Cluster) -> None:
    async with http(cluster) as c:
        text = (await c.get("/v1/metrics")).text
        r = await c.get("/v1/metrics", params={"format": "json"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body: dict[str, Any] = r.json()
        bad = await c.get("/v1/metrics", params={"format": "xml"})
    names = {f.name for f in text_string_to_metric_families(text)}
    by_name = {m["name"]: m for m in body["metrics"]}
    assert set(by_name) == names
    nodes = by_name["podium_nodes"]
    assert nodes["type"] == "gauge" and nodes["help"]
    assert {s["labels"]["status"] for s in nodes["samples"]} == {"initializing", "ready", "down"}
    assert by_name["podium_api_requests"]["type"] == "counter"
    assert bad.status_code == 400 and "format" in bad.json()["error"]


async def test_each_server_has_its_own_registry(cluster: Cluster) -> None:
    """Two servers in one process: neither counts the other's requests."""
    from podium.server.api import create_app
    from podium.server.core import Server
    from podium.state import StateStore

    other = Server(StateStore())
    transport = httpx.ASGITransport(app=create_app(other))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://other") as o,
        http(cluster) as c,
    ):
        for _ in range(5):
            await o.get("/v1/nodes")
        mine = await scrape(c)
    route = dict(method="GET", route="/v1/nodes", status="200")
    assert value(mine, "podium_api_requests_total", **route) == 0
    assert other.metrics.registry is not cluster.server.metrics.registry
