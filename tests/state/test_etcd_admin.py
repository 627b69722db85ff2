"""Offline installs into etcd (podium.state.etcd_admin): a single server's SQLite store
migrated, a snapshot restored, each against a real etcd member and real SQLite files.

What must hold: etcd then loads exactly the rows SQLite had, at its index and cluster id;
every refusal (etcd already holds the cluster, a server holds the data dir, a damaged
store, a leader running) changes nothing in etcd; and the one switch transaction loses
cleanly to anything that wrote meanwhile.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from pathlib import Path

import pytest

from podium.models import Allocation, Resources
from podium.state import SqliteBackend, StateStore, etcd_admin
from podium.state import snapshot as snapshots
from podium.state.datadir import DataDirLock, open_store, store_path
from podium.state.errors import StoreDamaged, StoreError
from podium.state.etcd import EtcdBackend
from podium.state.etcd_admin import gaps, migrate, restore
from podium.state.etcd_client import delete_range, prefix_end, put
from podium.state.etcd_member import EtcdCluster
from tests.state.test_etcd import random_commits, replay, store_history

Rows = dict[tuple[str, str], bytes]


def server_store(data_dir: Path, seed: int, allocs: int = 0) -> None:
    """A data dir as a single server leaves it: opened as a start opens it (cluster id
    assigned), a history of writes, then ``allocs`` more allocations in one plan with
    random ids (as real ones: they keep the rows from compressing to nothing)."""
    store, lock = open_store(data_dir)
    try:
        store_history(store, seed)
        if allocs:
            rng = random.Random(seed)
            txn = store.txn()
            for i in range(allocs):
                txn.put_alloc(
                    Allocation(
                        id=str(uuid.UUID(int=rng.getrandbits(128))),
                        eval_id=str(uuid.UUID(int=rng.getrandbits(128))),
                        name=f"web.g[{i}]",
                        job_id="web",
                        job_version=0,
                        group="g",
                        index=i,
                        node_id="n1",
                        resources=Resources(cpu=1, memory=1),
                        modify_index=txn.index,
                    )
                )
            store.commit(txn)
    finally:
        store.close()
        lock.close()


def save_snapshot(data_dir: Path, dest: Path) -> None:
    """What `snapshot save` writes for the server at ``data_dir``."""
    backend = SqliteBackend(store_path(data_dir))
    try:
        backend.snapshot(dest)
    finally:
        backend.close()


def sqlite_rows(where: Path) -> tuple[int, Rows, str | None]:
    """A data dir's store (or the store file ``where``): index, rows, cluster id."""
    path = store_path(where) if where.is_dir() else where
    assert path.is_file(), path  # opening a missing one would create it
    backend = SqliteBackend(path)
    try:
        index, rows = backend.load()
        return index, {(t, k): v for t, k, v in rows}, backend.cluster_id()
    finally:
        backend.close()


def etcd_rows(etcd: EtcdCluster, name: str) -> tuple[int, Rows, str | None]:
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    try:
        index, rows = backend.load()
        return index, {(t, k): v for t, k, v in rows}, backend.cluster_id()
    finally:
        backend.close()


def everything(etcd: EtcdCluster, name: str) -> list[tuple[str, bytes, int]]:
    """Every key of the cluster with its value and mod revision: "nothing changed"."""
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    try:
        prefix = backend.prefix
        _, kvs, _ = backend.client.range(prefix, prefix_end(prefix))
        return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]
    finally:
        backend.close()


def objects(store: StateStore) -> dict[str, object]:
    """Everything a StateStore serves, comparable across backends."""

    def dump(items: list[object]) -> list[str]:
        return sorted(o.model_dump_json() for o in items)  # type: ignore[attr-defined]

    return {
        "index": store.index,
        "jobs": dump(list(store.jobs())),
        "versions": [dump(list(store.job_versions(j.id, j.namespace))) for j in store.jobs()],
        "allocs": dump(list(store.allocs())),
        "nodes": dump(list(store.nodes())),
        "evals": dump(list(store.evaluations())),
        "deployments": dump(list(store.deployments())),
        "usage": {n.id: store.node_usage(n.id) for n in store.nodes()},
    }


