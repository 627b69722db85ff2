"""Variables over the API: put/get/list/delete, check-and-set, blocking reads, at rest."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podium.client import AsyncClient
from podium.errors import Conflict, NotFound
from podium.server.api import create_app
from podium.server.core import Server
from podium.server.keyring import Keyring, KeyringError
from podium.state import SqliteBackend, StateStore

Api = tuple[httpx.AsyncClient, Server]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = Server(StateStore())
    await server.start()
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client, server
    await server.stop()


async def _turns(n: int = 30) -> None:
    """Let the loop run other tasks (no real sleep)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_put_get_list_delete(api: Api) -> None:
    client, server = api
    r = await client.put(
        "/v1/var/app/config", json={"items": {"db_url": "postgres://db/app", "user": "x"}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["path"] == "app/config" and body["namespace"] == "default"
    assert body["items"] == {"db_url": "postgres://db/app", "user": "x"}
    assert body["create_index"] == body["modify_index"] == int(r.headers["X-Podium-Index"])
    created = body["create_index"]

    got = await client.get("/v1/var/app/config")
    assert got.status_code == 200
    assert got.json()["items"]["db_url"] == "postgres://db/app"
    assert int(got.headers["X-Podium-Index"]) >= created

    await client.put("/v1/var/app/other", json={"items": {"k": "v"}})
    await client.put("/v1/var/web/config", json={"items": {"k": "v"}})
    listed = (await client.get("/v1/vars", params={"prefix": "app/"})).json()
    assert [v["path"] for v in listed] == ["app/config", "app/other"]
    assert all("items" not in v and "ciphertext" not in v for v in listed)
    assert len((await client.get("/v1/vars")).json()) == 3

    # a replace keeps the creation index and moves the modify index
    again = (await client.put("/v1/var/app/config", json={"items": {"db_url": "new"}})).json()
    assert again["create_index"] == created and again["modify_index"] > created
    assert again["items"] == {"db_url": "new"}

    d = await client.delete("/v1/var/app/config")
    assert d.status_code == 200 and d.json()["index"] > again["modify_index"]
    missing = await client.get("/v1/var/app/config")
    assert missing.status_code == 404 and "app/config" in missing.json()["error"]
    assert (await client.delete("/v1/var/app/config")).status_code == 404
    # what the store holds is sealed
    sealed = server.store.variable("app/other")
    assert sealed is not None and '"v"' not in sealed.model_dump_json()


async def test_check_and_set(api: Api) -> None:
    client, _ = api
    first = await client.put("/v1/var/db", params={"cas": 0}, json={"items": {"pw": "a"}})
    assert first.status_code == 200
    index = first.json()["modify_index"]
    # cas=0: only when it does not exist yet
    r = await client.put("/v1/var/db", params={"cas": 0}, json={"items": {"pw": "b"}})
    assert r.status_code == 409
    assert "check-and-set expected index 0" in r.json()["error"]
    stale = await client.put("/v1/var/db", params={"cas": index - 1}, json={"items": {"pw": "b"}})
    assert stale.status_code == 409 and f"at index {index}" in stale.json()["error"]
    ok = await client.put("/v1/var/db", params={"cas": index}, json={"items": {"pw": "b"}})
    assert ok.status_code == 200
    assert (await client.delete("/v1/var/db", params={"cas": index})).status_code == 409
    assert (await client.get("/v1/var/db")).json()["items"] == {"pw": "b"}
    new_index = ok.json()["modify_index"]
    assert (await client.delete("/v1/var/db", params={"cas": new_index})).status_code == 200


@pytest.mark.parametrize(
    "path", ["bad path", "a//b", "a/%2E%2E/b", "-/%2E%2E", "x" * 300, "caf%C3%A9", "a/b%3Fc"]
)
async def test_bad_paths_are_400_with_a_clear_error(api: Api, path: str) -> None:
    client, server = api
    before = server.store.index
    r = await client.put(f"/v1/var/{path}", json={"items": {"k": "v"}})
    assert r.status_code == 400, (path, r.text)
    assert "must be segments of letters, digits" in r.json()["error"]
    assert (await client.get(f"/v1/var/{path}")).status_code == 400
    assert (await client.delete(f"/v1/var/{path}")).status_code == 400
    assert server.store.index == before


async def test_bad_items_are_400(api: Api) -> None:
    client, server = api
    r = await client.put("/v1/var/app", json={"items": {}})
    assert r.status_code == 400 and "at least one item" in r.json()["error"]
    r = await client.put("/v1/var/app", json={"items": {"bad key": "v"}})
    assert r.status_code == 400 and "item key 'bad key'" in r.json()["error"]
    r = await client.put("/v1/var/app", json={"items": {"k": 1}})
    assert r.status_code == 400
    r = await client.put("/v1/var/app", json={"items": {"k": "x" * (70 * 1024)}})
    assert r.status_code == 400 and "KiB" in r.json()["error"]
    r = await client.put("/v1/var/app", json={"nope": {}})
    assert r.status_code == 400
    assert server.store.variables() == []


async def test_blocking_get_wakes_only_for_its_variable(api: Api) -> None:
    client, _ = api
    await client.put("/v1/var/app/config", json={"items": {"v": "1"}})
    first = await client.get("/v1/var/app/config")
    index = int(first.headers["X-Podium-Index"])

    waiter = asyncio.create_task(
        client.get("/v1/var/app/config", params={"index": index, "wait": "10s"})
    )
    await _turns()
    assert not waiter.done()
    await client.put("/v1/var/app/unrelated", json={"items": {"v": "x"}})
    await _turns()
    assert not waiter.done(), "a write to another variable woke the query"
    await client.put("/v1/var/app/config", json={"items": {"v": "2"}})
    answer = await asyncio.wait_for(waiter, 5)
    assert answer.json()["items"] == {"v": "2"}
    index = int(answer.headers["X-Podium-Index"])

    # deleting it answers too (404)
    waiter = asyncio.create_task(
        client.get("/v1/var/app/config", params={"index": index, "wait": "10s"})
    )
    await _turns()
    assert not waiter.done()
    await client.delete("/v1/var/app/config")
    assert (await asyncio.wait_for(waiter, 5)).status_code == 404


async def test_blocking_list(api: Api) -> None:
    client, _ = api
    r = await client.get("/v1/vars")
    index = int(r.headers["X-Podium-Index"])
    waiter = asyncio.create_task(client.get("/v1/vars", params={"index": index, "wait": "10s"}))
    await _turns()
    assert not waiter.done()
    await client.put("/v1/var/a", json={"items": {"k": "v"}})
    answer = await asyncio.wait_for(waiter, 5)
    assert [v["path"] for v in answer.json()] == ["a"]
    assert int(answer.headers["X-Podium-Index"]) > index


async def test_sdk_round_trip(api: Api) -> None:
    _, server = api
    transport = httpx.ASGITransport(app=create_app(server))
    async with AsyncClient("http://podium", transport=transport) as sdk:
        var = await sdk.var_put("app/config", {"db_url": "pg://x"}, cas=0)
        assert var.items == {"db_url": "pg://x"}
        assert (await sdk.var_get("app/config")).items == {"db_url": "pg://x"}
        assert [v.path for v in await sdk.var_list("app")] == ["app/config"]
        with pytest.raises(Conflict):
            await sdk.var_put("app/config", {"db_url": "y"}, cas=0)
        with pytest.raises(ValueError, match="variable path"):
            await sdk.var_get("app/../secret")
        index = await sdk.var_delete("app/config", cas=var.modify_index)
        assert index > var.modify_index
        with pytest.raises(NotFound):
            await sdk.var_get("app/config")


async def test_a_wrong_key_is_a_clear_500(api: Api) -> None:
    client, server = api
    await client.put("/v1/var/app/config", json={"items": {"k": "v"}})
    other = Server(server.store, keyring=Keyring.ephemeral())
    transport = httpx.ASGITransport(app=create_app(other))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as wrong:
        r = await wrong.get("/v1/var/app/config")
        assert r.status_code == 500
        assert "cannot decrypt variable 'app/config'" in r.json()["error"]
        # listing still works: it never opens a value
        assert (await wrong.get("/v1/vars")).status_code == 200


async def test_at_rest_the_store_file_alone_reveals_no_value(tmp_path: Path) -> None:
    """The SQLite file (and its WAL) hold ciphertext only; the key is elsewhere."""
    data = tmp_path / "data"
    db = data / "server" / "state.db"
    keyring_dir = data / "server" / "keyring"
    secret = "hunter2-correct-horse-battery-staple"
    store = StateStore(SqliteBackend(db))
    ring = Keyring.load_or_create(keyring_dir)
    server = Server(store, keyring=ring)
    server.variables.put("app/config", {"db_password": secret, "user": "admin-user-name"})
    server.variables.put("app/config", {"db_password": secret + "-v2"})

    def store_bytes() -> bytes:
        return b"".join(
            p.read_bytes() for p in db.parent.iterdir() if p.name.startswith("state.db")
        )

    assert (db.parent / "state.db-wal").stat().st_size > 0  # the WAL is read too
    blob = store_bytes()
    assert b"app/config" in blob  # the path is metadata, in the clear
    for needle in (secret, "admin-user-name", "db_password"):
        assert needle.encode() not in blob
        assert base64.b64encode(needle.encode()) not in blob
    # nor is the key: it lives in its own file, beside the store, not in it
    key_secret = ring.active.secret
    assert key_secret not in blob and base64.b64encode(key_secret) not in blob
    assert [p.name for p in keyring_dir.iterdir()] == [f"{ring.active.id}.key"]
    store.close()
    assert secret.encode() not in store_bytes()  # after the checkpoint too

    # the same store and keyring read it back after a restart
    store = StateStore(SqliteBackend(db))
    again = Server(store, keyring=Keyring.load_or_create(keyring_dir))
    assert again.variables.get("app/config").items == {"db_password": secret + "-v2"}
    # the store with any other key cannot
    with pytest.raises(KeyringError, match="not in the keyring"):
        Server(store, keyring=Keyring.ephemeral()).variables.get("app/config")
    raw = json.loads(store.variable("app/config").model_dump_json())  # type: ignore[union-attr]
    assert set(raw) >= {"key_id", "nonce", "ciphertext"} and "items" not in raw
    store.close()
