"""Workload tokens at the API's edge, through the real app (ACLs on): a task's token reads
its own job's variables and its namespace's services, nothing else, and stops working
the moment its allocation stops.  The agent is a real one (mock driver) that gets the
tokens over the SDK, as across machines."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podium.models import Allocation
from podium.server import identity
from podium.server.api import create_app
from podium.server.audit import AuditLog
from podium.server.core import Server, ServerConfig
from podium.state import StateStore
from tests.acl.conftest import JOB, Secure

OTHER = {**JOB, "job": "other"}


@pytest.fixture
async def audited(tmp_path: Path) -> AsyncIterator[Secure]:
    """ACLs on, bootstrapped, with an audit log at ``tmp/audit.log``."""
    store = StateStore()
    server = Server(store, ServerConfig(heartbeat_ttl=2.0, acl=True, data_dir=str(tmp_path)))
    await server.start()
    audit = AuditLog(tmp_path / "audit.log")
    app = create_app(server, audit=audit)
    s = Secure(server, store, app, tmp_path, httpx.ASGITransport(app=app))
    try:
        r = await s.http().post("/v1/acl/bootstrap")
        s.management = r.json()["secret_id"]
        yield s
    finally:
        await s.close()
        await server.stop()
        audit.close()


async def running(s: Secure, job: str) -> Allocation:
    return await s.until(
        lambda: next((a for a in s.store.allocs_by_job(job) if a.client_status == "running"), None),
        what=f"{job} to run",
    )


async def stopped(s: Secure, alloc: Allocation) -> None:
    """Until the store says the allocation is to stop (the scheduler's answer to a stop)."""
    await s.until(
        lambda: (found := s.store.alloc(alloc.id)) is not None and found.terminal(),
        what="the allocation to stop",
    )


def token_file(s: Secure, alloc: Allocation, task: str = "t") -> Path:
    return Path(s.agents[0].data_dir, "allocs", alloc.id, task, "secrets", "podium_token")


async def put_var(s: Secure, path: str, namespace: str = "default") -> None:
    r = await s.http(s.management).put(
        f"/v1/var/{path}", params={"namespace": namespace}, json={"items": {"v": path}}
    )
    assert r.status_code == 200, r.text


async def test_a_workload_token_reads_its_jobs_variables_and_nothing_else(audited: Secure) -> None:
    s = audited
    await s.add_agent(s.management)
    admin = s.http(s.management)
    assert (await admin.put("/v1/namespace/team-a", json={})).status_code == 200
    for path in ("jobs/default/web/cfg", "jobs/default/other/cfg", "app/shared"):
        await put_var(s, path)
    await put_var(s, "jobs/team-a/web/cfg", "team-a")
    assert (await admin.post("/v1/jobs", json={"job": JOB})).status_code == 200
    alloc = await running(s, "web")

    # the task's token is in its secrets dir (0700), readable by its owner alone (0600),
    # and the runner put the same one in the task's environment
    path = token_file(s, alloc)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text()
    assert token.startswith("pwi1.")
    env = s.agents[0].runners[alloc.id].build_env("t")
    assert env["PODIUM_TOKEN"] == token and env["PODIUM_ADDR"] == "http://podium"

    task = s.http(token)
    r = await task.get("/v1/var/jobs/default/web/cfg")
    assert r.status_code == 200 and r.json()["items"] == {"v": "jobs/default/web/cfg"}
    listed = await task.get("/v1/vars")
    assert listed.status_code == 200
    assert [v["path"] for v in listed.json()] == ["jobs/default/web/cfg"]
    assert (await task.get("/v1/services")).status_code == 200
    assert (await task.get("/v1/service/db")).status_code == 200

    refused = {
        "another job's variable": await task.get("/v1/var/jobs/default/other/cfg"),
        "a variable outside jobs/": await task.get("/v1/var/app/shared"),
        "another namespace": await task.get(
            "/v1/var/jobs/team-a/web/cfg", params={"namespace": "team-a"}
        ),
        "another namespace's services": await task.get(
            "/v1/services", params={"namespace": "team-a"}
        ),
        "a write": await task.put("/v1/var/jobs/default/web/cfg", json={"items": {"v": "x"}}),
        "a delete": await task.delete("/v1/var/jobs/default/web/cfg"),
        "jobs": await task.get("/v1/jobs"),
        "its own job": await task.get("/v1/job/web"),
        "logs": await task.get(f"/v1/allocation/{alloc.id}/logs", params={"task": "t"}),
        "nodes": await task.get("/v1/nodes"),
        "namespaces": await task.get("/v1/namespaces"),
        "a submit": await task.post("/v1/jobs", json={"job": OTHER}),
    }
    for what, answer in refused.items():
        assert answer.status_code == 403, (what, answer.status_code, answer.text)
        assert "workload token of task t" in answer.json()["error"], what
    assert (await admin.get("/v1/var/jobs/default/web/cfg")).json()["items"]["v"] == (
        "jobs/default/web/cfg"
    )  # the refused write changed nothing

    # the audit log names the workload, never its token
    lines = [json.loads(line) for line in (s.tmp / "audit.log").read_text().splitlines()]
    mine = [e for e in lines if e.get("identity", {}).get("alloc_id") == alloc.id]
    assert mine and mine[0]["identity"] == {
        "alloc_id": alloc.id,
        "task": "t",
        "job_id": "web",
        "namespace": "default",
    }
    assert mine[0]["outcome"] == "refused"
    assert token not in (s.tmp / "audit.log").read_text()

    # stopping the job revokes the token at once, whatever its expiry
    assert (await admin.delete("/v1/job/web")).status_code == 200
    await stopped(s, alloc)
    r = await task.get("/v1/var/jobs/default/web/cfg")
    assert r.status_code == 401
    assert "has stopped" in r.json()["error"], r.text


async def test_forged_expired_and_foreign_tokens_are_401(audited: Secure) -> None:
    s = audited
    await s.add_agent(s.management)
    await put_var(s, "jobs/default/web/cfg")
    assert (await s.http(s.management).post("/v1/jobs", json={"job": JOB})).status_code == 200
    alloc = await running(s, "web")
    token = token_file(s, alloc).read_text()
    head, claims, mac = token.rsplit(".", 2)
    forged = f"{head}.{claims}.{mac[:-2]}AA"
    r = await s.http(forged).get("/v1/var/jobs/default/web/cfg")
    assert r.status_code == 401 and "signature" in r.json()["error"]

    def make(**kw: object) -> str:
        args = {
            "alloc_id": alloc.id,
            "task": "t",
            "job_id": "web",
            "namespace": "default",
            "node_id": alloc.node_id,
            "now": time.time(),
            "ttl": 60.0,
            **kw,
        }
        return identity.issue(s.server.keyring, **args)  # type: ignore[arg-type]

    cases = {
        "expired": make(now=time.time() - 120),
        "not on the node it names": make(node_id="elsewhere"),
        "belongs to another job": make(job_id="other"),
        "no longer exists": make(alloc_id="00000000-0000-0000-0000-000000000000"),
    }
    for why, bad in cases.items():
        r = await s.http(bad).get("/v1/var/jobs/default/web/cfg")
        assert r.status_code == 401 and why in r.json()["error"], (why, r.text)
    # a well-formed one of this allocation works (the checks above are what refused)
    assert (await s.http(make()).get("/v1/var/jobs/default/web/cfg")).status_code == 200


async def test_a_node_gets_tokens_only_for_its_own_live_allocations(audited: Secure) -> None:
    s = audited
    await s.add_agent(s.management)
    assert (await s.http(s.management).post("/v1/jobs", json={"job": JOB})).status_code == 200
    alloc = await running(s, "web")
    # a second node, registered by hand: its secret is its only proof
    node = s.agents[0].node().model_copy(update={"id": "node-2", "name": "node-2"})
    r = await s.http(s.management).put("/v1/node/register", json=node.model_dump(mode="json"))
    assert r.status_code == 200, r.text
    secret2 = r.json()["node_secret"]
    node2 = s.http(**{"X-Podium-Node-Secret": secret2})
    before = s.store.index
    r = await node2.post(
        "/v1/client/node/node-2/identities", json={"allocations": {alloc.id: ["t"]}}
    )
    assert r.status_code == 403 and "not placed on node node-2" in r.json()["error"], r.text
    assert s.store.index == before
    # nor may it ask as the first node
    r = await node2.post(
        f"/v1/client/node/{alloc.node_id}/identities", json={"allocations": {alloc.id: ["t"]}}
    )
    assert r.status_code == 403
    # the right node gets one per task; a task its job lacks, or a stopped allocation, none
    node1 = s.http(**{"X-Podium-Node-Secret": s.agents[0].client.node_secrets[alloc.node_id]})
    url = f"/v1/client/node/{alloc.node_id}/identities"
    r = await node1.post(url, json={"allocations": {alloc.id: ["t"]}})
    assert r.status_code == 200 and [i["task"] for i in r.json()["identities"]] == ["t"]
    assert r.json()["ttl"] == identity.DEFAULT_TTL
    r = await node1.post(url, json={"allocations": {alloc.id: ["nope"]}})
    assert r.json()["identities"] == [] and "no task 'nope'" in r.json()["refused"][alloc.id]
    assert (await s.http(s.management).delete("/v1/job/web")).status_code == 200
    await stopped(s, alloc)
    r = await node1.post(url, json={"allocations": {alloc.id: ["t"]}})
    assert r.json()["identities"] == [] and "has stopped" in r.json()["refused"][alloc.id]


async def test_without_acl_tasks_still_get_tokens(open_server: Secure) -> None:
    s = open_server
    await s.add_agent(None)
    assert (await s.http().post("/v1/jobs", json={"job": JOB})).status_code == 200
    alloc = await running(s, "web")
    token = token_file(s, alloc).read_text()
    assert token.startswith("pwi1.")
    # the edge checks nothing without ACLs: any path reads as before
    await s.http().put("/v1/var/app/x", json={"items": {"a": "b"}})
    assert (await s.http(token).get("/v1/var/app/x")).status_code == 200
    # node identity still applies to the issuing route
    r = await s.http().post(
        f"/v1/client/node/{alloc.node_id}/identities", json={"allocations": {alloc.id: ["t"]}}
    )
    assert r.status_code == 401
    assert os.path.exists(token_file(s, alloc))