def test_a_restore_deletes_every_range_but_what_it_keeps() -> None:
    keep = [("/p/head", b"/p/head\x00"), ("/p/snap/1/n/", b"/p/snap/1/n0")]
    assert gaps("/p/", keep) == [
        ("/p/", b"/p/head"),
        ("/p/head\x00", b"/p/snap/1/n/"),
        ("/p/snap/1/n0", b"/p0"),
    ]


# -- migrate


def test_a_migrated_store_loads_from_etcd_as_sqlite_had_it(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    """1,000 allocations in chunks of 16 KB: etcd loads the very rows, index and cluster
    id; a StateStore on it serves what the SQLite one served; the servers go on from it."""
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=1, allocs=1000)
    index, rows, cluster_id = sqlite_rows(data_dir)
    assert index > 30 and len(rows) > 1000 and cluster_id is not None
    marker = (data_dir / "server" / "cluster-id").read_text()

    backend = EtcdBackend(etcd.endpoints, cluster=name, chunk_bytes=16 * 1024)
    installed = migrate(data_dir, backend, keyring_id="key-1")
    backend.close()
    assert installed.chunks > 3  # the rows needed several requests
    assert (installed.index, installed.cluster_id) == (index, cluster_id)
    assert (installed.keyring_id, installed.replaced) == ("key-1", None)
    assert sum(installed.objects.values()) == len(rows)
    assert etcd_rows(etcd, name) == (index, rows, cluster_id)
    # the layout is a compacted store's: head, snapshot, ids, the snapshot's pieces
    found = {k: v for k, v, _ in everything(etcd, name)}
    p = f"/podium/{name}/"
    assert {k for k in found if not k.startswith(p + "snap/")} == {
        p + "head",
        p + "snapshot",
        p + "cluster_id",
        p + "keyring_id",
    }
    assert (found[p + "head"], found[p + "keyring_id"]) == (str(index).encode(), b"key-1")
    assert len([k for k in found if k.startswith(p + "snap/")]) == installed.chunks

    # the SQLite store is kept aside, whole: the old server started again is refused
    assert installed.store_moved_to is not None
    aside = Path(installed.store_moved_to)
    assert aside.name.startswith("state.db.migrated-") and not store_path(data_dir).exists()
    assert sqlite_rows(aside) == (index, rows, cluster_id)
    assert (data_dir / "server" / "cluster-id").read_text() == marker
    with pytest.raises(StoreDamaged, match=r"state\.db is missing, but this data dir held cluster"):
        open_store(data_dir)

    on_sqlite = StateStore(SqliteBackend(aside))
    etcd_backend = EtcdBackend(etcd.endpoints, cluster=name)
    on_etcd = StateStore(etcd_backend)
    assert objects(on_etcd) == objects(on_sqlite)
    assert len(on_etcd.allocs()) > 1000
    on_sqlite.close()

    # a server on etcd commits the next index, and compacts past the migrated snapshot
    txn = on_etcd.txn()
    txn.delete_alloc(on_etcd.allocs()[0].id)
    assert on_etcd.commit(txn) == index + 1
    assert etcd_backend.compact() == index + 1
    again = StateStore(EtcdBackend(etcd.endpoints, cluster=name))
    assert objects(again) == objects(on_etcd)
    on_etcd.close()
    again.close()


