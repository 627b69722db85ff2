"""The store on etcd: an ordered log of commits plus a compacted snapshot (docs/ha.md).

Why a log and not a key per row: etcd takes at most 128 operations per transaction and
1.5 MiB per request by default, and a plan of 1,000+ placements must commit atomically.
So one Podium commit is ONE log key holding the whole transaction (its rows as JSON,
zlib-compressed: a 1,000-allocation plan is ~100 KB), and the in-memory tables of every
server are the snapshot plus the log applied in order:

    /podium/<cluster>/head                 the last committed index (decimal)
    /podium/<cluster>/log/<index:020d>     one commit: b"R" + zlib(record), or b"C" + a
                                           manifest naming its chunk keys (below)
    /podium/<cluster>/chunk/<index>/<nonce>/<n>  pieces of a record over ``chunk_bytes``,
                                           each written in a txn of its own BEFORE the log
                                           key: inert until a log key names them
    /podium/<cluster>/snapshot             manifest of the last compacted snapshot
    /podium/<cluster>/snap/<index>/<nonce>/<n>   its pieces (zlib of every row)
    /podium/<cluster>/cluster_id           the cluster id (text)

The commit point is the one txn that writes ``log/<N>`` and ``head``.  It compares
``head == N-1`` and ``log/<N>`` absent (the previous index: one writer per index, never
two), plus the caller's fence (:class:`Guard`: the leader key's create revision, or its
lease), so a deposed leader that still believes it leads can never commit: its txn fails
the compare, :class:`FenceLost` is raised and nothing was written.  A record too big for
one request is written as chunks first; a commit that dies half-way leaves chunks no log
key names (compaction deletes them), never half a commit.

Podium's index is its own (the log key's number), not etcd's revision: the index stays
dense (1, 2, 3 ...) whatever else is written to etcd, and a snapshot restored to SQLite or
moved between etcd clusters keeps it.  Reads of the log happen at one etcd revision, so a
load sees one committed prefix of the log.

Each record carries a random nonce: a commit whose reply was lost (a timeout, a member that
died after applying it) and that is retried finds its own nonce at ``log/<N>`` and counts
as committed, instead of being written twice or reported lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium.state.backend import Row
from podium.state.errors import StoreError
from podium.state.etcd_client import (
    KV,
    EtcdClient,
    EtcdCompacted,
    EtcdUnavailable,
    Watch,
    compare,
    delete_range,
    get,
    kv_of,
    prefix_end,
    put,
)
from podium.state.sqlite import SCHEMA

CHUNK_BYTES = 1024 * 1024
"""A record (compressed) larger than this is written in chunks of this size, one txn
each: under etcd's default 1.5 MiB request limit with room for the txn around it."""
COMMIT_TIMEOUT = 5.0
"""Seconds a commit may take over every member it tries before it is refused."""
PAGE = 64
"""Log keys per range request while loading or catching up."""
INDEX_DIGITS = 20
RETRY_INTERVAL = 0.5
"""Seconds a follower's tail waits before asking etcd again when no member answered."""


class FenceLost(StoreError):
    """The commit's fence no longer holds (this server is not the leader any more):
    nothing was written."""


class IndexConflict(StoreError):
    """etcd's log is not where this server's store is: another server committed (or a
    commit reported failed landed after all).  Nothing was written; the server must
    catch up from the log (or reload) before it commits again."""


@dataclass(frozen=True)
class Guard:
    """One condition a commit needs: ``key`` exists with this create revision (a leader
    key, recreated by each new leader), and/or is attached to this lease."""

    key: str
    create_revision: int | None = None
    lease: int | None = None

    def compares(self) -> list[dict[str, Any]]:
        out = []
        if self.create_revision is not None:
            out.append(compare(self.key, "CREATE", self.create_revision))
        if self.lease is not None:
            out.append(compare(self.key, "LEASE", self.lease))
        return out

    def holds(self, found: KV | None, lease: int | None) -> bool:
        if found is None:
            return False
        if self.create_revision is not None and found.create_revision != self.create_revision:
            return False
        return self.lease is None or lease == self.lease


