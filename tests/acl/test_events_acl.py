"""The event stream with ACLs on: a token sees the events of what it may read, and
nothing else (another namespace's jobs, nodes without ``node: read``, variables outside its
paths); a caller with no token and no anonymous policy is refused."""

from __future__ import annotations

import json
from typing import Any

import httpx

from podium.models import JobSpec

from ..serving import served
from .conftest import JOB, Secure


async def _events(address: str, token: str | None, **params: Any) -> list[Any]:
    """The events a token is sent after index 0, read until the first heartbeat (the
    stream had nothing more to say for 200 ms)."""
    headers = {"X-Podium-Token": token} if token else {}
    out: list[Any] = []
    async with (
        httpx.AsyncClient(base_url=address, headers=headers, timeout=20) as http,
        http.stream(
            "GET", "/v1/event/stream", params={"index": 0, "heartbeat": "200ms", **params}
        ) as r,
    ):
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            data = json.loads(line)
            if not data:
                break  # idle: everything up to now was sent
            out.append(data)
    return out


async def test_each_token_is_sent_only_the_events_it_may_read(secure: Secure) -> None:
    admin = secure.http(secure.management)
    for ns in ("team-a", "team-b"):
        assert (await admin.put(f"/v1/namespace/{ns}", json={})).status_code == 200
        spec = JobSpec.model_validate({**JOB, "job": f"{ns}-web", "namespace": ns})
        r = await admin.post(
            "/v1/jobs", params={"namespace": ns}, json={"job": spec.model_dump(mode="json")}
        )
        assert r.status_code == 200, r.text
    for path in ("app/config", "secret/root"):
        assert (await admin.put(f"/v1/var/{path}", json={"items": {"k": "v"}})).status_code == 200
    team_a = await secure.token(
        'node: read\nnamespaces: {team-a: {policy: read}, default: {variables: {"app/*": [list]}}}',
        "team-a",
    )
    no_nodes = await secure.token("namespaces: {team-b: {policy: read}}", "team-b")

    async with served(secure.app) as address:
        seen = await _events(address, team_a, namespace="*")
        jobs = {(e["namespace"], e["key"]) for e in seen if e["topic"] == "Job"}
        assert jobs == {("team-a", "team-a-web")}
        assert {e["namespace"] for e in seen if e["topic"] == "Evaluation"} == {"team-a"}
        assert {e["key"] for e in seen if e["topic"] == "Variable"} == {"app/config"}
        everything = await _events(address, secure.management, namespace="*")
        assert {e["key"] for e in everything if e["topic"] == "Variable"} == {
            "app/config",
            "secret/root",
        }
        assert {e["key"] for e in everything if e["topic"] == "Job"} == {
            "team-a-web",
            "team-b-web",
        }

        await secure.add_agent(secure.management)
        nodes = [e for e in await _events(address, team_a) if e["topic"] == "Node"]
        assert nodes and nodes[0]["type"] == "NodeRegistered"
        blind = await _events(address, no_nodes, namespace="*")
        assert not [e for e in blind if e["topic"] in ("Node", "Variable")]
        assert {e["key"] for e in blind if e["topic"] == "Job"} == {"team-b-web"}

        async with httpx.AsyncClient(base_url=address) as http:
            r = await http.get("/v1/event/stream")
            assert r.status_code in (401, 403), r.text
            r = await http.get("/v1/event/stream", headers={"X-Podium-Token": "nonsense"})
            assert r.status_code in (401, 403), r.text
