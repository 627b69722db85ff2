"""Offline installs into the etcd store: ``podium operator migrate`` (a single server's
SQLite store moved to etcd) and ``podium operator snapshot restore --etcd`` (a snapshot
file made what etcd holds for a cluster).  docs/ha.md, "Migrating a single server to HA".

Why a module of its own, beside :mod:`podium.state.etcd` and not in it: the backend is
what a running server commits through, under its fence, one index after the other; an
install is the one write made with no server running, and it writes a whole state at
once.  It writes nothing the backend does not already read: the rows become the store's
**snapshot** (``snapshot`` manifest + ``snap/<I>/<nonce>/<n>`` chunks, exactly what
:meth:`EtcdBackend.compact` writes), ``head`` = that snapshot's index I, and
``cluster_id``; there is no log.  A server then loads it as it loads any compacted store
and commits I+1 next, so Podium's index (what agents and blocking queries hold) goes on
from where the single server was, with the same cluster id.

How it stays atomic with etcd's limits (1.5 MiB per request): the chunks are written
first, each in a request of its own, under a fresh nonce (inert: nothing reads a chunk no
manifest names); then ONE transaction makes the switch.  It compares what the install
was decided on, so anything that happened meanwhile makes it fail cleanly with nothing
installed (its own chunks are then deleted again):

- both: no ``leader`` key and no ``members/`` key (no server of the cluster runs: each
  running server keeps a member record under a lease, podium.server.ha);
- migrate: ``head``, ``snapshot``, ``cluster_id`` and ``keyring_id`` absent (another
  migration, or a server that started on the name meanwhile, wins or loses as a whole);
- restore: those four at the mod revisions read before; its success branch also deletes
  every other key of the cluster (old log, chunks, snapshots) by ranges: deleting a range
  is one operation, so the switch is a dozen operations whatever etcd held.  ``keyring_id``
  is kept: the servers that will serve the restored state are checked against it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium.state import snapshot as snapshots
from podium.state.backend import Row
from podium.state.datadir import (
    DataDirLock,
    move_aside,
    read_store,
    require_store,
    store_path,
)
from podium.state.errors import StoreError
from podium.state.etcd import INDEX_DIGITS, Commit, EtcdBackend, encode_record
from podium.state.etcd_client import (
    KV,
    EtcdUnavailable,
    TxnResult,
    b64,
    compare,
    delete_range,
    get,
    prefix_end,
    put,
)

STATE_KEYS = ("head", "snapshot", "cluster_id", "keyring_id")
"""The keys that say a cluster holds state, which an install writes or keeps.
``keyring_id`` is the id of the key every server seals variables with, recorded by the
first server (podium.server.ha.cluster_keyring) or by a migration."""


@dataclass
class Installed:
    """What an install put into etcd."""

    cluster: str
    index: int
    cluster_id: str | None
    objects: dict[str, int] = field(default_factory=dict)
    """Rows per table."""
    chunks: int = 0
    replaced: int | None = None
    """The index the cluster was at before a restore replaced it (None: it held none)."""
    keyring_id: str | None = None
    """The key the cluster's servers must seal with (as etcd now records it)."""
    store_moved_to: str | None = None
    """A migration: where the SQLite store it moved was put aside."""

    def as_dict(self) -> dict[str, object]:
        return {
            "etcd_cluster": self.cluster,
            "index": self.index,
            "cluster_id": self.cluster_id,
            "objects": dict(self.objects),
            "chunks": self.chunks,
            "replaced_index": self.replaced,
            "keyring_id": self.keyring_id,
            "store_moved_to": self.store_moved_to,
        }


@dataclass
class ClusterKeys:
    """The keys of one Podium cluster that an install decides on, read at one revision."""

    head: KV | None
    snapshot: KV | None
    cluster_id: KV | None
    keyring_id: KV | None
    leader: KV | None
    members: list[KV]

    @classmethod
    def of(cls, result: TxnResult) -> ClusterKeys:
        """From the ranges of :func:`_reads`, in their order."""
        head, snapshot, cluster_id, keyring_id, leader = (
            kvs[0] if kvs else None for kvs in map(result.kvs, range(5))
        )
        return cls(head, snapshot, cluster_id, keyring_id, leader, result.kvs(5))

    def held(self) -> dict[str, KV]:
        """The state keys present."""
        found = {name: getattr(self, name) for name in STATE_KEYS}
        return {name: kv for name, kv in found.items() if kv is not None}

    def index(self) -> int | None:
        return int(self.head.value) if self.head is not None else None


