"""Namespaces over the HTTP API, on an in-process server: the routes, quotas as admission
(a refusal names the quota, the figure asked and the figure left, and stores nothing),
one job id in two namespaces, lookups within a namespace, and ``*`` on listings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from podium.client import AsyncClient
from podium.errors import APIError
from podium.models import JobSpec, Node, NodeResources
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore

API = tuple[httpx.AsyncClient, Server]


def job(name: str = "web", count: int = 2, memory: int = 512, cpu: int = 100) -> dict[str, Any]:
    task = {
        "driver": "mock",
        "config": {"run_for": "1h"},
        "resources": {"cpu": cpu, "memory": memory},
    }
    return {"job": name, "groups": {"g": {"count": count, "tasks": {"t": task}}}}


@pytest.fixture
async def api() -> AsyncIterator[API]:
    server = Server(StateStore())  # not started: evaluations stay queued, nothing is placed
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client, server


async def put_ns(client: httpx.AsyncClient, name: str, **body: Any) -> httpx.Response:
    r = await client.put(f"/v1/namespace/{name}", json=body)
    assert r.status_code == 200, r.text
    return r


async def test_namespace_routes(api: API) -> None:
    client, server = api
    listed = (await client.get("/v1/namespaces")).json()
    assert [n["name"] for n in listed] == ["default"]
    r = await put_ns(client, "team-a", description="team A", quota={"cpu": 1000})
    body = r.json()
    assert body["name"] == "team-a" and body["quota"] == {
        "cpu": 1000,
        "memory": None,
        "count": None,
    }
    assert body["usage"] == {"cpu": 0, "memory": 0, "count": 0} and body["jobs"] == 0
    # a PUT that leaves the quota out keeps it
    body = (await put_ns(client, "team-a", description="A")).json()
    assert body["description"] == "A" and body["quota"]["cpu"] == 1000
    r = await client.post(
        "/v1/jobs", params={"namespace": "team-a"}, json={"job": job(count=3, cpu=200)}
    )
    assert r.status_code == 200, r.text
    info = (await client.get("/v1/namespace/team-a")).json()
    assert info["desired"] == {"cpu": 600, "memory": 1536, "count": 3} and info["jobs"] == 1
    assert [n["name"] for n in (await client.get("/v1/namespaces")).json()] == ["default", "team-a"]

    bad = await client.put("/v1/namespace/Team_A", json={})
    assert bad.status_code == 400 and "not a valid namespace name" in bad.json()["error"]
    bad = await client.put("/v1/namespace/team-b", json={"quota": {"disk": 1}})
    assert bad.status_code == 400 and "quota.disk" in bad.json()["error"]
    assert server.store.namespace("team-b") is None
    gone = await client.get("/v1/namespace/nope")
    assert gone.status_code == 404
    r = await client.delete("/v1/namespace/default")
    assert r.status_code == 400 and "cannot be deleted" in r.json()["error"]


async def test_a_missing_namespace_is_refused_with_a_hint(api: API) -> None:
    client, server = api
    r = await client.post("/v1/jobs", params={"namespace": "team-x"}, json={"job": job()})
    assert r.status_code == 404
    assert "podium namespace apply team-x" in r.json()["error"]
    assert server.store.jobs() == [] and server.store.evaluations() == []
    r = await client.put(
        "/v1/var/app/x", params={"namespace": "team-x"}, json={"items": {"a": "b"}}
    )
    assert r.status_code == 404 and server.store.variables("", "team-x") == []


async def test_file_and_request_namespaces(api: API) -> None:
    client, server = api
    await put_ns(client, "team-a")
    # the request's namespace is the query's alone (default: default): a file naming
    # another one is refused, so an access check on the query sees where a job goes
    r = await client.post("/v1/jobs", json={"job": {**job(), "namespace": "team-a"}})
    assert r.status_code == 400
    assert "says namespace 'team-a' but the request names namespace 'default'" in r.json()["error"]
    assert server.store.jobs() == [] and server.store.evaluations() == []
    r = await client.post(
        "/v1/jobs", params={"namespace": "team-a"}, json={"job": {**job(), "namespace": "team-a"}}
    )
    assert r.status_code == 200, r.text
    stored = server.store.job("web", "team-a")
    assert stored is not None and stored.namespace == "team-a" and stored.spec.namespace is None
    assert server.store.job("web") is None


async def test_sdk_namespaces(api: API, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK sends a file's own namespace when neither the call nor the client names
    one; a client's namespace that disagrees with the file is refused, not overridden."""
    http, server = api
    await put_ns(http, "team-a")
    await put_ns(http, "team-b")
    transport = httpx.ASGITransport(app=create_app(server))
    spec = JobSpec.model_validate({**job(), "namespace": "team-a"})
    async with AsyncClient("http://podium", transport=transport) as sdk:
        assert sdk.namespace is None
        await sdk.register_job(spec)
        assert server.store.job("web", "team-a") is not None
        assert [j.namespace for j in await sdk.jobs(namespace="*")] == ["team-a"]
        assert await sdk.jobs() == []
    monkeypatch.setenv("PODIUM_NAMESPACE", "team-b")
    async with AsyncClient("http://podium", transport=transport) as sdk:
        assert sdk.namespace == "team-b"
        with pytest.raises(APIError, match="says namespace 'team-a'"):
            await sdk.register_job(spec)
        await sdk.register_job(JobSpec.model_validate(job("api")))
        assert [j.id for j in await sdk.jobs()] == ["api"]
        assert (await sdk.job("api")).namespace == "team-b"
        assert (await sdk.job("web", namespace="team-a")).namespace == "team-a"