def test_migrate_refuses_a_cluster_etcd_already_holds(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    server_store(first, seed=2)
    server_store(second, seed=3)
    first_rows, second_rows = sqlite_rows(first), sqlite_rows(second)
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    migrate(first, backend)
    held = everything(etcd, name)
    with pytest.raises(StoreError) as err:
        migrate(second, backend)
    message = str(err.value)
    assert f"already holds Podium cluster {name!r}" in message
    assert "--etcd-cluster" in message and f"etcdctl del --prefix /podium/{name}/" in message
    assert "\n" not in message
    assert everything(etcd, name) == held  # nothing changed
    assert sqlite_rows(second) == second_rows  # nor in the refused data dir
    assert etcd_rows(etcd, name) == first_rows
    # a cluster id alone (a server once started on it) is a cluster too
    other = EtcdBackend(etcd.endpoints, cluster=name + "-id")
    other.set_cluster_id("someone-else")
    with pytest.raises(StoreError, match="cluster id someone-else"):
        migrate(second, other)
    assert everything(etcd, name + "-id")[0][1] == b"someone-else"
    # another name is free
    fresh = EtcdBackend(etcd.endpoints, cluster=name + "-2")
    assert migrate(second, fresh).index == second_rows[0]
    for b in (backend, other, fresh):
        b.close()


def test_migrate_is_refused_while_a_server_holds_the_data_dir(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=4)
    before = sqlite_rows(data_dir)
    running = DataDirLock(data_dir, "serving")  # what a running server holds
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    try:
        with pytest.raises(StoreError) as err:
            migrate(data_dir, backend)
        assert "state.lock is held by another process" in str(err.value)
        assert "stop it before migrating its store to etcd" in str(err.value)
        assert everything(etcd, name) == []
        assert sqlite_rows(data_dir) == before
    finally:
        running.close()
    assert migrate(data_dir, backend).index == before[0]
    backend.close()


def test_a_damaged_store_is_refused_with_the_servers_own_line(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=5)
    path = store_path(data_dir)
    garbage = b"this is no database at all" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreDamaged) as started:
        open_store(data_dir)  # what `podium server` says
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    with pytest.raises(StoreDamaged) as migrated:
        migrate(data_dir, backend)
    assert str(migrated.value) == str(started.value)
    assert "is damaged" in str(migrated.value) and "podium operator snapshot restore" in str(
        migrated.value
    )
    assert everything(etcd, name) == [] and path.read_bytes() == garbage
    # a store emptied where a cluster was: the start's refusal too
    path.write_bytes(b"")
    with pytest.raises(StoreDamaged, match=r"empty \(0 bytes\), but this data dir held cluster"):
        migrate(data_dir, backend)
    assert everything(etcd, name) == []
    backend.close()