def _members(backend: EtcdBackend) -> str:
    return backend.prefix + "members/"


def _reads(backend: EtcdBackend) -> list[dict[str, Any]]:
    """Range requests for every key :class:`ClusterKeys` holds."""
    p = backend.prefix
    members = _members(backend)
    return [get(p + name) for name in (*STATE_KEYS, "leader")] + [get(members, prefix_end(members))]


def read_keys(backend: EtcdBackend) -> ClusterKeys:
    """What an install decides on, for ``backend``'s cluster (one read-only transaction:
    one revision)."""
    return ClusterKeys.of(backend.client.txn([], _reads(backend)))


def _name(backend: EtcdBackend) -> str:
    return backend.prefix.removeprefix("/podium/").rstrip("/")


def _where(backend: EtcdBackend) -> str:
    return f"etcd cluster {','.join(backend.client.endpoints)}"


def _member(kv: KV) -> str:
    try:
        record = json.loads(kv.value)
        return str(record.get("name") or record.get("url") or kv.key)
    except (ValueError, AttributeError):
        return kv.key


def refuse_if_running(backend: EtcdBackend, keys: ClusterKeys, doing: str) -> None:
    """StoreError while a server of the cluster runs: one holds the election key, or
    keeps a member record (a server killed outright loses both within their leases)."""
    if keys.leader is None and not keys.members:
        return
    if keys.leader is not None:
        holder = keys.leader.value.decode(errors="replace") or "a server"
        running = f"has a leader ({holder} holds {keys.leader.key})"
    else:
        names = ", ".join(_member(kv) for kv in keys.members)
        running = f"has servers running ({names}: their records under {_members(backend)})"
    raise StoreError(
        f"Podium cluster {_name(backend)!r} on {_where(backend)} {running}: stop every server "
        f"of the cluster first, then run {doing} again; nothing was changed",
        cause="servers running",
    )


def refuse_if_held(backend: EtcdBackend, keys: ClusterKeys) -> None:
    """StoreError when the cluster already holds state (a migration never overwrites)."""
    if not keys.held():
        return
    said = []
    if keys.head is not None:
        said.append(f"index {keys.index()}")
    if keys.snapshot is not None:
        said.append("a snapshot")
    for name in ("cluster_id", "keyring_id"):
        kv = getattr(keys, name)
        if kv is not None:
            said.append(f"{name.replace('_', ' ')} {kv.value.decode(errors='replace')}")
    raise StoreError(
        f"{_where(backend)} already holds Podium cluster {_name(backend)!r} "
        f"({', '.join(said)} under {backend.prefix}): migrate never overwrites it; choose "
        f"another name with --etcd-cluster, or wipe it first (etcdctl del --prefix "
        f"{backend.prefix}); nothing was changed",
        cause="etcd holds the cluster",
    )


