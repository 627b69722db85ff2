"""The web UI's routes in process (no browser): the shell and its redirect, fragments
rendered from the server's state (never cached), bad input answered 4xx, and the pure
view arithmetic (podium.ui.views).  tests/ui drives the same pages in a real Chromium;
tests/acl/test_ui_acl.py checks them with access control on."""

from __future__ import annotations

import re

import httpx
import pytest

from podium.models import Allocation, Evaluation, JobSpec, Node
from podium.models.evaluation import AllocMetric, EvalStatus, TriggeredBy
from podium.models.job import Resources
from podium.models.node import NodeResources
from podium.models.service import ServiceRegistration
from podium.models.views import GroupSummary, JobListItem
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore
from podium.ui import STATIC, views
from tests.agent.conftest import until
from tests.server.conftest import Cluster, mock_job


def http(cluster: Cluster) -> httpx.AsyncClient:
    assert cluster._transport is not None
    return httpx.AsyncClient(transport=cluster._transport, base_url="http://podium")


async def test_root_redirects_browsers_and_keeps_api_clients_answer(cluster: Cluster) -> None:
    async with http(cluster) as c:
        r = await c.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert r.status_code == 307 and r.headers["location"] == "/ui/"
        r = await c.get("/")
        assert r.status_code == 404 and "/v1" in r.json()["error"]
        r = await c.get("/ui")
        assert r.status_code == 307 and r.headers["location"] == "/ui/"
        for path in ("/ui/", "/ui/jobs", "/ui/job/web", "/ui/topology"):
            r = await c.get(path)
            assert r.status_code == 200
            assert 'src="/ui/static/podium.js"' in r.text
            assert 'data-acl="off"' in r.text
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["x-frame-options"] == "DENY"
        r = await c.get("/ui/static/podium.css")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
        r = await c.get("/ui/static/../../core.py")
        assert r.status_code == 404
        r = await c.get("/ui/static/secrets.txt")
        assert r.status_code == 404 and "podium.js" in r.json()["error"]
        r = await c.get("/ui/fragment/nothing")
        assert r.status_code == 404 and "no UI route" in r.json()["error"]


async def test_fragments_render_the_cluster_and_are_never_cached(cluster: Cluster) -> None:
    await cluster.add_agent("node-a")
    await cluster.run(mock_job("web", 2, cpu=250, memory=128))
    await until(
        lambda: sum(a.client_status == "running" for a in cluster.store.allocs()) == 2,
        "two running allocations",
    )
    alloc = cluster.store.allocs()[0]
    async with http(cluster) as c:
        pages = {
            "/ui/fragment/jobs?namespace=*": ['data-job="web"', "2 running"],
            "/ui/fragment/job/web?namespace=default": [
                'data-topics="Job:web Allocation:web',
                'data-action="scale"',
                "Version 0",
            ],
            f"/ui/fragment/allocation/{alloc.id}?namespace=default": [
                f'data-alloc="{alloc.id}"',
                "250 MHz",
                'id="log-tail"',
            ],
            "/ui/fragment/nodes": ["node-a", "500 / "],
            f"/ui/fragment/node/{alloc.node_id}": ["node-a", alloc.id[:8]],
            "/ui/fragment/topology": ["node-box", "web.g[0]"],
            "/ui/fragment/services?namespace=*": ["No services"],
            "/ui/fragment/evaluations?namespace=*": ["job-register"],
            "/ui/fragment/variables?namespace=*": ["No variables"],
        }
        for path, wanted in pages.items():
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["cache-control"] == "no-store", path
            for text in wanted:
                assert text in r.text, (path, text)


async def test_jobs_fragment_filters_and_refuses_bad_input(cluster: Cluster) -> None:
    await cluster.run(mock_job("web-a"))
    await cluster.run(mock_job("api-b"))
    async with http(cluster) as c:
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*", "q": "WEB"})
        assert 'data-job="web-a"' in r.text and 'data-job="api-b"' not in r.text
        assert "1 of 2 jobs" in r.text
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*", "status": "dead"})
        assert "No job matches" in r.text
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*", "status": "sleepy"})
        assert r.status_code == 400 and "sleepy" in r.json()["error"]
        r = await c.get("/ui/fragment/jobs", params={"namespace": "no such ns!"})
        assert r.status_code == 400
        r = await c.get("/ui/fragment/job/nope", params={"namespace": "default"})
        assert r.status_code == 404 and "nope" in r.json()["error"]


