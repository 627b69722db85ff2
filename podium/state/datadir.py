"""Opening a server's store safely, and the two ways to recover one.

A server's store lives in ``<data_dir>/server/state.db``.  Opening it (``open_store``):

- takes ``state.lock`` (``flock``) for the server's life, so a second server, a
  ``snapshot restore`` or a ``store reset`` cannot touch a store that one is using;
- refuses a store that SQLite or the loader cannot read (garbage, truncated, a row that
  no longer parses) with :class:`StoreDamaged`: one line naming the file and the fix;
- refuses an empty or missing store where the data dir says a cluster was: the first
  start writes the cluster's id into the store and into ``cluster-id`` beside it, and a
  store without it (0 bytes, deleted) next to that file is a lost store, not a new
  cluster.  Starting anyway would place work on nodes whose agents still run the old
  allocations, and the server would stop them all;
- checks the file with ``PRAGMA quick_check`` before the server serves from it.

Recovery (podium.state.snapshot; ``podium operator snapshot restore``) puts a verified
snapshot in place; ``reset_store`` moves the store aside so the next start makes a new,
empty cluster, on purpose.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from podium.state.backend import Row
from podium.state.errors import StoreDamaged, StoreError
from podium.state.etcd import EtcdBackend
from podium.state.etcd_client import compare, get, put
from podium.state.sqlite import SqliteBackend
from podium.state.store import StateStore

STORE_FILE = "state.db"
CLUSTER_ID_FILE = "cluster-id"
LOCK_FILE = "state.lock"


def server_dir(data_dir: Path) -> Path:
    return data_dir / "server"


def store_path(data_dir: Path) -> Path:
    return server_dir(data_dir) / STORE_FILE


def recovery(data_dir: Path) -> str:
    """The recovery commands, as every refusal names them."""
    return (
        f"restore a snapshot with `podium operator snapshot restore FILE --data-dir {data_dir}`, "
        f"or start a new, empty cluster with `podium operator store reset --data-dir {data_dir}`"
    )


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/server/state.lock`` (released on close or
    when the process dies, so a crash never leaves it stale)."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        directory = server_dir(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StoreError(
                f"{self.path} is held by another process (a server running on {data_dir}?): "
                f"stop it before {holder}",
                path=str(self.path),
                cause="locked",
            ) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_cluster_id(data_dir: Path) -> str | None:
    try:
        text = (server_dir(data_dir) / CLUSTER_ID_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def write_cluster_id(data_dir: Path, cluster_id: str) -> None:
    """Write ``cluster-id`` atomically and durably (a temporary file, fsync, rename)."""
    directory = server_dir(data_dir)
    tmp = directory / f".{CLUSTER_ID_FILE}.tmp"
    with open(tmp, "w") as f:
        f.write(cluster_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / CLUSTER_ID_FILE)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _had_cluster(data_dir: Path) -> str | None:
    """Why the data dir says a cluster existed here: its cluster-id file (or, for a data
    dir from before that file, the server keyring every first start writes); None: no
    sign of one."""
    cluster_id = read_cluster_id(data_dir)
    if cluster_id is not None:
        return f"cluster {cluster_id} ({server_dir(data_dir) / CLUSTER_ID_FILE})"
    keyring = server_dir(data_dir) / "keyring"
    if keyring.is_dir() and any(keyring.iterdir()):
        return f"a cluster ({keyring} holds its keys)"
    return None


def _empty_refusal(data_dir: Path, path: Path, what: str, had: str) -> StoreDamaged:
    return StoreDamaged(
        f"{path} is {what}, but this data dir held {had}: starting would forget every job "
        f"and stop the allocations agents still run; {recovery(data_dir)}",
        path=str(path),
        cause=what,
    )


def open_store(data_dir: Path) -> tuple[StateStore, DataDirLock]:
    """The server's store, checked; raises StoreDamaged (one line) or StoreError (held
    by another process).  Close the store, then the lock."""
    data_dir = data_dir.absolute()
    lock = DataDirLock(data_dir, "starting this server")
    try:
        return _open(data_dir), lock
    except BaseException:
        lock.close()
        raise


def _open(data_dir: Path, *, assign_id: bool = True) -> StateStore:
    """The checked store.  ``assign_id``: a store without a cluster id gets one (and
    ``cluster-id`` is written beside it), as a server's start does; without it nothing
    is written (a migration reads the store and leaves it as it was)."""
    path = store_path(data_dir)
    had = _had_cluster(data_dir)
    if had is not None and (not path.exists() or path.stat().st_size == 0):
        return_what = "missing" if not path.exists() else "empty (0 bytes)"
        raise _empty_refusal(data_dir, path, return_what, had)
    try:
        backend = SqliteBackend(path)
    except StoreDamaged as exc:
        raise _damaged(data_dir, path, exc) from None
    try:
        backend.check()
        store = StateStore(backend)
        cluster_id = backend.cluster_id()
        marker = read_cluster_id(data_dir)
        if cluster_id is None:
            if store.index == 0 and had is not None:
                raise _empty_refusal(data_dir, path, "empty (no cluster in it)", had)
            if not assign_id:
                return store
            cluster_id = marker or str(uuid.uuid4())
            backend.set_cluster_id(cluster_id)
        elif marker is not None and marker != cluster_id:
            raise StoreDamaged(
                f"{path} belongs to cluster {cluster_id}, but this data dir held cluster "
                f"{marker}: {recovery(data_dir)}",
                path=str(path),
                cause="cluster id mismatch",
            )
        if marker != cluster_id and assign_id:
            write_cluster_id(data_dir, cluster_id)
    except StoreDamaged as exc:
        backend.close()
        if exc.path:  # already one line with the recovery
            raise
        raise _damaged(data_dir, path, exc) from None
    except BaseException:
        backend.close()
        raise
    return store


def require_store(data_dir: Path) -> Path:
    """The store file of ``data_dir``; StoreError when there is none (check before taking
    the lock: :class:`DataDirLock` creates ``server/`` in a data dir that has none)."""
    path = store_path(data_dir)
    if not path.is_file():
        raise StoreError(
            f"there is no Podium store at {path} (is {data_dir} a server's --data-dir?)",
            path=str(path),
            cause="no store",
        )
    return path


@dataclass
class StoreRows:
    """A stopped server's store as its rows (what ``podium operator migrate`` moves)."""

    index: int
    rows: list[Row]
    cluster_id: str | None
    """The store's own, else the data dir's ``cluster-id``; None: neither names one."""