def install(
    backend: EtcdBackend,
    index: int,
    rows: Iterable[Row],
    cluster_id: str | None,
    *,
    replace: bool,
    keyring_id: str | None = None,
    source: str = "the state to install",
) -> Installed:
    """Make ``rows`` at ``index`` the state of ``backend``'s cluster: its snapshot, with
    ``head`` = ``index``, ``cluster_id`` and ``keyring_id`` (each kept as etcd has it
    when None).

    ``replace=False`` (migrate) refuses a cluster that holds state; ``replace=True``
    (restore) replaces it, every other key of the cluster deleted.  Both refuse while a
    server of the cluster runs.  ``source`` names the rows in messages.  Raises
    StoreError, with nothing installed, when refused or when etcd changed meanwhile;
    EtcdUnavailable when etcd did not answer (the switch then either landed whole or not
    at all: running the command again says which).  Once installed, the cluster is read
    back as a server would load it, and its index and number of rows checked."""
    if index <= 0:
        raise StoreError(
            f"{source} holds no commit (index 0): there is nothing to install; servers "
            "started on an empty etcd cluster make a new cluster by themselves",
            cause="index 0",
        )
    doing = "the restore" if replace else "the migration"
    before = read_keys(backend)
    refuse_if_running(backend, before, doing)
    if not replace:
        refuse_if_held(backend, before)
    tables: dict[str, list[tuple[str, bytes]]] = {}
    objects: dict[str, int] = {}
    for table, key, value in rows:
        tables.setdefault(table, []).append((key, value))
        objects[table] = objects.get(table, 0) + 1
    nonce = secrets.token_hex(8)
    chunk_prefix = f"{backend.prefix}snap/{index:0{INDEX_DIGITS}d}/{nonce}/"
    data = encode_record(Commit(index, tables, {}, nonce))
    keys = _write_chunks(backend, chunk_prefix, data)
    manifest = json.dumps({"index": index, "chunks": keys, "nonce": nonce})
    puts = {"snapshot": manifest, "head": str(index)}
    if cluster_id is not None:
        puts["cluster_id"] = cluster_id
    if keyring_id is not None:
        puts["keyring_id"] = keyring_id
    result = _switch(backend, before, puts, chunk_prefix, replace)
    if not result.succeeded:
        _drop(backend, chunk_prefix)
        _refused(backend, before, ClusterKeys.of(result), doing, replace)
    loaded, found = backend.load()
    count = sum(1 for _ in found)
    expected = sum(objects.values())
    if loaded < index or (loaded == index and count != expected):  # past it: servers went on
        raise StoreError(
            f"after {doing}, Podium cluster {_name(backend)!r} on {_where(backend)} reads back "
            f"as index {loaded} with {count} objects, not index {index} with {expected}"
        )
    after = read_keys(backend)
    return Installed(
        cluster=_name(backend),
        index=index,
        cluster_id=after.cluster_id.value.decode() if after.cluster_id else None,
        objects=objects,
        chunks=len(keys),
        replaced=before.index() if replace else None,
        keyring_id=after.keyring_id.value.decode() if after.keyring_id else None,
    )


def _write_chunks(backend: EtcdBackend, prefix: str, data: bytes) -> list[str]:
    """``data`` in pieces of ``backend.chunk_bytes``, one request each (inert keys)."""
    keys = []
    size = backend.chunk_bytes
    try:
        for n, start in enumerate(range(0, len(data), size)):
            key = f"{prefix}{n:06d}"
            backend.client.txn(
                [], [put(key, data[start : start + size])], timeout=backend.commit_timeout
            )
            keys.append(key)
    except BaseException:
        _drop(backend, prefix)
        raise
    return keys


def _drop(backend: EtcdBackend, prefix: str) -> None:
    """Delete this install's chunks (best effort: left behind they are inert, and the
    cluster's next compaction deletes them)."""
    with contextlib.suppress(StoreError):
        backend.client.txn([], [delete_range(prefix, prefix_end(prefix))])


def _no_key_under(prefix: str) -> dict[str, Any]:
    """A compare that holds while no key starts with ``prefix`` (etcd compares every key
    of a range; an empty range compares as one absent key, create revision 0)."""
    return {**compare(prefix, "CREATE", 0), "range_end": b64(prefix_end(prefix))}


