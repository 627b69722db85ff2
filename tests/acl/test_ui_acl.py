"""The web UI with access control on: the shell (no data) is public, every fragment needs
what its API twin needs, lists show only what the token grants, and nothing the token
may not read reaches the page (podium.server.ui_routes, classified in acl.RULES)."""

from __future__ import annotations

from tests.acl.conftest import JOB, Secure

TEAM = """\
namespaces:
  team-a: {policy: read}
node: read
"""


async def _setup(secure: Secure) -> str:
    admin = secure.http(secure.management)
    r = await admin.put("/v1/namespace/team-a", json={})
    assert r.status_code == 200, r.text
    for ns, name in (("default", "secret-default"), ("team-a", "team-job")):
        r = await admin.post(
            "/v1/jobs", params={"namespace": ns}, json={"job": {**JOB, "job": name}}
        )
        assert r.status_code == 200, r.text
    return await secure.token(TEAM, "team")


async def test_without_a_token_the_shell_and_no_data(secure: Secure) -> None:
    await _setup(secure)
    anon = secure.http()
    r = await anon.get("/ui/jobs")
    assert r.status_code == 200 and 'data-acl="on"' in r.text
    assert "secret-default" not in r.text and "team-job" not in r.text
    assert (await anon.get("/ui/static/podium.js")).status_code == 200
    for path in (
        "/ui/fragment/jobs?namespace=*",
        "/ui/fragment/job/secret-default?namespace=default",
        "/ui/fragment/nodes",
        "/ui/fragment/topology",
        "/ui/fragment/evaluations?namespace=*",
        "/ui/fragment/services?namespace=*",
        "/ui/fragment/variables?namespace=*",
    ):
        r = await anon.get(path)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert "secret-default" not in r.text


async def test_a_namespace_token_sees_its_namespace_only(secure: Secure) -> None:
    team = secure.http(await _setup(secure))
    r = await team.get("/ui/fragment/jobs", params={"namespace": "*"})
    assert r.status_code == 200, r.text
    assert 'data-job="team-job"' in r.text and "secret-default" not in r.text
    # the namespace filter offers only what it may list
    assert '<option value="team-a"' in r.text and '<option value="default"' not in r.text
    r = await team.get("/ui/fragment/jobs", params={"namespace": "default"})
    assert r.status_code == 403 and "list-jobs" in r.json()["error"]
    r = await team.get("/ui/fragment/job/secret-default", params={"namespace": "default"})
    assert r.status_code == 403 and "read-job" in r.json()["error"]
    r = await team.get("/ui/fragment/job/team-job", params={"namespace": "team-a"})
    assert r.status_code == 200 and "team-job" in r.text
    r = await team.get("/ui/fragment/evaluations", params={"namespace": "*"})
    assert r.status_code == 200 and "secret-default" not in r.text and "team-job" in r.text
    # variables: paths of readable namespaces only, values only where reading is granted
    admin = secure.http(secure.management)
    for ns, path in (("default", "db/root"), ("team-a", "app/conf")):
        r = await admin.put(
            f"/v1/var/{path}", params={"namespace": ns}, json={"items": {"k": "v-" + ns}}
        )
        assert r.status_code == 200, r.text
    r = await team.get("/ui/fragment/variables", params={"namespace": "*"})
    assert r.status_code == 200 and "app/conf" in r.text and "db/root" not in r.text
    r = await team.get("/ui/fragment/variable/db/root", params={"namespace": "default"})
    assert r.status_code == 403 and "v-default" not in r.text
    r = await team.get("/ui/fragment/variable/app/conf", params={"namespace": "team-a"})
    assert r.status_code == 200 and "v-team-a" in r.text


async def test_topology_shows_space_not_names_of_unreadable_namespaces(secure: Secure) -> None:
    token = await _setup(secure)
    await secure.add_agent(secure.management)
    await secure.until(
        lambda: sum(a.client_status == "running" for a in secure.store.allocs()) == 2,
        what="both jobs running",
    )
    team = secure.http(token)
    r = await team.get("/ui/fragment/topology")
    assert r.status_code == 200, r.text
    assert "team-job.g[0]" in r.text
    assert "secret-default" not in r.text and "hidden-blk" in r.text
    node_id = secure.store.nodes()[0].id
    r = await team.get(f"/ui/fragment/node/{node_id}")
    assert r.status_code == 200
    assert "secret-default" not in r.text and "1 more allocation" in r.text
    # a token without node: read sees no nodes
    jobs_only = secure.http(await secure.token("namespaces:\n  team-a: {policy: read}\n", "j"))
    assert (await jobs_only.get("/ui/fragment/nodes")).status_code == 403