def test_no_store_and_no_commit_are_refused_and_nothing_is_created(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    missing = tmp_path / "typo"
    with pytest.raises(StoreError, match=r"there is no Podium store at .*typo/server/state\.db"):
        migrate(missing, backend)
    assert not missing.exists()
    empty = tmp_path / "empty"
    store, lock = open_store(empty)  # started once, never written to
    store.close()
    lock.close()
    with pytest.raises(StoreError, match=r"holds no commit \(index 0\)"):
        migrate(empty, backend)
    assert everything(etcd, name) == []
    backend.close()


def test_a_migration_loses_whole_to_one_that_switched_first(
    etcd: EtcdCluster, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two migrations into one name: the second switches between the first's chunks and
    its switch; the first is refused, its chunks deleted, the second's state intact."""
    first, second = tmp_path / "first", tmp_path / "second"
    server_store(first, seed=6, allocs=300)
    server_store(second, seed=7)
    first_rows, second_rows = sqlite_rows(first), sqlite_rows(second)
    write_chunks = etcd_admin._write_chunks
    raced: list[int] = []

    def then_another(backend: EtcdBackend, prefix: str, data: bytes) -> list[str]:
        keys = write_chunks(backend, prefix, data)
        if not raced:
            raced.append(1)
            migrate(second, EtcdBackend(etcd.endpoints, cluster=name))
        return keys

    monkeypatch.setattr(etcd_admin, "_write_chunks", then_another)
    backend = EtcdBackend(etcd.endpoints, cluster=name, chunk_bytes=8 * 1024)
    with pytest.raises(StoreError, match="already holds"):
        migrate(first, backend)
    backend.close()
    assert etcd_rows(etcd, name) == second_rows
    snap = [k for k, _, _ in everything(etcd, name) if "/snap/" in k]
    assert len(snap) == 1  # only the winner's piece: the loser's were deleted
    assert sqlite_rows(first) == first_rows  # the loser's store stays where it was


# -- restore


def lease_leader(etcd: EtcdCluster, name: str) -> tuple[EtcdBackend, int]:
    """The election key, as a leading server holds it (under a lease)."""
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    lease, _ = backend.client.lease_grant(60)
    backend.client.txn([], [put(backend.prefix + "leader", "http://10.0.0.9:7634", lease=lease)])
    return backend, lease


def lease_member(backend: EtcdBackend, server: str) -> int:
    """A running server's member record (podium.server.ha), under a lease."""
    lease, _ = backend.client.lease_grant(60)
    record = json.dumps({"url": f"http://{server}:7634", "name": server})
    backend.client.txn([], [put(f"{backend.prefix}members/{server}", record, lease=lease)])
    return lease


def used_cluster(etcd: EtcdCluster, name: str) -> Rows:
    """A cluster with a compacted snapshot, a log after it and a dead writer's chunk."""
    backend = EtcdBackend(etcd.endpoints, cluster=name, chunk_bytes=4 * 1024)
    history = random_commits(60, seed=8)
    for c in history[:40]:
        backend.commit(c.index, c.puts, c.deletes)
    backend.compact(history=False)
    for c in history[40:]:
        backend.commit(c.index, c.puts, c.deletes)
    backend.client.txn([], [put(backend.prefix + "chunk/00000000000000000099/dead/000000", "x")])
    backend.set_cluster_id("old-cluster")
    backend.client.txn([], [put(backend.prefix + "keyring_id", "key-old")])
    backend.close()
    return replay(history)


def test_a_restore_replaces_everything_etcd_held_for_the_cluster(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    rows = used_cluster(etcd, name)
    assert etcd_rows(etcd, name) == (60, rows, "old-cluster")
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=9, allocs=200)
    snap = tmp_path / "s.snap"
    save_snapshot(data_dir, snap)
    info = snapshots.verify(snap)
    neighbour = everything(etcd, name + "x")  # a cluster whose name extends this one's

    backend = EtcdBackend(etcd.endpoints, cluster=name, chunk_bytes=8 * 1024)
    installed = restore(snap, backend)
    backend.close()
    assert (installed.index, installed.replaced) == (info.index, 60)
    assert etcd_rows(etcd, name) == sqlite_rows(data_dir)
    p = f"/podium/{name}/"
    keys = [k for k, _, _ in everything(etcd, name)]
    assert {k for k in keys if not k.startswith(p + "snap/")} == {
        p + "head",
        p + "snapshot",
        p + "cluster_id",
        p + "keyring_id",
    }  # the old log, chunks and snapshot are gone; the servers' key is still checked
    assert installed.keyring_id == "key-old"
    assert len([k for k in keys if k.startswith(p + "snap/")]) == installed.chunks > 1
    assert everything(etcd, name + "x") == neighbour
    # restoring it again replaces it again, and servers go on from it
    again = EtcdBackend(etcd.endpoints, cluster=name)
    assert restore(snap, again).replaced == info.index
    store = StateStore(again)
    txn = store.txn()
    txn.delete_alloc(store.allocs()[0].id)
    assert store.commit(txn) == info.index + 1
    store.close()


def test_a_restore_is_refused_while_a_leader_holds_the_election_key(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    used_cluster(etcd, name)
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=10)
    snap = tmp_path / "s.snap"
    save_snapshot(data_dir, snap)
    leader, lease = lease_leader(etcd, name)
    held = everything(etcd, name)
    with pytest.raises(StoreError) as err:
        restore(snap, EtcdBackend(etcd.endpoints, cluster=name))
    message = str(err.value)
    assert "http://10.0.0.9:7634 holds" in message
    assert "stop every server of the cluster first" in message
    assert everything(etcd, name) == held
    # a migration into a led cluster is refused the same way (before what it holds)
    with pytest.raises(StoreError, match="stop every server of the cluster first"):
        migrate(data_dir, EtcdBackend(etcd.endpoints, cluster=name))
    assert everything(etcd, name) == held
    # the leader gone, a follower still runs (its member record): refused too
    leader.client.lease_revoke(lease)
    follower = lease_member(leader, "s2")
    with pytest.raises(StoreError) as err:
        restore(snap, EtcdBackend(etcd.endpoints, cluster=name))
    assert "has servers running (s2: their records under" in str(err.value)
    assert "stop every server of the cluster first" in str(err.value)
    # every server stopped (their leases ended), the restore goes through
    leader.client.lease_revoke(follower)
    assert restore(snap, leader).index == snapshots.verify(snap).index
    assert etcd_rows(etcd, name) == sqlite_rows(data_dir)
    leader.close()


def test_a_restore_loses_whole_to_a_commit_or_a_server_that_came_meanwhile(
    etcd: EtcdCluster, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = used_cluster(etcd, name)
    data_dir = tmp_path / "data"
    server_store(data_dir, seed=11)
    snap = tmp_path / "s.snap"
    save_snapshot(data_dir, snap)
    write_chunks = etcd_admin._write_chunks
    server = EtcdBackend(etcd.endpoints, cluster=name)
    meanwhile: list[str] = []
    leases: list[int] = []

    def then(backend: EtcdBackend, prefix: str, data: bytes) -> list[str]:
        keys = write_chunks(backend, prefix, data)
        if meanwhile[-1] == "commit":  # a server started and committed
            server.commit(61, {"jobs": [("late", b"{}")]}, {})
        elif meanwhile[-1] == "leader":  # a server was elected
            server.client.txn([], [put(server.prefix + "leader", "http://10.0.0.8:7634")])
        elif meanwhile[-1] == "member":  # a server started (and announced itself)
            leases.append(lease_member(server, "s3"))
        return keys

    monkeypatch.setattr(etcd_admin, "_write_chunks", then)
    meanwhile.append("commit")
    with pytest.raises(StoreError, match=r"changed during the restore .*index 60 when it began"):
        restore(snap, EtcdBackend(etcd.endpoints, cluster=name))
    rows[("jobs", "late")] = b"{}"
    assert etcd_rows(etcd, name) == (61, rows, "old-cluster")
    snap_keys = [k for k, _, _ in everything(etcd, name) if "/snap/" in k]
    assert all("/snap/00000000000000000040/" in k for k in snap_keys)  # its chunks deleted

    meanwhile.append("leader")
    with pytest.raises(StoreError, match=re.escape("http://10.0.0.8:7634 holds")):
        restore(snap, EtcdBackend(etcd.endpoints, cluster=name))
    assert etcd_rows(etcd, name) == (61, rows, "old-cluster")
    leader = server.prefix + "leader"
    server.client.txn([], [delete_range(leader, leader.encode() + b"\x00")])  # it stopped

    meanwhile.append("member")
    with pytest.raises(StoreError, match=r"has servers running \(s3: "):
        restore(snap, EtcdBackend(etcd.endpoints, cluster=name))
    assert etcd_rows(etcd, name) == (61, rows, "old-cluster")
    server.client.lease_revoke(leases[0])  # it stopped

    meanwhile.append("nothing")  # all stopped: it goes through
    assert restore(snap, server).replaced == 61
    assert etcd_rows(etcd, name)[0] == snapshots.verify(snap).index
    server.close()


def test_an_etcd_snapshot_restores_into_etcd_and_into_a_sqlite_data_dir(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    """What `snapshot save` writes for a store on etcd (EtcdBackend.snapshot) is one
    snapshot for both stores: restored into another etcd cluster and into a data dir,
    both hold the rows the etcd store had."""
    on_etcd = StateStore(EtcdBackend(etcd.endpoints, cluster=name))
    store_history(on_etcd, seed=12)
    on_etcd.backend.set_cluster_id("c-12")
    snap = tmp_path / "etcd.snap"
    on_etcd.backend.snapshot(snap)
    source = etcd_rows(etcd, name)

    restore(snap, EtcdBackend(etcd.endpoints, cluster=name + "-copy"))
    assert etcd_rows(etcd, name + "-copy") == source
    data_dir = tmp_path / "data"
    snapshots.restore(snap, data_dir)
    assert sqlite_rows(data_dir) == source
    on_sqlite = StateStore(SqliteBackend(store_path(data_dir)))
    assert objects(on_sqlite) == objects(on_etcd)
    on_sqlite.close()
    on_etcd.close()
