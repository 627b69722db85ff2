"""Day-two operations behind the edge: alloc-lifecycle for restart, signal and stop,
read-logs for an allocation's files, operator: read for the live log (issue 16)."""

from __future__ import annotations

from podium.models import Allocation, DesiredStatus
from tests.acl.conftest import JOB, Secure
from tests.acl.test_edge import run_web

READ_ONLY = "namespaces: {default: {policy: read}}"
LIFECYCLE = "namespaces: {default: {capabilities: [read-job, alloc-lifecycle]}}"


async def test_lifecycle_needs_alloc_lifecycle(secure: Secure) -> None:
    alloc = await run_web(secure)
    reader = secure.http(await secure.token(READ_ONLY, "reader"))
    before = secure.store.alloc(alloc.id)
    refusals = {
        "restart": await reader.post(f"/v1/allocation/{alloc.id}/restart", json={}),
        "signal": await reader.post(f"/v1/allocation/{alloc.id}/signal", json={"signal": "HUP"}),
        "stop": await reader.post(f"/v1/allocation/{alloc.id}/stop"),
    }
    for what, r in refusals.items():
        assert r.status_code == 403, (what, r.text)
        assert "lacks capability 'alloc-lifecycle' in namespace 'default'" in r.json()["error"]
    assert secure.store.alloc(alloc.id) == before, "a refused stop changed the allocation"
    anonymous = secure.http()
    r = await anonymous.post(f"/v1/allocation/{alloc.id}/stop")
    assert r.status_code == 401

    # with the capability, the stop is a write: committed, and an evaluation replaces it
    operator = secure.http(await secure.token(LIFECYCLE, "operator"))
    r = await operator.post(f"/v1/allocation/{alloc.id}/stop")
    assert r.status_code == 200, r.text
    eval_id = r.json()["eval_id"]
    stopped = secure.store.alloc(alloc.id)
    assert stopped is not None and stopped.desired_status == DesiredStatus.STOP
    ev = secure.store.evaluation(eval_id)
    assert ev is not None and ev.triggered_by == "alloc-stop"
    await secure.until(
        lambda: any(
            a.previous_allocation == alloc.id and a.client_status == "running"
            for a in secure.store.allocs_by_job("web")
        ),
        what="the replacement to run",
    )
    # stopping it again is a conflict, said as such
    r = await operator.post(f"/v1/allocation/{alloc.id}/stop")
    assert r.status_code == 409 and "already stopped" in r.json()["error"]
    # and the lifecycle capability does not read files
    r = await operator.get(f"/v1/allocation/{alloc.id}/fs/ls")
    assert r.status_code == 403 and "read-logs" in r.json()["error"]


async def test_files_need_read_logs_and_monitor_needs_operator_read(secure: Secure) -> None:
    alloc = await run_web(secure)
    reader = secure.http(await secure.token(READ_ONLY, "reader"))
    for op in ("ls", "stat", "cat"):
        r = await reader.get(f"/v1/allocation/{alloc.id}/fs/{op}", params={"path": "alloc"})
        assert r.status_code == 403, (op, r.text)
        assert "lacks capability 'read-logs'" in r.json()["error"]
    r = await reader.get("/v1/agent/monitor")
    assert r.status_code == 403 and "operator: read" in r.json()["error"]
    assert (await secure.http().get("/v1/agent/monitor")).status_code == 401
    # a team's token reaches no other namespace's files (by namespace, at the edge)
    team = secure.http(await secure.token("namespaces: {team-a: {policy: write}}", "team"))
    r = await team.get(f"/v1/allocation/{alloc.id}/fs/ls")
    assert r.status_code == 403


async def test_bad_bodies_are_400_saying_what(open_server: Secure) -> None:
    alloc = await run_web_open(open_server)
    http = open_server.http()
    r = await http.post(f"/v1/allocation/{alloc.id}/signal", json={"signal": "SIGNOPE"})
    assert r.status_code == 400 and "SIGNOPE" in r.json()["error"]
    r = await http.post(f"/v1/allocation/{alloc.id}/signal", json={})
    assert r.status_code == 400 and "signal" in r.json()["error"]
    r = await http.post(f"/v1/allocation/{alloc.id}/restart", json={"task": "t", "all_tasks": True})
    assert r.status_code == 400 and "not both" in r.json()["error"]
    r = await http.post(f"/v1/allocation/{alloc.id}/restart", json={"task": "nope"})
    assert r.status_code == 404 and "no task 'nope'" in r.json()["error"]
    r = await http.post(f"/v1/allocation/{alloc.id}/restart", json={"bogus": 1})
    assert r.status_code == 400 and "bogus" in r.json()["error"]
    r = await http.get("/v1/agent/monitor", params={"log_level": "loud"})
    assert r.status_code == 400 and "log_level" in r.json()["error"]
    r = await http.get(f"/v1/allocation/{alloc.id}/fs/cat", params={"path": "x", "offset": -1})
    assert r.status_code == 400 and "offset" in r.json()["error"]
    r = await http.post("/v1/allocation/nope/stop")
    assert r.status_code == 404


async def run_web_open(s: Secure) -> Allocation:
    await s.add_agent(None)
    r = await s.http().post("/v1/jobs", json={"job": JOB})
    assert r.status_code == 200, r.text
    alloc: Allocation = await s.until(
        lambda: next(
            (a for a in s.store.allocs_by_job("web") if a.client_status == "running"), None
        ),
        what="web to run",
    )
    return alloc