async def test_quota_refusal_names_the_quota_and_figures_and_stores_nothing(api: API) -> None:
    client, server = api
    await put_ns(client, "team-a", quota={"memory": 2048, "count": 10})
    r = await client.post(
        "/v1/jobs", params={"namespace": "team-a"}, json={"job": job("db", 1, 1024)}
    )
    assert r.status_code == 200, r.text
    index, evals = server.store.index, len(server.store.evaluations())
    r = await client.post(
        "/v1/jobs", params={"namespace": "team-a"}, json={"job": job("web", 2, 1024)}
    )
    assert r.status_code == 409
    assert r.json()["error"].startswith(
        "namespace team-a quota memory: job web asks 2,048 MB more; 1,024 MB of 2,048 MB left"
    )
    assert server.store.job("web", "team-a") is None
    assert len(server.store.evaluations()) == evals and server.store.index == index
    # the same job in another namespace is not bound by team-a's quota
    r = await client.post("/v1/jobs", json={"job": job("web", 2, 1024)})
    assert r.status_code == 200


async def test_scale_past_quota_is_refused_and_down_is_not(api: API) -> None:
    client, server = api
    await put_ns(client, "team-a", quota={"count": 3})
    r = await client.post("/v1/jobs", params={"namespace": "team-a"}, json={"job": job("web", 2)})
    assert r.status_code == 200
    r = await client.post(
        "/v1/job/web/scale", params={"namespace": "team-a"}, json={"group": "g", "count": 4}
    )
    assert r.status_code == 409
    assert (
        "quota count: job web asks 2 instances more; 1 instances of 3 instances left"
        in r.json()["error"]
    )
    stored = server.store.job("web", "team-a")
    assert stored is not None and stored.spec.groups["g"].count == 2 and stored.version == 0
    r = await client.post(
        "/v1/job/web/scale", params={"namespace": "team-a"}, json={"group": "g", "count": 3}
    )
    assert r.status_code == 200, r.text
    # the quota lowered under what is asked: scaling down is still admitted
    await put_ns(client, "team-a", quota={"count": 1})
    r = await client.post(
        "/v1/job/web/scale", params={"namespace": "team-a"}, json={"group": "g", "count": 2}
    )
    assert r.status_code == 200, r.text
    # a revert to a bigger version is admission-checked too
    r = await client.post("/v1/job/web/revert", params={"namespace": "team-a"}, json={"version": 1})
    assert r.status_code == 409 and "quota count" in r.json()["error"]


async def test_system_jobs_count_one_instance_per_eligible_node(api: API) -> None:
    client, server = api
    for i in range(3):
        server.register_node(
            Node(id=f"n{i}", name=f"n{i}", resources=NodeResources(cpu=4000, memory=8192))
        )
    await put_ns(client, "team-a", quota={"count": 2})
    spec = {**job("sys", 1), "type": "system"}
    r = await client.post("/v1/jobs", params={"namespace": "team-a"}, json={"job": spec})
    assert r.status_code == 409 and "asks 3 instances more" in r.json()["error"]