async def test_job_page_explains_placement_failures_in_numbers(cluster: Cluster) -> None:
    await cluster.add_agent("small")
    await cluster.run(mock_job("huge", 2, memory=500_000))
    await until(
        lambda: any(e.failed_tg_allocs for e in cluster.store.evaluations()),
        "the evaluation's failed metrics",
    )
    async with http(cluster) as c:
        r = await c.get("/ui/fragment/job/huge", params={"namespace": "default"})
    assert "Placement failures" in r.text
    assert "2 not placed" in r.text
    assert "1 node evaluated: 1 exhausted memory" in r.text
    assert "asked 500,000 MB memory" in r.text


async def test_jobs_fragment_pages_a_long_list(cluster: Cluster) -> None:
    for i in range(101):
        cluster.server.register_job(JobSpec.model_validate(mock_job(f"job-{i:03d}")))
    async with http(cluster) as c:
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*"})
        assert r.text.count("<tr data-job=") == 100
        assert "1\u2013100 of 101 matching" in r.text and 'rel="next"' in r.text
        assert "page=2" in r.text and 'rel="prev"' not in r.text
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*", "page": 2})
        assert r.text.count("<tr data-job=") == 1 and 'data-job="job-100"' in r.text
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*", "page": 9})
        assert 'data-job="job-100"' in r.text  # past the end: the last page
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*", "q": "job-09"})
        assert r.text.count("<tr data-job=") == 10 and 'rel="next"' not in r.text
        r = await c.get("/ui/fragment/jobs", params={"namespace": "*", "page": 0})
        assert r.status_code == 400 and "page" in r.json()["error"]


async def test_services_page_shows_health_per_instance() -> None:
    # registrations straight into a store of its own (the cluster fixture's invariants
    # want an allocation behind each; the page needs only the catalog)
    store = StateStore()
    txn = store.txn()
    for i, healthy in enumerate((True, False)):
        txn.put_service(
            ServiceRegistration(
                id=f"reg{i}",
                service_name="api",
                job_id="web",
                group="g",
                alloc_id=f"alloc{i}",
                node_id="n1",
                address="10.0.0.1",
                port=8080 + i,
                tags=["v1"],
                healthy=healthy,
            )
        )
    store.commit(txn)
    transport = httpx.ASGITransport(app=create_app(Server(store)))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as c:
        r = await c.get("/ui/fragment/services", params={"namespace": "*"})
    assert r.status_code == 200
    assert "1 / 2 healthy" in r.text and "s-degraded" in r.text
    assert "10.0.0.1:8080" in r.text and "10.0.0.1:8081" in r.text
    assert r.text.count("s-unhealthy") == 1 and "tags: v1" in r.text


async def test_variable_paths_and_values(cluster: Cluster) -> None:
    async with http(cluster) as c:
        r = await c.put("/v1/var/app/db", json={"items": {"password": "hunter2"}})
        assert r.status_code == 200, r.text
        r = await c.get("/ui/fragment/variables", params={"namespace": "*"})
        assert "app/db" in r.text and "hunter2" not in r.text  # paths only in the list
        r = await c.get("/ui/fragment/variable/app/db", params={"namespace": "default"})
        assert r.status_code == 200 and "hunter2" in r.text


# --------------------------------------------------------------------------- views


def _node(node_id: str, cpu: int = 1000, memory: int = 1000) -> Node:
    return Node(id=node_id, name=node_id, resources=NodeResources(cpu=cpu, memory=memory))


def _alloc(
    alloc_id: str, node_id: str, job: str, cpu: int, memory: int, **kw: object
) -> Allocation:
    return Allocation(
        id=alloc_id,
        eval_id="e",
        name=f"{job}.g[0]",
        job_id=job,
        job_version=0,
        group="g",
        index=0,
        node_id=node_id,
        resources=Resources(cpu=cpu, memory=memory),
        **kw,  # type: ignore[arg-type]
    )