def _switch(
    backend: EtcdBackend,
    before: ClusterKeys,
    puts: dict[str, str],
    chunk_prefix: str,
    replace: bool,
) -> TxnResult:
    """The one transaction that installs: compares, (deletes,) puts."""
    p = backend.prefix
    guards = [compare(p + "leader", "CREATE", 0), _no_key_under(_members(backend))]
    for name in STATE_KEYS:
        kv = getattr(before, name)
        if replace:
            guards.append(compare(p + name, "MOD", kv.mod_revision if kv is not None else 0))
        else:
            guards.append(compare(p + name, "CREATE", 0))
    deletes: list[dict[str, Any]] = []
    if replace:
        keep = [(p + name, (p + name).encode() + b"\x00") for name in (*STATE_KEYS, "leader")]
        keep.append((chunk_prefix, prefix_end(chunk_prefix)))
        deletes = [delete_range(start, end) for start, end in gaps(p, keep)]
    try:
        return backend.client.txn(
            guards,
            [*deletes, *(put(p + name, value) for name, value in puts.items())],
            _reads(backend),
            timeout=backend.commit_timeout,
        )
    except EtcdUnavailable as exc:
        raise EtcdUnavailable(
            f"the switch of Podium cluster {_name(backend)!r} to index {puts['head']} got no "
            f"answer: {exc}. It lands whole or not at all (it may still land): once etcd "
            "answers, run the command again (a migration that landed is then refused as done)",
            cause=exc.cause,
        ) from None


def gaps(prefix: str, keep: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The ranges ``[start, end)`` of every key under ``prefix`` outside the ``keep``
    ranges: what a restore deletes, in as few operations as there are kept ranges + 1.
    (etcd refuses a transaction that puts a key inside a range it deletes.)"""
    out: list[tuple[bytes, bytes]] = []
    at = prefix.encode()
    for start, end in sorted((s.encode(), e) for s, e in keep):
        if start > at:
            out.append((at, start))
        at = max(at, end)
    stop = prefix_end(prefix)
    if at < stop:
        out.append((at, stop))
    return [(start.decode(), end) for start, end in out]


def _refused(
    backend: EtcdBackend, before: ClusterKeys, now: ClusterKeys, doing: str, replace: bool
) -> None:
    """Say why the switch was refused (nothing was installed)."""
    refuse_if_running(backend, now, doing)
    if not replace:
        refuse_if_held(backend, now)
    raise StoreError(
        f"Podium cluster {_name(backend)!r} on {_where(backend)} changed during {doing} "
        f"(index {before.index()} when it began, {now.index()} now: another restore, or a "
        "server that started?): nothing was installed; stop every server and try again",
        cause="etcd changed",
    )


def migrate(data_dir: Path, backend: EtcdBackend, *, keyring_id: str | None = None) -> Installed:
    """Move the stopped single server's store at ``data_dir`` into ``backend``'s cluster
    (which must hold nothing), with ``keyring_id`` (the key its variables are sealed
    with: the servers on etcd are then refused unless given it).

    The data dir's lock is held throughout, so no server can start on it meanwhile; the
    store is checked as a server's start checks it.  Once etcd holds it, the SQLite store
    is moved aside (``state.db.migrated-<time>``: the way back), so that the old server,
    started again without ``--etcd``, is refused (its store is missing where its
    ``cluster-id`` says a cluster was) instead of serving a copy that no longer follows
    the cluster."""
    data_dir = data_dir.absolute()
    path = require_store(data_dir)
    before = read_keys(backend)  # the cheap refusals before reading a large store
    refuse_if_running(backend, before, "the migration")
    refuse_if_held(backend, before)
    lock = DataDirLock(data_dir, "migrating its store to etcd")
    try:
        store = read_store(data_dir)
        installed = install(
            backend,
            store.index,
            store.rows,
            store.cluster_id,
            replace=False,
            keyring_id=keyring_id,
            source=f"the store at {store_path(data_dir)}",
        )
        try:
            aside = move_aside(path, "migrated")
        except OSError as exc:
            raise StoreError(
                f"the store is in etcd now, but moving {path} aside failed "
                f"({exc.strerror or exc}): move it away yourself, so that no server starts "
                "on it without --etcd",
                path=str(path),
            ) from None
        installed.store_moved_to = str(aside) if aside is not None else None
        return installed
    finally:
        lock.close()


def restore(snapshot: Path, backend: EtcdBackend) -> Installed:
    """Verify the snapshot file (podium.state.snapshot's checks) and make it all that
    ``backend``'s cluster holds (no server of it may run)."""
    info, rows = snapshots.read(snapshot)
    return install(
        backend, info.index, rows, info.cluster_id, replace=True, source=f"snapshot {snapshot}"
    )