Fence = Callable[[], Sequence[Guard]]
"""Called before each commit: the guards under which this server may commit now."""


@dataclass
class Commit:
    """One committed transaction, as a follower applies it."""

    index: int
    puts: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    deletes: dict[str, list[str]] = field(default_factory=dict)
    nonce: str = ""


def encode_record(commit: Commit) -> bytes:
    """zlib(a JSON header line, then every put's value back to back): the values are
    opaque bytes (JSON rows), framed by their lengths rather than escaped into one JSON
    document, which cost twice the time for a 1,000-allocation plan (bench/etcd_store.py)."""
    header = {
        "index": commit.index,
        "nonce": commit.nonce,
        "puts": {t: [[k, len(v)] for k, v in rows] for t, rows in commit.puts.items()},
        "deletes": commit.deletes,
    }
    values = [v for rows in commit.puts.values() for _, v in rows]
    head = json.dumps(header, separators=(",", ":")).encode()
    return zlib.compress(b"".join([head, b"\n", *values]), 1)


def decode_record(data: bytes) -> Commit:
    raw = zlib.decompress(data)
    end = raw.index(b"\n")
    header = json.loads(raw[:end])
    at = end + 1
    puts: dict[str, list[tuple[str, bytes]]] = {}
    for table, rows in header["puts"].items():
        out = puts[table] = []
        for key, size in rows:
            out.append((key, raw[at : at + size]))
            at += size
    if at != len(raw):
        raise StoreError(f"etcd log record {header['index']} is malformed")
    return Commit(
        index=int(header["index"]),
        puts=puts,
        deletes={t: list(keys) for t, keys in header["deletes"].items()},
        nonce=str(header.get("nonce", "")),
    )


