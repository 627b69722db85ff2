"""Node identity: a node's secret, from its first registration, is its proof (always on)."""

from __future__ import annotations

from typing import Any

from podium.models import AllocClientUpdate, ClientStatus, Node, NodeResources
from tests.acl.conftest import JOB, Secure

SECRET = "X-Podium-Node-Secret"


def node(node_id: str, **kw: Any) -> dict[str, Any]:
    body = Node(id=node_id, name=node_id, resources=NodeResources(cpu=500, memory=500))
    return {**body.model_dump(mode="json"), **kw}


async def test_reregistering_a_node_needs_its_secret(open_server: Secure) -> None:
    s = open_server
    http = s.http()
    r = await http.put("/v1/node/register", json=node("n1", http_addr="http://10.0.0.1:1"))
    assert r.status_code == 200
    secret = r.json()["node_secret"]
    assert secret and s.store.node_secret("n1") is not None
    assert secret not in s.store.node_secret("n1").model_dump_json()  # type: ignore[union-attr]
    # someone else claims n1, to have its log requests sent to them: refused
    hijack = node("n1", http_addr="http://6.6.6.6:1")
    for headers in ({}, {SECRET: "wrong"}):
        r = await s.http(**headers).put("/v1/node/register", json=hijack)
        assert r.status_code == 403 and "node secret" in r.json()["error"], r.text
    assert s.store.node("n1").http_addr == "http://10.0.0.1:1"  # type: ignore[union-attr]
    # the node itself, with its secret: fine, and no new secret is handed out
    r = await s.http(**{SECRET: secret}).put("/v1/node/register", json=node("n1"))
    assert r.status_code == 200 and "node_secret" not in r.json()


async def test_agent_routes_need_the_nodes_own_secret(open_server: Secure) -> None:
    s = open_server
    a = (await s.http().put("/v1/node/register", json=node("na"))).json()["node_secret"]
    b = (await s.http().put("/v1/node/register", json=node("nb"))).json()["node_secret"]
    routes = [
        ("PUT", "/v1/node/na/heartbeat", None),
        ("GET", "/v1/client/node/na/allocations", None),
        ("POST", "/v1/client/node/na/allocations", {"updates": []}),
    ]
    for method, path, body in routes:
        r = await s.http().request(method, path, json=body)
        assert r.status_code == 401 and SECRET in r.json()["error"], (path, r.text)
        r = await s.http(**{SECRET: b}).request(method, path, json=body)
        assert r.status_code == 403, (path, r.text)
        r = await s.http(**{SECRET: a}).request(method, path, json=body)
        assert r.status_code == 200, (path, r.text)
    r = await s.http().post("/v1/client/allocations", json={"node_id": "na", "updates": []})
    assert r.status_code == 401
    # reporting as another node with one's own secret
    r = await s.http(**{SECRET: b}).post(
        "/v1/client/allocations", json={"node_id": "na", "updates": []}
    )
    assert r.status_code == 403 and "reports only for itself" in r.json()["error"]


async def test_a_node_cannot_report_on_another_nodes_allocation(open_server: Secure) -> None:
    s = open_server
    await s.add_agent(None, "owner")
    assert (await s.http().post("/v1/jobs", json={"job": JOB})).status_code == 200
    alloc = await s.until(
        lambda: next(
            (a for a in s.store.allocs_by_job("web") if a.client_status == "running"), None
        ),
        what="web to run",
    )
    mallory = (await s.http().put("/v1/node/register", json=node("mallory"))).json()
    as_mallory = s.http(**{SECRET: mallory["node_secret"]})
    lie = AllocClientUpdate(id=alloc.id, client_status=ClientStatus.FAILED).model_dump(mode="json")
    before = s.store.alloc(alloc.id)
    r = await as_mallory.post(
        "/v1/client/allocations", json={"node_id": "mallory", "updates": [lie]}
    )
    assert r.status_code == 403 and f"placed on node {alloc.node_id}" in r.json()["error"]
    r = await as_mallory.post("/v1/client/node/mallory/allocations", json={"updates": [lie]})
    assert r.status_code == 403
    assert s.store.alloc(alloc.id) == before, "a refused report changed the allocation"


async def test_node_names_and_ids_are_printable(open_server: Secure) -> None:
    http = open_server.http()
    for body, field in (
        (node("n2", name="evil\x1b[2Jname"), "name"),
        (node("n2", name="two\nlines"), "name"),
        (node("a/b"), "id"),
        (node("n2", datacenter="dc\x07"), "datacenter"),
    ):
        r = await http.put("/v1/node/register", json=body)
        assert r.status_code == 400 and f"node {field}" in r.json()["error"], r.text
    assert open_server.store.nodes() == []


async def test_with_acl_a_new_node_needs_node_write(secure: Secure) -> None:
    reader = await secure.token("node: read", "reader")
    r = await secure.http(reader).put("/v1/node/register", json=node("n3"))
    assert r.status_code == 403 and "node: write" in r.json()["error"]
    r = await secure.http().put("/v1/node/register", json=node("n3"))
    assert r.status_code == 403
    assert secure.store.nodes() == []
    writer = await secure.token("node: write", "writer")
    r = await secure.http(writer).put("/v1/node/register", json=node("n3"))
    assert r.status_code == 200 and r.json()["node_secret"]


async def test_an_agent_keeps_its_secret_across_a_restart(secure: Secure) -> None:
    agent = await secure.add_agent(secure.management, "keeper")
    node_id = agent.node_id
    await agent.stop()
    secure.agents.remove(agent)
    # restarted without any token: the stored node secret is all it needs
    again = await secure.add_agent(None, "keeper")
    assert again.node_id == node_id
    beat = await again.client.heartbeat(node_id)
    assert beat["heartbeat_ttl"] > 0
    assert [n.id for n in secure.store.nodes()] == [node_id]
