"""Dispatching a parameterized job needs ``dispatch-job``; forcing a periodic launch
needs ``submit-job`` (docs/periodic.md)."""

from __future__ import annotations

from tests.acl.conftest import Secure

TEMPLATES = [
    {
        "job": "work",
        "type": "batch",
        "parameterized": {},
        "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}},
    },
    {
        "job": "tick",
        "type": "batch",
        "periodic": {"cron": "0 0 1 1 *"},
        "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}},
    },
]


async def test_dispatch_needs_dispatch_job_and_force_needs_submit_job(secure: Secure) -> None:
    admin = secure.http(secure.management)
    for job in TEMPLATES:
        r = await admin.post("/v1/jobs", json={"job": job})
        assert r.status_code == 200, r.text
    reader = secure.http(await secure.token("namespaces: {default: {policy: read}}", "reader"))
    dispatcher = secure.http(
        await secure.token(
            "namespaces: {default: {capabilities: [read-job, dispatch-job]}}", "dispatcher"
        )
    )
    submitter = secure.http(
        await secure.token("namespaces: {default: {capabilities: [submit-job]}}", "submitter")
    )

    r = await reader.post("/v1/job/work/dispatch", json={})
    assert r.status_code == 403 and "dispatch-job" in r.text
    r = await submitter.post("/v1/job/work/dispatch", json={})
    assert r.status_code == 403 and "dispatch-job" in r.text
    r = await dispatcher.post("/v1/job/work/dispatch", json={})
    assert r.status_code == 200, r.text
    child = r.json()["dispatched_job_id"]

    r = await dispatcher.post("/v1/job/tick/periodic/force")
    assert r.status_code == 403 and "submit-job" in r.text
    r = await submitter.post("/v1/job/tick/periodic/force")
    assert r.status_code == 200, r.text

    r = await reader.get("/v1/job/work/children")
    assert r.status_code == 200 and [c["id"] for c in r.json()] == [child]
    r = await secure.http().get("/v1/job/work/children")
    assert r.status_code == 401
