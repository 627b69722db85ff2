"""The audit log: what it records of a write, what it leaves out, its file and its rotation."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from podium.server.api import create_app
from podium.server.audit import IDENTITY_KEY, AuditLog, AuditMiddleware, outcome
from podium.server.core import Server, ServerConfig
from podium.state import StateStore

JOB: dict[str, Any] = {
    "job": "web",
    "groups": {"g": {"count": 1, "tasks": {"t": {"driver": "mock", "config": {}}}}},
}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def audited(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    server = Server(StateStore())
    await server.start()
    log = AuditLog(tmp_path / "audit" / "audit.log")
    transport = httpx.ASGITransport(app=create_app(server, audit=log), client=("10.1.2.3", 4567))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client, log.path
    log.close()
    await server.stop()


async def test_a_write_is_recorded_with_its_outcome_and_a_read_is_not(
    audited: tuple[httpx.AsyncClient, Path],
) -> None:
    client, path = audited
    assert (await client.post("/v1/jobs", json={"job": JOB})).status_code == 200
    assert (await client.get("/v1/jobs")).status_code == 200
    assert (await client.post("/v1/jobs", json={"nojob": 1})).status_code == 400
    assert (await client.delete("/v1/job/nosuch")).status_code == 404
    written = lines(path)
    assert [(e["method"], e["path"], e["status"], e["outcome"]) for e in written] == [
        ("POST", "/v1/jobs", 200, "allowed"),
        ("POST", "/v1/jobs", 400, "rejected"),
        ("DELETE", "/v1/job/nosuch", 404, "rejected"),
    ]
    first = written[0]
    assert first["remote"] == "10.1.2.3:4567"
    assert first["time"].endswith("Z") and first["duration_ms"] >= 0
    assert "identity" not in first  # nobody was identified: no ACL in front of it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_agents_protocol_is_recorded_only_when_it_fails(
    audited: tuple[httpx.AsyncClient, Path],
) -> None:
    client, path = audited
    node = {
        "id": "6f1c1f4e-0000-4000-8000-000000000001",
        "name": "n1",
        "resources": {"cpu": 1000, "memory": 1024},
    }
    registered = await client.put("/v1/node/register", json=node)
    assert registered.status_code == 200
    mine = {"X-Podium-Node-Secret": registered.json()["node_secret"]}
    beat = f"/v1/node/{node['id']}/heartbeat"
    assert (await client.put(beat, headers=mine)).status_code == 200
    ok = await client.post(
        f"/v1/client/node/{node['id']}/allocations",
        json={"updates": [], "have": []},
        headers=mine,
    )
    assert ok.status_code == 200, ok.text
    # a heartbeat without the node's secret is refused, and that is recorded, with the node
    assert (await client.put(beat)).status_code == 401
    written = lines(path)
    assert [(e["method"], e["path"], e["outcome"]) for e in written] == [
        ("PUT", "/v1/node/register", "allowed"),
        ("PUT", beat, "refused"),
    ]


async def test_with_acls_the_token_is_recorded_never_its_secret(tmp_path: Path) -> None:
    server = Server(StateStore(), ServerConfig(acl=True))
    await server.start()
    log = AuditLog(tmp_path / "audit.log")
    transport = httpx.ASGITransport(app=create_app(server, audit=log))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        assert (await client.post("/v1/jobs", json={"job": JOB})).status_code == 401
        boot = await client.post("/v1/acl/bootstrap")
        token = boot.json()
        auth = {"X-Podium-Token": token["secret_id"]}
        assert (await client.post("/v1/jobs", json={"job": JOB}, headers=auth)).status_code == 200
        bad = {"X-Podium-Token": "not-a-token"}
        assert (await client.post("/v1/jobs", json={"job": JOB}, headers=bad)).status_code == 401
    log.close()
    await server.stop()
    anonymous, bootstrap, allowed, unknown = lines(log.path)
    assert anonymous["identity"] == {"token": "anonymous"} and anonymous["outcome"] == "refused"
    assert bootstrap["path"] == "/v1/acl/bootstrap" and bootstrap["outcome"] == "allowed"
    assert allowed["identity"]["accessor_id"] == token["accessor_id"]
    assert allowed["outcome"] == "allowed"
    assert unknown["identity"] == {"token": "unknown or expired"}
    assert token["secret_id"] not in log.path.read_text()


async def test_the_identity_the_edge_found_is_recorded(tmp_path: Path) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope[IDENTITY_KEY] = {"accessor_id": "a1b2", "name": "ci"}
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    log = AuditLog(tmp_path / "audit.log")
    wrapped: ASGIApp = AuditMiddleware(app, log)
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        await client.put("/v1/client/node/x/allocations")  # agent protocol, but refused
    log.close()
    (entry,) = lines(log.path)
    assert entry["identity"] == {"accessor_id": "a1b2", "name": "ci"}
    assert entry["outcome"] == "refused" and entry["status"] == 403


async def test_an_unanswered_write_is_an_error(tmp_path: Path) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    log = AuditLog(tmp_path / "audit.log")
    transport = httpx.ASGITransport(app=AuditMiddleware(app, log), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        await client.post("/v1/jobs")
    log.close()
    (entry,) = lines(log.path)
    assert entry["status"] is None and entry["outcome"] == "error"


def test_the_file_is_rotated_and_every_generation_stays_private(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=300, backups=2)
    for i in range(20):
        log.write({"n": i, "pad": "x" * 60})
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    for name in files:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    # the newest lines are in the current file, in order; older generations hold older ones
    current = [e["n"] for e in lines(tmp_path / "audit.log")]
    older = [e["n"] for e in lines(tmp_path / "audit.log.1")]
    assert current == sorted(current) and current[-1] == 19
    assert max(older) < min(current)


def test_an_existing_log_is_appended_to(tmp_path: Path) -> None:
    for n in (1, 2):
        log = AuditLog(tmp_path / "audit.log")
        log.write({"n": n})
        log.close()
    assert [e["n"] for e in lines(tmp_path / "audit.log")] == [1, 2]


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "allowed"),
        (204, "allowed"),
        (401, "refused"),
        (403, "refused"),
        (409, "rejected"),
        (500, "error"),
        (None, "error"),
    ],
)
def test_outcomes(status: int | None, verdict: str) -> None:
    assert outcome(status) == verdict