def read_store(data_dir: Path) -> StoreRows:
    """The rows of the store at ``data_dir``, refused as a server's start refuses it (a
    damaged store, an empty one where a cluster was: the same one line) and changed in
    nothing.  The caller holds the data dir's :class:`DataDirLock`.  A data dir with no
    store file is refused rather than opened (opening would create an empty store)."""
    data_dir = data_dir.absolute()
    require_store(data_dir)
    store = _open(data_dir, assign_id=False)
    try:
        backend = store.backend
        index, rows = backend.load()
        return StoreRows(index, list(rows), backend.cluster_id() or read_cluster_id(data_dir))
    finally:
        store.close()


def _damaged(data_dir: Path, path: Path, exc: StoreError) -> StoreDamaged:
    cause = (exc.cause or str(exc)).replace("\n", " ")
    return StoreDamaged(
        f"{path} is damaged ({cause}); {recovery(data_dir)}", path=str(path), cause=cause
    )


def move_aside(path: Path, suffix: str) -> Path | None:
    """Rename ``path`` and its WAL to ``<name>.<suffix>-<time>`` (the WAL keeps its name
    beside it, so the pair still opens); drop its shared-memory file.  None: no file."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{suffix}-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.{suffix}-{stamp}.{n}")
        n += 1
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        os.replace(wal, aside.with_name(aside.name + "-wal"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path.with_name(path.name + "-shm"))
    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside


def reset_store(data_dir: Path) -> Path | None:
    """Move the store aside and put a new, empty one (a new cluster id) in its place, so
    the next start serves a new, empty cluster.  Refused while a server holds the data dir.  Returns where the old
    store went (None: there was none)."""
    data_dir = data_dir.absolute()
    lock = DataDirLock(data_dir, "resetting its store")
    try:
        aside = move_aside(store_path(data_dir), "reset")
        # a new, empty store with a new cluster id, recorded beside it: the next start
        # opens it as it is (the keyring, kept, must not read as a lost cluster)
        backend = SqliteBackend(store_path(data_dir))
        try:
            cluster_id = str(uuid.uuid4())
            backend.set_cluster_id(cluster_id)
        finally:
            backend.close()
        write_cluster_id(data_dir, cluster_id)
        return aside
    finally:
        lock.close()


def open_etcd_store(
    data_dir: Path, endpoints: list[str], cluster: str
) -> tuple[StateStore, EtcdBackend, DataDirLock]:
    """A server's store on etcd (``podium server --etcd``): the state is etcd's, loaded
    into memory; the data dir keeps what is this server's own (its keyring, TLS, audit
    log) under its lock, and the cluster's id in ``cluster-id``, so that the same data dir
    is never started on another cluster, nor later without ``--etcd`` as if it were new.

    The first server on an empty etcd names the cluster (one guarded transaction: two
    servers starting at once agree on one id)."""
    data_dir = data_dir.absolute()
    lock = DataDirLock(data_dir, "starting this server")
    try:
        backend = EtcdBackend(endpoints, cluster=cluster)
        try:
            marker = read_cluster_id(data_dir)
            if marker is not None and backend.cluster_id() is None:
                raise StoreDamaged(
                    f"etcd cluster {cluster!r} at {', '.join(endpoints)} holds no Podium "
                    f"cluster, but this data dir served cluster {marker} there (etcd's data "
                    "lost or wiped? a wrong --etcd or --etcd-cluster?): restore a snapshot "
                    "with `podium operator snapshot restore FILE --etcd URLS`, or give this "
                    "server a new data dir to start a new, empty cluster",
                    path=str(server_dir(data_dir) / CLUSTER_ID_FILE),
                    cause="cluster missing from etcd",
                )
            cluster_id = _etcd_cluster_id(backend, marker)
            if marker is not None and marker != cluster_id:
                raise StoreDamaged(
                    f"etcd cluster {cluster!r} at {', '.join(endpoints)} is Podium cluster "
                    f"{cluster_id}, but {server_dir(data_dir) / CLUSTER_ID_FILE} says this data "
                    f"dir served cluster {marker}: give this server a data dir of its own "
                    "for that cluster, or the --etcd-cluster it served",
                    path=str(server_dir(data_dir) / CLUSTER_ID_FILE),
                    cause="cluster id mismatch",
                )
            store = StateStore(backend)
            if marker != cluster_id:
                write_cluster_id(data_dir, cluster_id)
        except BaseException:
            backend.close()
            raise
        return store, backend, lock
    except BaseException:
        lock.close()
        raise


def _etcd_cluster_id(backend: EtcdBackend, proposed: str | None) -> str:
    key = backend.prefix + "cluster_id"
    result = backend.client.txn(
        [compare(key, "CREATE", 0)],
        [put(key, proposed or str(uuid.uuid4()))],
        [get(key)],
    )
    if result.succeeded:
        _, found, _ = backend.client.range(key)
    else:
        found = result.kvs(0)
    if not found:
        raise StoreError(f"etcd lost {key} as it was written; start again")
    return found[0].value.decode()
