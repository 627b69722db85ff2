"""The store on etcd (podium.state.etcd) against a real etcd member on loopback.

One member serves the module; each test writes under a cluster name of its own.  The
three-member failure cases are in test_etcd_cluster.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from podium.models import Allocation, Job, JobSpec, Node, NodeResources, Resources
from podium.state import SqliteBackend, StateStore
from podium.state import snapshot as snapshots
from podium.state.errors import StoreError
from podium.state.etcd import (
    Commit,
    EtcdBackend,
    FenceLost,
    Guard,
    IndexConflict,
    Tail,
    encode_record,
)
from podium.state.etcd_client import b64, prefix_end, put
from podium.state.etcd_member import EtcdCluster
from tests.state import test_store as store_tests

Rows = dict[tuple[str, str], bytes]


def wait_until(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def random_commits(n: int, seed: int) -> list[Commit]:
    """A history of puts (new rows and overwrites) and deletes over a few tables."""
    rng = random.Random(seed)
    live: set[tuple[str, str]] = set()
    out = []
    for index in range(1, n + 1):
        puts: dict[str, list[tuple[str, bytes]]] = {}
        deletes: dict[str, list[str]] = {}
        for _ in range(rng.randint(1, 6)):
            table = rng.choice(["jobs", "allocs", "nodes"])
            key = f"k{rng.randint(0, 40)}"
            if (table, key) in live and rng.random() < 0.3:
                if key not in [k for k, _ in puts.get(table, [])]:
                    deletes.setdefault(table, []).append(key)
                    live.discard((table, key))
                continue
            if key in deletes.get(table, []):
                continue
            value = json.dumps({"i": index, "r": rng.random()}).encode()
            puts.setdefault(table, []).append((key, value))
            live.add((table, key))
        out.append(Commit(index, puts, {t: sorted(set(k)) for t, k in deletes.items()}))
    return out


def replay(commits: list[Commit]) -> Rows:
    rows: Rows = {}
    for c in commits:
        for table, puts in c.puts.items():
            for key, value in puts:
                rows[(table, key)] = value
        for table, keys in c.deletes.items():
            for key in keys:
                rows.pop((table, key), None)
    return rows


def loaded(backend: EtcdBackend) -> tuple[int, Rows]:
    index, rows = backend.load()
    return index, {(t, k): v for t, k, v in rows}


def plan(index: int, n: int = 1000) -> dict[str, list[tuple[str, bytes]]]:
    """A plan of ``n`` placements of ~900-byte allocations with random ids (as real ones
    have: they are what keeps a plan from compressing to nothing), keyed by its index."""
    rng = random.Random(index)

    def row(i: int) -> bytes:
        ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(3)]
        body = {"plan": index, "i": i, "id": str(ids[0]), "eval": str(ids[1])}
        return json.dumps({**body, "node": str(ids[2]), "pad": "x" * 760}).encode()

    return {"allocs": [(f"p{index}-{i}", row(i)) for i in range(n)]}


def keys_under(backend: EtcdBackend, sub: str) -> list[str]:
    prefix = backend.prefix + sub
    return [kv.key for kv in backend.client.range(prefix, prefix_end(prefix))[1]]


def test_commits_round_trip_through_a_new_backend(etcd: EtcdCluster, name: str) -> None:
    history = random_commits(150, seed=1)
    writer = EtcdBackend(etcd.endpoints, cluster=name)
    assert loaded(writer) == (0, {})
    for c in history:
        writer.commit(c.index, c.puts, c.deletes)
    writer.close()
    reader = EtcdBackend(etcd.endpoints, cluster=name)
    assert loaded(reader) == (150, replay(history))
    # one log key per commit, in index order, and nothing else beside head
    assert [int(k.rsplit("/", 1)[1]) for k in keys_under(reader, "log/")] == list(range(1, 151))
    reader.set_cluster_id("c-123")
    assert EtcdBackend(etcd.endpoints, cluster=name).cluster_id() == "c-123"
    assert EtcdBackend(etcd.endpoints, cluster=name + "x").cluster_id() is None
    reader.close()


def test_a_1000_allocation_plan_commits_atomically_in_chunks(etcd: EtcdCluster, name: str) -> None:
    """Over the size limit, the record goes in chunks first and one txn commits it."""
    backend = EtcdBackend(etcd.endpoints, cluster=name, chunk_bytes=8 * 1024)
    backend.commit(1, plan(1), {})
    chunks = keys_under(backend, "chunk/")
    assert len(chunks) > 3  # the 1,000 rows did not fit one chunk: several were written
    index, rows = loaded(EtcdBackend(etcd.endpoints, cluster=name))
    assert index == 1
    assert rows == {("allocs", k): v for k, v in plan(1)["allocs"]}
    # the default limit needs no chunks for it (zlib: ~100 KB)
    inline = EtcdBackend(etcd.endpoints, cluster=name + "i")
    inline.commit(1, plan(1), {})
    assert keys_under(inline, "chunk/") == []
    assert loaded(inline)[0] == 1


def test_a_plan_over_etcds_request_limit_commits_with_the_default_limits(
    etcd: EtcdCluster, name: str
) -> None:
    """20,000 placements compress to ~1.9 MB: more than etcd takes in one request (it
    refuses the record as one put), so the default 1 MiB chunks carry it, and it commits."""
    big = plan(7, 20_000)
    record = encode_record(Commit(1, big, {}, "n"))
    assert len(record) > 1.6 * 1024 * 1024  # etcd default: 1.5 MiB
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    with pytest.raises(StoreError, match="too large"):
        backend.client.txn([], [put(backend.prefix + "whole", record)])
    backend.commit(1, big, {})
    assert len(keys_under(backend, "chunk/")) == 2
    index, rows = loaded(EtcdBackend(etcd.endpoints, cluster=name))
    assert index == 1 and len(rows) == 20_000
    assert rows == {("allocs", k): v for k, v in big["allocs"]}


WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
from test_etcd import plan
from podium.state.etcd import EtcdBackend
from tests.state.etcd_support import need_etcd
endpoints, name = sys.argv[1].split(","), sys.argv[2]
backend = EtcdBackend(endpoints, cluster=name, chunk_bytes=8192)
for index in range(1, 10_000):
    backend.commit(index, plan(index), {})
"""