class EtcdBackend:
    """A :class:`~podium.state.backend.Backend` on an etcd cluster (one Podium cluster per
    ``cluster`` name under ``/podium/``).  Blocking, like SqliteBackend: a commit returns
    once etcd's quorum has it."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        cluster: str = "default",
        fence: Fence | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        commit_timeout: float = COMMIT_TIMEOUT,
        client: EtcdClient | None = None,
    ) -> None:
        if "/" in cluster or not cluster:
            raise ValueError(f"bad cluster name {cluster!r}")
        self.client = client or EtcdClient(endpoints, timeout=commit_timeout)
        self.prefix = f"/podium/{cluster}/"
        self.fence = fence
        self.time_left: Callable[[], float] | None = None
        """Seconds the fence is sure to hold (the leader's term): a commit waits no longer
        than that for etcd, since it could not be acknowledged after (servers commit on
        their event loop: a partition must not stall their API past the term)."""
        self.chunk_bytes = chunk_bytes
        self.commit_timeout = commit_timeout
        self._unknown: dict[int, str] = {}
        """Nonces of commits whose outcome was unknown (no answer in time), by index."""
        self._tails: list[Tail] = []
        self._lock = threading.Lock()

    # -- keys
    def _key(self, name: str) -> str:
        return self.prefix + name

    def log_key(self, index: int) -> str:
        return f"{self.prefix}log/{index:0{INDEX_DIGITS}d}"

    def _index_of(self, key: str) -> int:
        return int(key.rsplit("/", 1)[1])

    # -- Backend
    def load(self) -> tuple[int, Iterable[Row]]:
        for _ in range(5):
            try:
                index, rows, _, _ = self._read()
            except EtcdCompacted:  # compacted while reading at an older revision: again
                continue
            return index, [(t, k, v) for (t, k), v in rows.items()]
        raise StoreError("etcd kept compacting under the load; try again")

    def _read(self, revision: int = 0) -> tuple[int, dict[tuple[str, str], bytes], int, KV | None]:
        """(index, rows, revision, snapshot manifest): the snapshot plus the log applied,
        all read at one revision (the latest when ``revision`` is 0)."""
        revision, found, _ = self.client.range(self._key("snapshot"), revision=revision)
        rows: dict[tuple[str, str], bytes] = {}
        base = 0
        if found:
            base, rows = self._read_snapshot(found[0], revision)
        index = base
        for commit in self._log_after(base, revision):
            if commit.index != index + 1:
                raise StoreError(
                    f"etcd log under {self.prefix} skips from index {index} to {commit.index}"
                )
            apply(rows, commit)
            index = commit.index
        _, head, _ = self.client.range(self._key("head"), revision=revision)
        if head and int(head[0].value) != index:
            raise StoreError(f"etcd head says {int(head[0].value)}, the log ends at {index}")
        return index, rows, revision, (found[0] if found else None)

    def _read_snapshot(
        self, manifest: KV, revision: int
    ) -> tuple[int, dict[tuple[str, str], bytes]]:
        meta = json.loads(manifest.value)
        data = b"".join(self._get(key, revision) for key in meta["chunks"])
        snap = decode_record(data)
        rows = {(t, k): v for t, puts in snap.puts.items() for k, v in puts}
        return snap.index, rows

    def _get(self, key: str, revision: int) -> bytes:
        _, found, _ = self.client.range(key, revision=revision)
        if not found:
            raise StoreError(f"etcd key {key} is missing (a chunk a log record names)")
        return found[0].value

    def _log_after(self, after: int, revision: int) -> Iterator[Commit]:
        """The log's records past ``after`` in order, as of ``revision``."""
        start = self.log_key(after + 1)
        end = prefix_end(self._key("log/"))
        while True:
            _, kvs, more = self.client.range(start, end, revision=revision, limit=PAGE)
            for kv in kvs:
                yield self._decode(kv, revision)
            if not more or not kvs:
                return
            start = kvs[-1].key + "\x00"

    def _decode(self, kv: KV, revision: int) -> Commit:
        kind, body = kv.value[:1], kv.value[1:]
        if kind == b"C":
            manifest = json.loads(body)
            body = b"".join(self._get(key, revision) for key in manifest["chunks"])
        elif kind != b"R":
            raise StoreError(f"etcd key {kv.key} is not a Podium log record")
        return decode_record(body)

    def commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        with self._lock:
            self._commit(Commit(index, puts, deletes, secrets.token_hex(8)))

    def _commit(self, commit: Commit) -> None:
        guards = list(self.fence()) if self.fence else []
        fence = [c for g in guards for c in g.compares()]
        data = encode_record(commit)
        if len(data) + 1 <= self.chunk_bytes:
            value = b"R" + data
        else:
            keys = self._write_chunks(
                f"chunk/{commit.index:0{INDEX_DIGITS}d}/{commit.nonce}/", data, fence
            )
            value = b"C" + json.dumps({"chunks": keys}).encode()
        index = commit.index
        head = self._key("head")
        previous = (
            compare(head, "VALUE", str(index - 1)) if index > 1 else compare(head, "CREATE", 0)
        )
        log_key = self.log_key(index)
        try:
            result = self.client.txn(
                [*fence, previous, compare(log_key, "CREATE", 0)],
                [put(log_key, value), put(head, str(index))],
                [get(head), get(log_key), *(get(g.key) for g in guards)],
                timeout=self._timeout(),
            )
        except EtcdUnavailable as exc:
            self._unknown[index] = commit.nonce
            unknown = EtcdUnavailable(
                f"commit {index} refused: {exc} (it may land later; the next commit finds out)",
                cause=exc.cause,
            )
            unknown.outcome_unknown = True
            raise unknown from None
        if result.succeeded:
            self._unknown.pop(index, None)
            return
        self._refused(commit, guards, result.kvs(0), result.kvs(1), result.responses[2:])

    def _refused(
        self,
        commit: Commit,
        guards: list[Guard],
        head: list[KV],
        log: list[KV],
        guard_ranges: list[dict[str, Any]],
    ) -> None:
        """Say why etcd refused the commit (nothing was written); return if it was ours."""
        index = commit.index
        if log:
            landed = self._decode(log[0], 0)
            if landed.nonce == commit.nonce:
                return  # an earlier try of this very commit landed: committed
        for guard, raw in zip(guards, guard_ranges, strict=True):
            kvs = raw.get("response_range", {}).get("kvs", [])
            found = None
            lease = None
            if kvs:
                found = kv_of(kvs[0])
                lease = int(kvs[0].get("lease", 0)) or None
            if not guard.holds(found, lease):
                now = (
                    f"it was created at revision {found.create_revision}" if found else "it is gone"
                )
                raise FenceLost(
                    f"commit {index} refused: this server is not the leader any more "
                    f"(its fence {guard.key} at revision {guard.create_revision}: {now}); "
                    "nothing was written"
                )
        at = int(head[0].value) if head else 0
        if log and self._unknown.get(index) == self._decode(log[0], 0).nonce:
            raise IndexConflict(
                f"commit {index} was reported failed (no answer in time) and landed after "
                "all: this server must catch up from the etcd log before it commits again"
            )
        raise IndexConflict(
            f"commit {index} refused: the etcd log is at index {at}, this server's store "
            f"at {index - 1} (another server committed); nothing was written"
        )

    def _timeout(self) -> float:
        if self.time_left is None:
            return self.commit_timeout
        return max(0.05, min(self.commit_timeout, self.time_left()))

    def _write_chunks(self, name: str, data: bytes, fence: list[dict[str, Any]]) -> list[str]:
        keys = []
        size = self.chunk_bytes
        for n, start in enumerate(range(0, len(data), size)):
            key = f"{self.prefix}{name}{n:06d}"
            result = self.client.txn(
                fence, [put(key, data[start : start + size])], timeout=self._timeout()
            )
            if not result.succeeded:
                raise FenceLost(
                    "commit refused: this server is not the leader any more (its fence "
                    "failed while writing the record's chunks); nothing was committed"
                )
            keys.append(key)
        return keys

    def close(self) -> None:
        for tail in list(self._tails):
            tail.close()
        self.client.close()

    def cluster_id(self) -> str | None:
        _, found, _ = self.client.range(self._key("cluster_id"))
        return found[0].value.decode() if found else None

    def set_cluster_id(self, cluster_id: str) -> None:
        self.client.txn([], [put(self._key("cluster_id"), cluster_id)])

    def snapshot(self, dest: str | os.PathLike[str]) -> None:
        """The rows at one committed index, into a SQLite file in the snapshot format
        (podium.state.snapshot): the same file ``podium operator snapshot`` writes for a
        SQLite store."""
        index, rows = self.load()
        cluster_id = self.cluster_id()
        path = Path(dest)
        db = sqlite3.connect(str(path), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            db.executescript(SCHEMA)
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO objects(tbl, key, value) VALUES (?,?,?)", rows)
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('index', ?)", (index,))
            if cluster_id is not None:
                db.execute(
                    "INSERT OR REPLACE INTO info(key, value) VALUES ('cluster_id', ?)",
                    (cluster_id,),
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"writing the snapshot {path} failed: {exc}", path=str(path)) from exc
        finally:
            db.close()

    # -- compaction
    def compact(self, *, history: bool = True) -> int:
        """Fold the log into a new snapshot and delete the log it covers; returns the
        snapshot's index.  Guarded by the fence (only the leader compacts) and by the old
        snapshot's revision (two compactions never both win).  Commits go on meanwhile:
        they only add log keys past the snapshot.  ``history`` also compacts etcd's own
        revision history up to the new snapshot's write (etcd keeps every old value
        until told), which cancels watches behind it: :class:`Tail` then re-reads."""
        guards = list(self.fence()) if self.fence else []
        fence = [c for g in guards for c in g.compares()]
        index, rows, _, old = self._read()
        old_index = int(json.loads(old.value)["index"]) if old else 0
        if index <= old_index:
            return old_index
        nonce = secrets.token_hex(8)
        tables: dict[str, list[tuple[str, bytes]]] = {}
        for (table, key), value in rows.items():
            tables.setdefault(table, []).append((key, value))
        data = encode_record(Commit(index, tables, {}, nonce))  # a snapshot: one big put
        keys = self._write_chunks(f"snap/{index:0{INDEX_DIGITS}d}/{nonce}/", data, fence)
        manifest = json.dumps({"index": index, "chunks": keys, "nonce": nonce})
        snapshot = self._key("snapshot")
        previous = compare(snapshot, "MOD", old.mod_revision if old else 0)
        result = self.client.txn(
            [*fence, previous],
            [
                put(snapshot, manifest),
                delete_range(self._key("log/"), self.log_key(index + 1).encode()),
                delete_range(
                    self._key("chunk/"), f"{self.prefix}chunk/{index + 1:0{INDEX_DIGITS}d}".encode()
                ),
                delete_range(
                    self._key("snap/"), f"{self.prefix}snap/{index:0{INDEX_DIGITS}d}".encode()
                ),
            ],
            timeout=self.commit_timeout,
        )
        if not result.succeeded:
            raise FenceLost(
                "compaction refused: the fence no longer holds or another compaction won; "
                "nothing was changed"
            )
        if history:
            self.client.compact(result.revision)
        return index

    # -- followers
    def tail(self, from_index: int) -> Tail:
        """The commits after ``from_index``, in order, as they are committed (blocking
        iteration; :meth:`Tail.close` from another thread ends it)."""
        tail = Tail(self, from_index)
        self._tails.append(tail)
        return tail

    watch = tail


def apply(rows: dict[tuple[str, str], bytes], commit: Commit) -> None:
    for table, puts in commit.puts.items():
        for key, value in puts:
            rows[(table, key)] = value
    for table, keys in commit.deletes.items():
        for key in keys:
            rows.pop((table, key), None)


class Tail:
    """Yields every commit past ``from_index`` in index order, then each new one as an
    etcd watch reports it.  It reads the log at one revision, then watches the log's
    prefix from the next revision, so no commit falls between the two; when the watch
    breaks (a member down, etcd's history compacted) it reads the log again past the
    last index it yielded.  While no member can answer (a quorum down, the follower cut
    off) it tries again every ``RETRY_INTERVAL`` and yields nothing: the replica keeps
    serving what it has, and catches up once etcd answers.  A follower behind the snapshot
    (its next index was compacted away) gets :class:`IndexConflict`: it must reload from
    the snapshot."""

    def __init__(self, backend: EtcdBackend, from_index: int) -> None:
        self._backend = backend
        self.last = from_index
        self._closed = threading.Event()
        self._watch: Watch | None = None

    def close(self) -> None:
        self._closed.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        with contextlib.suppress(ValueError):
            self._backend._tails.remove(self)

    def __iter__(self) -> Iterator[Commit]:
        backend = self._backend
        client = backend.client
        log_prefix = backend._key("log/")
        while not self._closed.is_set():
            try:
                revision, snap, _ = client.range(backend._key("snapshot"))
                base = int(json.loads(snap[0].value)["index"]) if snap else 0
                for commit in backend._log_after(self.last, revision):
                    if commit.index != self.last + 1:
                        break
                    if self._closed.is_set():
                        return
                    self.last = commit.index
                    yield commit
            except EtcdCompacted:
                continue
            except EtcdUnavailable:  # no quorum (or no member) now: the replica waits
                self._closed.wait(RETRY_INTERVAL)
                continue
            if self.last < base:
                raise IndexConflict(
                    f"a follower at index {self.last} is behind the etcd snapshot at {base}: "
                    "it must reload from the snapshot"
                )
            watch = client.watch(log_prefix, prefix_end(log_prefix), revision + 1)
            self._watch = watch
            if self._closed.is_set():
                return
            try:
                for _, events in watch:
                    gap = False
                    for kind, kv in events:
                        if kind != "PUT":
                            continue
                        index = backend._index_of(kv.key)
                        if index <= self.last:
                            continue
                        if index != self.last + 1:
                            gap = True
                            break
                        commit = backend._decode(kv, kv.mod_revision)
                        self.last = commit.index
                        yield commit
                    if gap or self._closed.is_set():
                        break
            except (EtcdCompacted, EtcdUnavailable):
                if self._closed.is_set():
                    return
            finally:
                watch.close()
                self._watch = None