async def test_one_job_id_in_two_namespaces_is_two_jobs(api: API) -> None:
    client, _ = api
    await put_ns(client, "team-a")
    assert (await client.post("/v1/jobs", json={"job": job(count=1)})).status_code == 200
    r = await client.post("/v1/jobs", params={"namespace": "team-a"}, json={"job": job(count=4)})
    assert r.status_code == 200
    a = (await client.get("/v1/job/web", params={"namespace": "team-a"})).json()
    d = (await client.get("/v1/job/web")).json()
    assert (a["namespace"], a["spec"]["groups"]["g"]["count"]) == ("team-a", 4)
    assert (d["namespace"], d["spec"]["groups"]["g"]["count"]) == ("default", 1)
    evals = (await client.get("/v1/evaluations", params={"namespace": "team-a"})).json()
    assert len(evals) == 1 and evals[0]["namespace"] == "team-a"
    # stopping one leaves the other
    r = await client.delete("/v1/job/web", params={"namespace": "team-a"})
    assert r.status_code == 200
    assert (await client.get("/v1/job/web", params={"namespace": "team-a"})).json()["stop"] is True
    assert (await client.get("/v1/job/web")).json()["stop"] is False
    versions = (await client.get("/v1/job/web/versions", params={"namespace": "team-a"})).json()
    assert [(v["namespace"], v["version"], v["stop"]) for v in versions] == [
        ("team-a", 1, True),
        ("team-a", 0, False),
    ]
    assert len((await client.get("/v1/job/web/versions")).json()) == 1


async def test_lookups_stay_in_their_namespace_and_star_lists_all(api: API) -> None:
    client, _ = api
    await put_ns(client, "team-a")
    await client.post("/v1/jobs", params={"namespace": "team-a"}, json={"job": job("webapp")})
    await client.post("/v1/jobs", json={"job": job("db")})
    # a prefix resolves within the namespace only
    assert (await client.get("/v1/job/web")).status_code == 404
    assert (await client.get("/v1/job/web", params={"namespace": "team-a"})).json()[
        "id"
    ] == "webapp"
    eval_id = (await client.get("/v1/evaluations", params={"namespace": "team-a"})).json()[0]["id"]
    assert (await client.get(f"/v1/evaluation/{eval_id}")).status_code == 404
    assert (
        await client.get(f"/v1/evaluation/{eval_id}", params={"namespace": "team-a"})
    ).status_code == 200

    listed = (await client.get("/v1/jobs")).json()
    assert [(j["namespace"], j["id"]) for j in listed] == [("default", "db")]
    listed = (await client.get("/v1/jobs", params={"namespace": "*"})).json()
    assert sorted((j["namespace"], j["id"]) for j in listed) == [
        ("default", "db"),
        ("team-a", "webapp"),
    ]
    evals = (await client.get("/v1/evaluations", params={"namespace": "*"})).json()
    assert {e["namespace"] for e in evals} == {"default", "team-a"}
    r = await client.get("/v1/job/webapp", params={"namespace": "*"})
    assert r.status_code == 400 and "for listings only" in r.json()["error"]
    r = await client.get("/v1/jobs", params={"namespace": "Bad Name"})
    assert r.status_code == 400 and "not a valid namespace name" in r.json()["error"]


async def test_delete_is_refused_while_jobs_or_variables_live(api: API) -> None:
    client, server = api
    await put_ns(client, "team-a")
    await client.post("/v1/jobs", params={"namespace": "team-a"}, json={"job": job("web")})
    r = await client.put(
        "/v1/var/app/cfg", params={"namespace": "team-a"}, json={"items": {"k": "v"}}
    )
    assert r.status_code == 200, r.text
    r = await client.delete("/v1/namespace/team-a")
    assert r.status_code == 409
    msg = r.json()["error"]
    assert "1 job(s) not stopped (web)" in msg and "1 variable(s) (app/cfg)" in msg
    assert server.store.namespace("team-a") is not None
    await client.delete("/v1/job/web", params={"namespace": "team-a"})
    await client.delete("/v1/var/app/cfg", params={"namespace": "team-a"})
    r = await client.delete("/v1/namespace/team-a")
    assert r.status_code == 200, r.text
    assert server.store.namespace("team-a") is None
    assert server.store.job("web", "team-a") is None  # its stopped job went with it
    assert server.store.job_versions("web", "team-a") == []