def test_a_writer_killed_mid_commit_leaves_whole_plans_only(etcd: EtcdCluster, name: str) -> None:
    """A writer commits 1,000-allocation plans in ~15 chunk txns each; a reader loads all
    along, and the writer is SIGKILLed mid-stream: every load, and the load after the
    kill, holds each plan whole or not at all."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(WRITER),
            ",".join(etcd.endpoints),
            name,
            str(Path(__file__).parent),
        ],
    )
    reader = EtcdBackend(etcd.endpoints, cluster=name)

    def whole(index: int, rows: Rows) -> None:
        by_plan: dict[int, int] = {}
        for _, key in rows:
            n = int(key[1:].split("-")[0])
            by_plan[n] = by_plan.get(n, 0) + 1
        assert by_plan == dict.fromkeys(range(1, index + 1), 1000)

    def head() -> int:
        found = reader.client.range(reader.prefix + "head")[1]
        return int(found[0].value) if found else 0

    def half_way() -> bool:
        at = head()
        return any(int(k.split("/")[-3]) > at for k in keys_under(reader, "chunk/"))

    try:
        while head() < 3:  # every load along the way holds whole plans
            whole(*loaded(reader))
        # kill it while it writes the next plan's chunks (chunk keys past the log's head)
        wait_until(half_way, what="the writer to be half-way through a plan")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    index, rows = loaded(EtcdBackend(etcd.endpoints, cluster=name))
    whole(index, rows)
    assert index >= 3
    # the next writer goes on from there; the dead one's chunks are inert
    after = EtcdBackend(etcd.endpoints, cluster=name)
    after.commit(index + 1, plan(index + 1, 10), {})
    assert loaded(after)[0] == index + 1


def grant(backend: EtcdBackend, ttl: int = 30) -> int:
    return int(backend.client.call("lease/grant", {"TTL": ttl})["ID"])


def elect(backend: EtcdBackend, key: str, lease: int) -> int:
    """Take ``key`` if it is free (what the next step's election does): its create revision."""
    result = backend.client.txn(
        [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        [{"request_put": {"key": b64(key), "value": b64("me"), "lease": str(lease)}}],
    )
    assert result.succeeded
    return backend.client.range(key)[1][0].create_revision


def test_the_fence_refuses_a_deposed_leader(etcd: EtcdCluster, name: str) -> None:
    leader_key = f"/podium/{name}/leader"
    probe = EtcdBackend(etcd.endpoints, cluster=name)
    lease_a = grant(probe)
    rev_a = elect(probe, leader_key, lease_a)
    a = EtcdBackend(
        etcd.endpoints, cluster=name, fence=lambda: [Guard(leader_key, create_revision=rev_a)]
    )
    a.commit(1, {"jobs": [("web", b'{"v":1}')]}, {})
    # A's lease ends (it was partitioned, say) and B is elected: A still believes it leads
    probe.client.call("kv/lease/revoke", {"ID": str(lease_a)})
    lease_b = grant(probe)
    rev_b = elect(probe, leader_key, lease_b)
    assert rev_b != rev_a
    b = EtcdBackend(
        etcd.endpoints,
        cluster=name,
        fence=lambda: [Guard(leader_key, create_revision=rev_b, lease=lease_b)],
    )
    with pytest.raises(FenceLost, match="not the leader"):
        a.commit(2, {"jobs": [("web", b'{"v":"stale"}')]}, {})
    # a stale plan too big for one request is refused before any chunk is written
    a.chunk_bytes = 4096
    with pytest.raises(FenceLost):
        a.commit(2, plan(2), {})
    assert keys_under(a, "chunk/") == []
    assert loaded(probe) == (1, {("jobs", "web"): b'{"v":1}'})
    b.commit(2, {"jobs": [("web", b'{"v":2}')]}, {})
    # A tries again at the next index: still refused, B's write stands
    with pytest.raises(FenceLost):
        a.commit(3, {"jobs": [("web", b'{"v":"stale"}')]}, {})
    assert loaded(probe) == (2, {("jobs", "web"): b'{"v":2}'})
    # a lease guard alone: refused once the key is held under another lease
    by_lease = EtcdBackend(
        etcd.endpoints, cluster=name, fence=lambda: [Guard(leader_key, lease=lease_a)]
    )
    with pytest.raises(FenceLost):
        by_lease.commit(3, {"jobs": [("web", b'{"v":"stale"}')]}, {})
    assert loaded(probe)[0] == 2


def test_two_writers_at_one_index_cannot_both_commit(etcd: EtcdCluster, name: str) -> None:
    """The previous-index compare: a server whose store is behind the log is refused."""
    a = EtcdBackend(etcd.endpoints, cluster=name)
    b = EtcdBackend(etcd.endpoints, cluster=name)
    a.commit(1, {"jobs": [("x", b"1")]}, {})
    with pytest.raises(IndexConflict, match="another server committed"):
        b.commit(1, {"jobs": [("x", b"2")]}, {})
    with pytest.raises(IndexConflict):
        b.commit(3, {"jobs": [("x", b"3")]}, {})  # a gap is refused too
    assert loaded(a) == (1, {("jobs", "x"): b"1"})


def test_a_retried_commit_that_had_landed_counts_as_committed(etcd: EtcdCluster, name: str) -> None:
    """A commit whose reply was lost is retried with the same nonce: it finds itself."""
    backend = EtcdBackend(etcd.endpoints, cluster=name)
    commit = Commit(1, {"jobs": [("x", b"1")]}, {}, nonce="n-1")
    backend._commit(commit)
    backend._commit(commit)  # the retry: no error, nothing written twice
    assert loaded(backend) == (1, {("jobs", "x"): b"1"})
    with pytest.raises(IndexConflict):
        backend._commit(Commit(1, {"jobs": [("x", b"2")]}, {}, nonce="n-2"))


def test_compaction_folds_the_log_into_a_snapshot(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    history = random_commits(80, seed=2)
    backend = EtcdBackend(etcd.endpoints, cluster=name, chunk_bytes=2048)
    for c in history[:50]:
        backend.commit(c.index, c.puts, c.deletes)
    assert backend.compact() == 50
    assert keys_under(backend, "log/") == []
    assert len(keys_under(backend, "snap/")) >= 1
    assert loaded(EtcdBackend(etcd.endpoints, cluster=name)) == (50, replay(history[:50]))
    for c in history[50:]:
        backend.commit(c.index, c.puts, c.deletes)
    assert loaded(EtcdBackend(etcd.endpoints, cluster=name)) == (80, replay(history))
    old_snap = keys_under(backend, "snap/")
    assert backend.compact() == 80
    assert keys_under(backend, "log/") == []
    assert not set(old_snap) & set(keys_under(backend, "snap/"))  # the old one is gone
    assert backend.compact() == 80  # nothing new: nothing done
    assert loaded(EtcdBackend(etcd.endpoints, cluster=name)) == (80, replay(history))
    # the snapshot file is the SQLite store's format
    backend.set_cluster_id("c-9")
    backend.snapshot(tmp_path / "s.db")
    db = sqlite3.connect(tmp_path / "s.db")
    rows = {(t, k): bytes(v) for t, k, v in db.execute("SELECT tbl, key, value FROM objects")}
    assert rows == replay(history)
    assert db.execute("SELECT value FROM meta WHERE key='index'").fetchone() == (80,)
    assert db.execute("SELECT value FROM info WHERE key='cluster_id'").fetchone() == ("c-9",)
    db.close()


def collect(tail: Tail) -> tuple[list[Commit], threading.Thread, list[BaseException]]:
    got: list[Commit] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            got.extend(tail)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return got, thread, errors


def test_a_follower_tailing_sees_every_commit_in_order(etcd: EtcdCluster, name: str) -> None:
    history = random_commits(120, seed=3)
    writer = EtcdBackend(etcd.endpoints, cluster=name, chunk_bytes=1024)
    for c in history[:20]:
        writer.commit(c.index, c.puts, c.deletes)
    follower = EtcdBackend(etcd.endpoints, cluster=name)
    tail = follower.tail(5)  # catches up from the log, then follows the watch
    got, thread, errors = collect(tail)
    for c in history[20:70]:
        writer.commit(c.index, c.puts, c.deletes)
    wait_until(lambda: len(got) >= 65 or errors, what="the follower to see 65 commits")
    # etcd's history compacted under the watch: it re-reads the log and goes on
    assert writer.compact() == 70
    for c in history[70:]:
        writer.commit(c.index, c.puts, c.deletes)
    wait_until(lambda: len(got) >= 115 or errors, what="the follower to see every commit")
    tail.close()
    thread.join(10)
    assert not thread.is_alive() and not errors
    assert [c.index for c in got] == list(range(6, 121))
    for seen, sent in zip(got, history[5:], strict=True):
        assert (seen.puts, seen.deletes) == (sent.puts, sent.deletes)
    # a follower behind the snapshot cannot catch up from the log: it must reload
    with pytest.raises(IndexConflict, match="reload"):
        next(iter(follower.tail(10)))


def spec(job_id: str) -> JobSpec:
    return JobSpec.model_validate(
        {"job": job_id, "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}}}
    )


def store_history(store: StateStore, seed: int) -> None:
    """Jobs, nodes, allocations placed, updated and deleted through the store."""
    rng = random.Random(seed)
    txn = store.txn()
    txn.put_node(Node(id="n1", name="n1", resources=NodeResources(cpu=4000, memory=4000)))
    txn.put_job(Job(id="web", spec=spec("web"), modify_index=txn.index))
    store.commit(txn)
    for step in range(30):
        txn = store.txn()
        for i in rng.sample(range(40), 5):
            txn.put_alloc(
                Allocation(
                    id=f"a{i}",
                    eval_id=f"e{step}",
                    name=f"web.g[{i}]",
                    job_id="web",
                    job_version=0,
                    group="g",
                    index=i,
                    node_id="n1",
                    resources=Resources(cpu=10, memory=10),
                    modify_index=txn.index,
                )
            )
        store.commit(txn)
        if step % 7 == 6:
            txn = store.txn()
            for a in list(store.allocs())[:3]:
                txn.delete_alloc(a.id)
            store.commit(txn)


def test_the_state_store_on_etcd_matches_the_store_on_sqlite(
    etcd: EtcdCluster, name: str, tmp_path: Path
) -> None:
    """The same writes through StateStore on each backend; reopened, both hold the same."""
    on_etcd = StateStore(EtcdBackend(etcd.endpoints, cluster=name))
    on_sqlite = StateStore(SqliteBackend(tmp_path / "s.db"))
    store_history(on_etcd, seed=4)
    store_history(on_sqlite, seed=4)
    on_etcd.close()
    on_sqlite.close()
    etcd_again = StateStore(EtcdBackend(etcd.endpoints, cluster=name))
    sqlite_again = StateStore(SqliteBackend(tmp_path / "s.db"))
    assert etcd_again.index == sqlite_again.index > 30
    assert sorted(a.model_dump_json() for a in etcd_again.allocs()) == sorted(
        a.model_dump_json() for a in sqlite_again.allocs()
    )
    assert [j.id for j in etcd_again.jobs()] == ["web"]
    assert etcd_again.node_usage("n1") == sqlite_again.node_usage("n1") != (0, 0)
    # the etcd store's snapshot passes the SQLite snapshot's own deep check
    etcd_again.backend.snapshot(tmp_path / "etcd.snap")
    info = snapshots.verify(tmp_path / "etcd.snap")
    assert info.index == etcd_again.index
    assert info.objects == snapshots.verify(tmp_path / "s.db").objects
    etcd_again.close()
    sqlite_again.close()


STORE_TESTS = [
    store_tests.test_sqlite_state_survives_reopen,
    store_tests.test_node_usage_is_kept_in_step_with_the_allocations,
    store_tests.test_changed_alloc_ids_and_job_counts_follow_every_write,
]


@pytest.mark.parametrize("store_test", STORE_TESTS, ids=lambda t: t.__name__)
def test_the_store_tests_on_sqlite_run_on_etcd(
    store_test: Callable[[Path], None],
    etcd: EtcdCluster,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/state/test_store.py's tests of a store on disk (reopen, usage and change
    logs rebuilt on load), with each SQLite file replaced by an etcd cluster of that name."""

    def on_etcd(path: str | os.PathLike[str]) -> EtcdBackend:
        return EtcdBackend(etcd.endpoints, cluster=f"{name}-{Path(path).name.replace('.', '-')}")

    monkeypatch.setattr(store_tests, "SqliteBackend", on_etcd)
    store_test(tmp_path)
