"""The edge with ACLs on: every route needs what its rule says, and nothing more leaks."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from podium.models import Allocation, Job, Node, NodeResources, ServiceRegistration
from podium.server.api import create_app
from tests.acl.conftest import JOB, Secure

READ_ONLY = "namespaces: {default: {policy: read}}"


async def run_web(s: Secure) -> Allocation:
    """Register JOB (management token) on one agent and wait for its allocation to run."""
    await s.add_agent(s.management)
    r = await s.http(s.management).post("/v1/jobs", json={"job": JOB})
    assert r.status_code == 200, r.text
    return await s.until(
        lambda: next(
            (a for a in s.store.allocs_by_job("web") if a.client_status == "running"), None
        ),
        what="web to run",
    )


async def test_anonymous_submit_is_refused_and_stores_nothing(secure: Secure) -> None:
    before = secure.store.index
    r = await secure.http().post("/v1/jobs", json={"job": JOB})
    assert r.status_code == 401
    assert "submit-job" in r.json()["error"] and "'default'" in r.json()["error"]
    assert r.json()["missing"] == "capability 'submit-job' in namespace 'default'"
    assert secure.store.jobs() == [] and secure.store.index == before
    # blocking queries too: refused at once, not after the wait
    r = await secure.http().get("/v1/jobs", params={"index": 1, "wait": "5m"})
    assert r.status_code == 401
    for path in ("/v1/allocations", "/v1/nodes", "/v1/vars", "/v1/services", "/v1/status"):
        assert (await secure.http().get(path)).status_code == 401, path


async def test_bad_tokens_are_401(secure: Secure) -> None:
    r = await secure.http("not-a-token").get("/v1/jobs")
    assert r.status_code == 401 and "not known" in r.json()["error"]
    r = await secure.http(Authorization="Bearer nope").get("/v1/jobs")
    assert r.status_code == 401
    admin = secure.http(secure.management)
    r = await admin.post("/v1/acl/token", json={"type": "management", "ttl": "1h"})
    short = r.json()["secret_id"]
    assert (await secure.http(short).get("/v1/jobs")).status_code == 200
    secure.server.trust.clock = lambda: time.time() + 7200
    r = await secure.http(short).get("/v1/jobs")
    assert r.status_code == 401 and "expired" in r.json()["error"]
    # the management token has no expiry: still good
    assert (await admin.get("/v1/jobs")).status_code == 200


async def test_bearer_header_works_too(secure: Secure) -> None:
    r = await secure.http(Authorization=f"Bearer {secure.management}").get("/v1/jobs")
    assert r.status_code == 200


async def test_a_read_only_token_reads_but_changes_nothing(secure: Secure) -> None:
    alloc = await run_web(secure)
    reader = secure.http(await secure.token(READ_ONLY, "reader"))
    r = await reader.get("/v1/jobs")
    assert r.status_code == 200 and [j["id"] for j in r.json()] == ["web"]
    assert (await reader.get("/v1/job/web")).status_code == 200
    assert (await reader.get("/v1/job/web/allocations")).status_code == 200
    assert (await reader.get(f"/v1/allocation/{alloc.id}")).status_code == 200
    job_before = secure.store.job("web")
    refusals = {
        "submit-job": await reader.post("/v1/jobs", json={"job": JOB}),
        "scale-job": await reader.post("/v1/job/web/scale", json={"group": "g", "count": 3}),
        "stop (submit-job)": await reader.delete("/v1/job/web"),
        "read-logs": await reader.get(f"/v1/allocation/{alloc.id}/logs"),
        "write var": await reader.put("/v1/var/app/x", json={"items": {"a": "b"}}),
        "node write": await reader.put(
            f"/v1/node/{alloc.node_id}/eligibility", json={"eligible": False}
        ),
    }
    for what, r in refusals.items():
        assert r.status_code == 403, (what, r.text)
        assert "token reader may not" in r.json()["error"], what
    assert "lacks capability 'read-logs'" in refusals["read-logs"].json()["error"]
    assert "lacks capability 'scale-job'" in refusals["scale-job"].json()["error"]
    assert secure.store.job("web") == job_before, "a refused request changed the job"
    assert secure.store.variable("app/x") is None


async def test_a_team_sees_nothing_of_another_team(secure: Secure) -> None:
    alloc = await run_web(secure)
    job = secure.store.job("web")
    assert job is not None
    # the copies live on a node of their own (no agent), so no agent acts on them
    other = Node(id="other-node", name="other", resources=NodeResources(cpu=100, memory=100))
    assert (await secure.sdk(secure.management).register_node(other))["node_secret"]
    # the same job and allocation in two other namespaces (the job file has no namespace
    # field yet: written to the store as the namespaces work will register them)
    txn = secure.store.txn()
    for team in ("team-a", "team-b"):
        txn.put_job(job.model_copy(update={"namespace": team, "id": f"{team}-web"}))
        txn.put_alloc(
            alloc.model_copy(
                update={
                    "namespace": team,
                    "job_id": f"{team}-web",
                    "id": f"{team}-alloc",
                    "node_id": other.id,
                }
            )
        )
        txn.put_service(
            ServiceRegistration(
                id=f"{team}-svc",
                service_name=f"{team}-db",
                namespace=team,
                job_id=f"{team}-web",
                group="g",
                alloc_id=f"{team}-alloc",
                node_id=other.id,
                address="127.0.0.1",
            )
        )
    secure.store.commit(txn)
    team_a = secure.http(await secure.token("namespaces: {team-a: {policy: write}}", "team-a"))
    jobs = (await team_a.get("/v1/jobs", params={"namespace": "*"})).json()
    assert [j["id"] for j in jobs] == ["team-a-web"]
    allocs = (await team_a.get("/v1/allocations", params={"namespace": "*"})).json()
    assert [a["id"] for a in allocs] == ["team-a-alloc"]
    services = (await team_a.get("/v1/services", params={"namespace": "*"})).json()
    assert [s["name"] for s in services] == ["team-a-db"]
    evals = (await team_a.get("/v1/evaluations", params={"namespace": "*"})).json()
    assert all(e["namespace"] == "team-a" for e in evals)
    deps = (await team_a.get("/v1/deployments", params={"namespace": "*"})).json()
    assert all(d["namespace"] == "team-a" for d in deps)
    for path in (
        "/v1/jobs",
        "/v1/job/team-b-web",
        "/v1/allocation/team-b-alloc",
        "/v1/allocation/team-b-alloc/logs",
        "/v1/var/app/x",
        "/v1/services",
        "/v1/service/team-b-db",
    ):
        r = await team_a.get(path, params={"namespace": "team-b"})
        assert r.status_code == 403 and "namespace 'team-b'" in r.json()["error"], path
    # asked in its own namespace, an object of another one is not found
    for path in ("/v1/allocation/team-b-alloc", "/v1/allocation/team-b-alloc/logs"):
        r = await team_a.get(path, params={"namespace": "team-a"})
        assert r.status_code == 404, (path, r.text)
    r = await team_a.post("/v1/jobs", params={"namespace": "team-b"}, json={"job": JOB})
    assert r.status_code == 403
    # nor the default namespace, which it was not given either
    assert (await team_a.get("/v1/jobs")).status_code == 403
    # node listings show the node, but not the other teams' allocations on it
    node_reader = secure.http(
        await secure.token("node: read\nnamespaces: {team-a: {policy: read}}", "nodes")
    )
    r = await node_reader.get(f"/v1/node/{other.id}/allocations")
    assert [a["id"] for a in r.json()] == ["team-a-alloc"]


async def test_variables_by_path(secure: Secure) -> None:
    admin = secure.http(secure.management)
    for path in ("app/config", "app/db", "secret/root"):
        assert (await admin.put(f"/v1/var/{path}", json={"items": {"k": "v"}})).status_code == 200
    rules = 'namespaces: {default: {variables: {"app/*": [read, list]}}}'
    app_reader = secure.http(await secure.token(rules, "app"))
    listed = (await app_reader.get("/v1/vars")).json()
    assert [v["path"] for v in listed] == ["app/config", "app/db"]
    assert (await app_reader.get("/v1/var/app/db")).status_code == 200
    r = await app_reader.get("/v1/var/secret/root")
    assert r.status_code == 403 and "read" in r.json()["error"]
    assert (await app_reader.put("/v1/var/app/db", json={"items": {"k": "w"}})).status_code == 403
    assert (await app_reader.delete("/v1/var/app/db")).status_code == 403


async def test_the_anonymous_policy_applies_without_a_token(secure: Secure) -> None:
    admin = secure.http(secure.management)
    r = await admin.put("/v1/acl/policy/anonymous", json={"rules": READ_ONLY})
    assert r.status_code == 200
    assert (await secure.http().get("/v1/jobs")).status_code == 200
    r = await secure.http().post("/v1/jobs", json={"job": JOB})
    assert r.status_code == 401 and "anonymous" in r.json()["error"]


async def test_bootstrap_once_then_reset_file(secure: Secure) -> None:
    r = await secure.http().post("/v1/acl/bootstrap")
    assert r.status_code == 409 and "acl-bootstrap-reset" in r.json()["error"]
    done = secure.store.acl_bootstrap()
    assert done is not None
    (secure.tmp / "acl-bootstrap-reset").write_text(f"{done.create_index}\n")
    r = await secure.http().post("/v1/acl/bootstrap")
    assert r.status_code == 200 and r.json()["type"] == "management"
    assert not (secure.tmp / "acl-bootstrap-reset").exists(), "a reset file works once"
    assert (await secure.http().post("/v1/acl/bootstrap")).status_code == 409


async def test_secrets_are_shown_once_and_stored_hashed(secure: Secure) -> None:
    admin = secure.http(secure.management)
    secret = await secure.token(READ_ONLY, "reader")
    listed = (await admin.get("/v1/acl/tokens")).text
    assert secret not in listed and secure.management not in listed and "secret" not in listed
    stored = [t.model_dump_json() for t in secure.store.acl_tokens()]
    assert not any(secret in row or secure.management in row for row in stored)
    me = await secure.http(secret).get("/v1/acl/token/self")
    assert me.status_code == 200 and me.json()["name"] == "reader"
    assert "secret_id" not in me.json()
    # only a management token manages tokens and policies
    r = await secure.http(secret).get("/v1/acl/tokens")
    assert r.status_code == 403 and "management token" in r.json()["error"]
    # a deleted token stops working at once
    accessor = me.json()["accessor_id"]
    assert (await admin.delete(f"/v1/acl/token/{accessor}")).status_code == 200
    assert (await secure.http(secret).get("/v1/jobs")).status_code == 401


async def test_a_bad_policy_says_where_and_stores_nothing(secure: Secure) -> None:
    admin = secure.http(secure.management)
    r = await admin.put(
        "/v1/acl/policy/bad", json={"rules": "namespaces:\n  default: {policy: reed}\n"}
    )
    assert r.status_code == 400
    assert "rules:2" in r.json()["error"] and "reed" in r.json()["error"]
    assert r.json()["issues"][0]["line"] == 2
    assert secure.store.acl_policy("bad") is None
    r = await admin.post("/v1/acl/token", json={"name": "x", "policies": ["nope"]})
    assert r.status_code == 400 and "no such ACL policy: nope" in r.json()["error"]


async def test_an_unclassified_route_is_refused(secure: Secure) -> None:
    app = create_app(secure.server)

    @app.get("/v1/unclassified")
    async def leak() -> JSONResponse:
        return JSONResponse({"secret": "data"})

    router = APIRouter(prefix="/v1/more")

    @router.get("/data")
    async def more() -> JSONResponse:
        return JSONResponse({"secret": "data"})

    app.include_router(router)

    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://podium"
    ) as http:
        for path in ("/v1/unclassified", "/v1/more/data"):
            r = await http.get(path, headers={"X-Podium-Token": secure.management})
            assert r.status_code == 403 and "not classified" in r.json()["error"], path


async def test_without_acl_nothing_changes(open_server: Secure) -> None:
    r = await open_server.http().post("/v1/jobs", json={"job": JOB})
    assert r.status_code == 200
    assert (await open_server.http().get("/v1/jobs")).status_code == 200
    assert isinstance(open_server.store.job("web"), Job)


async def test_a_team_reads_and_lists_only_its_own_namespaces_variables(secure: Secure) -> None:
    admin = secure.http(secure.management)
    for team in ("team-a", "team-b"):
        assert (await admin.put(f"/v1/namespace/{team}")).status_code == 200
        r = await admin.put(
            "/v1/var/app/db", params={"namespace": team}, json={"items": {"password": team}}
        )
        assert r.status_code == 200, r.text
    policy = 'namespaces: {team-a: {variables: {"app/*": [read, list]}}}'
    team_a = secure.http(await secure.token(policy, "team-a-vars"))
    own = await team_a.get("/v1/var/app/db", params={"namespace": "team-a"})
    assert own.status_code == 200 and own.json()["items"] == {"password": "team-a"}
    theirs = await team_a.get("/v1/var/app/db", params={"namespace": "team-b"})
    assert theirs.status_code == 403 and "team-b" in theirs.json()["error"]
    listed = (await team_a.get("/v1/vars", params={"namespace": "*"})).json()
    assert [(v["namespace"], v["path"]) for v in listed] == [("team-a", "app/db")]
    # and the namespaces it may see are the ones it is given something in
    names = [n["name"] for n in (await team_a.get("/v1/namespaces")).json()]
    assert "team-b" not in names
    assert (await team_a.put("/v1/namespace/team-c")).status_code == 403
