"""The HTTP API contract: shapes, errors, prefixes, blocking queries, check_index."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from podium.models import Node, NodeResources
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore

JOB: dict[str, Any] = {
    "job": "web",
    "groups": {"g": {"count": 2, "tasks": {"t": {"driver": "mock", "config": {"run_for": "1h"}}}}},
}


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Server]]:
    server = Server(StateStore())
    await server.start()
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client, server
    await server.stop()


async def test_register_and_read_back(api: tuple[httpx.AsyncClient, Server]) -> None:
    client, _ = api
    r = await client.post("/v1/jobs", json={"job": JOB})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 0 and body["changed"] is True and body["eval_id"]
    assert int(r.headers["X-Podium-Index"]) == body["index"]
    jobs = (await client.get("/v1/jobs")).json()
    assert isinstance(jobs, list) and jobs[0]["id"] == "web"
    job = (await client.get("/v1/job/web")).json()
    assert job["spec"]["groups"]["g"]["count"] == 2
    assert job["spec"]["groups"]["g"]["tasks"]["t"]["kill_timeout"] == "5s"
    # same spec again: no new version, still an evaluation
    again = (await client.post("/v1/jobs", json={"job": JOB})).json()
    assert again["version"] == 0 and again["changed"] is False
    for path in (
        "/v1/job/web/versions",
        "/v1/job/web/allocations",
        "/v1/job/web/evaluations",
        "/v1/allocations",
        "/v1/nodes",
        "/v1/evaluations",
    ):
        r = await client.get(path)
        assert r.status_code == 200 and isinstance(r.json(), list), path
        assert "X-Podium-Index" in r.headers


async def test_bad_job_body_is_a_400_with_issues_and_changes_nothing(
    api: tuple[httpx.AsyncClient, Server],
) -> None:
    client, server = api
    bad = {"job": "web", "groups": {"g": {"tasks": {"t": {"driver": "mock", "resourcez": {}}}}}}
    before = server.store.index
    r = await client.post("/v1/jobs", json={"job": bad})
    assert r.status_code == 400
    body = r.json()
    assert body["issues"][0]["path"] == "groups.g.tasks.t.resourcez"
    assert "resources" in body["issues"][0]["hint"]
    assert server.store.index == before
    r = await client.post("/v1/jobs", json={"nope": 1})
    assert r.status_code == 400 and "job" in r.json()["error"]


async def test_not_found_and_prefixes(api: tuple[httpx.AsyncClient, Server]) -> None:
    client, server = api
    assert (await client.get("/v1/job/nope")).status_code == 404
    assert "not found" in (await client.get("/v1/allocation/zzz")).json()["error"]
    for node_id in ("abc111", "abc222"):
        server.register_node(
            Node(id=node_id, name=node_id, resources=NodeResources(cpu=100, memory=100))
        )
    assert (await client.get("/v1/node/abc1")).json()["id"] == "abc111"
    r = await client.get("/v1/node/abc")
    assert r.status_code == 400
    assert sorted(r.json()["matches"]) == ["abc111", "abc222"]


async def test_check_index_conflict(api: tuple[httpx.AsyncClient, Server]) -> None:
    client, _ = api
    first = (await client.post("/v1/jobs", json={"job": JOB, "check_index": 0})).json()
    changed = {**JOB, "priority": 70}
    r = await client.post("/v1/jobs", json={"job": changed, "check_index": 0})
    assert r.status_code == 409
    r = await client.post(
        "/v1/jobs", json={"job": changed, "check_index": first["job_modify_index"]}
    )
    assert r.status_code == 200 and r.json()["version"] == 1


async def test_blocking_query_wakes_on_change(api: tuple[httpx.AsyncClient, Server]) -> None:
    client, _ = api
    r = await client.get("/v1/jobs")
    index = int(r.headers["X-Podium-Index"])
    waiter = asyncio.create_task(client.get("/v1/jobs", params={"index": index, "wait": "10s"}))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await client.post("/v1/jobs", json={"job": JOB})
    r = await asyncio.wait_for(waiter, 5)
    assert int(r.headers["X-Podium-Index"]) > index
    assert [j["id"] for j in r.json()] == ["web"]
    # and a wait that sees no change answers after the wait
    nodes_index = int((await client.get("/v1/nodes")).headers["X-Podium-Index"])
    started = asyncio.get_running_loop().time()
    r = await client.get("/v1/nodes", params={"index": nodes_index, "wait": "50ms"})
    assert r.status_code == 200
    assert asyncio.get_running_loop().time() - started >= 0.04
    assert int(r.headers["X-Podium-Index"]) == nodes_index


async def test_openapi_document(api: tuple[httpx.AsyncClient, Server]) -> None:
    client, _ = api
    doc = (await client.get("/v1/openapi.json")).json()
    for path in (
        "/v1/jobs",
        "/v1/job/{job_id}",
        "/v1/allocations",
        "/v1/nodes",
        "/v1/evaluations",
        "/v1/job/{job_id}/versions",
    ):
        assert path in doc["paths"]


async def test_scale_and_stop(api: tuple[httpx.AsyncClient, Server]) -> None:
    client, _ = api
    await client.post("/v1/jobs", json={"job": JOB})
    r = await client.post("/v1/job/web/scale", json={"group": "g", "count": 5})
    assert r.status_code == 200 and r.json()["version"] == 1
    r = await client.post("/v1/job/web/scale", json={"group": "nope", "count": 5})
    assert r.status_code == 404 and "no group" in r.json()["error"]
    r = await client.delete("/v1/job/web")
    assert r.status_code == 200
    job = (await client.get("/v1/job/web")).json()
    assert job["stop"] is True and job["version"] == 2
    await client.delete("/v1/job/web", params={"purge": "true"})
    assert (await client.get("/v1/job/web")).status_code == 404
