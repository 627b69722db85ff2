"""A snapshot holds the whole state (sealed variables, token hashes): only a management
token may take one."""

from __future__ import annotations

from tests.acl.conftest import Secure


async def test_only_a_management_token_may_take_a_snapshot(secure: Secure) -> None:
    assert (await secure.http().get("/v1/operator/snapshot")).status_code == 401
    operator = await secure.token("operator: write\nnode: write\n", name="ops")
    r = await secure.http(operator).get("/v1/operator/snapshot")
    assert r.status_code == 403 and "management" in r.json()["error"], r.text
    # past the edge: this in-memory server has no file to copy, and says so as a 503
    r = await secure.http(secure.management).get("/v1/operator/snapshot")
    assert r.status_code == 503 and "in-memory" in r.json()["error"], r.text