def test_topology_fills_each_node_by_reserved_share() -> None:
    nodes = [_node("n2"), _node("n1", cpu=2000)]
    allocs = {
        "n1": [
            _alloc("a", "n1", "web", 500, 250),
            _alloc("b", "n1", "web", 500, 250, client_status="complete"),  # holds nothing
        ],
        "n2": [_alloc("c", "n2", "db", 100, 900)],
    }
    boxes = views.topology(nodes, allocs)
    assert [b.node.id for b in boxes] == ["n1", "n2"]
    n1, n2 = boxes
    assert [(b.alloc.id, b.cpu_percent, b.memory_percent) for b in n1.blocks] == [("a", 25.0, 25.0)]
    assert n1.cpu is not None and (n1.cpu.used, n1.cpu.total, n1.cpu.percent) == (500, 2000, 25)
    assert n2.memory is not None and n2.memory.percent == 90
    assert n1.blocks[0].hue == views.hue("default/web")


def test_job_rows_sum_counts_and_filter() -> None:
    items = [
        JobListItem(
            id="web",
            status="running",
            summary={"a": GroupSummary(running=2, failed=1), "b": GroupSummary(queued=3)},
        ),
        JobListItem(id="batch", status="dead", summary={"x": GroupSummary(complete=4)}),
    ]
    rows = views.job_rows(items)
    assert rows[0].counts == {
        "queued": 3,
        "pending": 0,
        "running": 2,
        "complete": 0,
        "failed": 1,
        "lost": 0,
    }
    assert rows[0].groups == ["a", "b"] and rows[0].total == 6
    assert [r.id for r in views.job_rows(items, status="dead")] == ["batch"]
    assert [r.id for r in views.job_rows(items, search="WE")] == ["web"]


def test_placement_failures_say_why_in_numbers_until_a_later_eval_places() -> None:
    metric = AllocMetric(nodes_evaluated=3)
    metric.exhaust("memory")
    metric.exhaust("memory")
    metric.filter("missing driver exec")
    failed = Evaluation(
        id="e1",
        triggered_by=TriggeredBy.JOB_REGISTER,
        job_id="web",
        status=EvalStatus.BLOCKED,
        failed_tg_allocs={"g": metric},
        queued_allocations={"g": 2},
        modify_index=5,
    )
    (f,) = views.placement_failures([failed])
    assert f.group == "g" and f.queued == 2
    assert f.text.startswith("3 nodes evaluated: 2 exhausted memory, 1 missing driver exec")
    placed = failed.model_copy(
        update={
            "id": "e2",
            "status": EvalStatus.COMPLETE,
            "failed_tg_allocs": {},
            "modify_index": 9,
        }
    )
    assert views.placement_failures([failed, placed]) == []


@pytest.mark.parametrize(("used", "total", "percent"), [(0, 0, 0), (5, 10, 50), (20, 10, 100)])
def test_bar_percent_is_bounded(used: int, total: int, percent: int) -> None:
    assert views.Bar("CPU", used, total, "MHz").percent == percent


# --------------------------------------------------------------------------- contrast


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_colours_meet_wcag_aa_contrast() -> None:
    """Every text colour of the stylesheet against the backgrounds it is drawn on: at
    least 4.5:1 (WCAG 2 AA for body text)."""
    css = (STATIC / "podium.css").read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", css))
    backgrounds = [var["bg"], var["panel"], "#f0f2f5"]  # page, panels, table headers
    texts = ["text", "muted", "accent", "danger", "pending", "running", "complete", "failed"]
    texts += ["lost", "queued"]
    for name in texts:
        for bg in backgrounds:
            ratio = _contrast(var[name], bg)
            assert ratio >= 4.5, f"--{name} {var[name]} on {bg}: {ratio:.2f}:1"
    dark = [("#f0f3f6", "#161b22"), ("#161b22", "#f0f3f6"), ("#e6edf3", "#0d1117")]
    dark += [("#ffffff", var["danger"]), (var["accent-text"], var["accent"])]
    for fg, bg in dark:  # the header, its current link, the log tail, filled buttons
        assert _contrast(fg, bg) >= 4.5, (fg, bg)
