"""Store snapshots: the one format, how one is checked, and how one is restored.

The format is a SQLite file (journal mode DELETE: one self-contained file) with the
store's tables: ``objects(tbl, key, value)`` (JSON rows), ``meta`` (``index``: the
committed index it was taken at) and ``info`` (``cluster_id``).  Every backend writes
this format (``Backend.snapshot``: SQLite through its online backup API; an etcd
backend would write its rows into such a file), so one ``restore`` serves them all.

``verify`` trusts nothing in the file: SQLite's ``integrity_check``, the tables and
their columns, a non-negative index no stored object is newer than, known tables only,
and every row parsed by the store's own loader (a store is built from it in memory).
``restore`` verifies the snapshot, then a copy of it beside the store, before anything
is replaced; the store it replaces is kept beside it (``state.db.replaced-<time>``).
It works on a stopped server's data dir: the server's ``state.lock`` is taken, so a
running server makes it refuse (an online restore would have to swap the tables under
the API, the broker and every agent's sync at once; stopping is simpler and safe).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from podium.state.backend import Row
from podium.state.datadir import (
    DataDirLock,
    fsync_dir,
    move_aside,
    read_cluster_id,
    server_dir,
    store_path,
    write_cluster_id,
)
from podium.state.errors import StoreDamaged, StoreError
from podium.state.store import StateStore

SQLITE_MAGIC = b"SQLite format 3\x00"
COLUMNS = {
    "objects": ["tbl", "key", "value"],
    "meta": ["key", "value"],
    "info": ["key", "value"],
}


@dataclass
class SnapshotInfo:
    """What a verified snapshot holds."""

    index: int
    cluster_id: str | None
    objects: dict[str, int] = field(default_factory=dict)
    """Rows per table."""
    size: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "cluster_id": self.cluster_id,
            "objects": dict(self.objects),
            "size": self.size,
        }


class _Rows:
    """A read-only backend over rows already read (the store's loader parses them)."""

    def __init__(self, index: int, rows: list[Row]) -> None:
        self._index = index
        self._rows = rows

    def load(self) -> tuple[int, Iterable[Row]]:
        return self._index, self._rows

    def commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        raise StoreError("a snapshot being verified is read-only")

    def close(self) -> None:
        return None

    def cluster_id(self) -> str | None:
        return None

    def set_cluster_id(self, cluster_id: str) -> None:
        raise StoreError("a snapshot being verified is read-only")

    def snapshot(self, dest: str | os.PathLike[str]) -> None:
        raise StoreError("a snapshot being verified is read-only")


def _bad(path: Path, why: str) -> StoreDamaged:
    return StoreDamaged(f"{path} is not a valid Podium snapshot: {why}", path=str(path), cause=why)


def verify(path: str | os.PathLike[str], *, deep: bool = True) -> SnapshotInfo:
    """Check a snapshot file without changing it; raise StoreDamaged (saying what is
    wrong) unless it is sound.  ``deep=False`` skips parsing every row (the server's own
    check of what it is about to send: no second copy of the state in memory)."""
    return _verified(Path(path), deep)[0]


def read(path: str | os.PathLike[str]) -> tuple[SnapshotInfo, list[Row]]:
    """:func:`verify` (deep), and the rows it checked: what a restore into etcd installs
    (podium.state.etcd_admin)."""
    return _verified(Path(path), True)


def _verified(path: Path, deep: bool) -> tuple[SnapshotInfo, list[Row]]:
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        size = path.stat().st_size
    except OSError as exc:
        raise _bad(path, f"cannot read it: {exc.strerror or exc}") from None
    if head != SQLITE_MAGIC:
        raise _bad(path, "not a SQLite file" if size else "the file is empty")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise _bad(path, str(exc)) from None
    try:
        try:
            check = [str(r[0]) for r in db.execute("PRAGMA integrity_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            check = [str(exc)]
        if check != ["ok"]:
            raise _bad(path, "integrity check: " + "; ".join(check[:3]))
        for table, columns in COLUMNS.items():
            found = [str(r[1]) for r in db.execute(f"PRAGMA table_info({table})").fetchall()]
            if found != columns:
                raise _bad(path, f"table {table} has columns {found}, expected {columns}")
        try:
            row = db.execute("SELECT value FROM meta WHERE key='index'").fetchone()
            info = db.execute("SELECT value FROM info WHERE key='cluster_id'").fetchone()
            rows = [
                (str(t), str(k), bytes(v))
                for t, k, v in db.execute("SELECT tbl, key, value FROM objects").fetchall()
            ]
        except (sqlite3.Error, TypeError, ValueError) as exc:
            raise _bad(path, f"unreadable rows: {exc}") from None
    finally:
        db.close()
    if row is not None and (not isinstance(row[0], int) or row[0] < 0):
        raise _bad(path, f"the committed index in table meta is {row[0]!r}")
    index = int(row[0]) if row is not None else 0  # a store never written to
    if rows and index == 0:
        raise _bad(path, f"{len(rows)} objects but committed index 0")
    counts: dict[str, int] = {}
    for table, _, _ in rows:
        counts[table] = counts.get(table, 0) + 1
    cluster_id = str(info[0]) if info is not None else None
    held = SnapshotInfo(index=index, cluster_id=cluster_id, objects=counts, size=size)
    if not deep:
        return held, rows
    try:
        store = StateStore(_Rows(index, rows))
    except StoreDamaged as exc:
        raise _bad(path, str(exc)) from None
    newest = max((getattr(o, "modify_index", 0) for o in _objects(store)), default=0)
    if newest > index:
        raise _bad(path, f"an object was written at index {newest}, after the snapshot's {index}")
    return held, rows


def _objects(store: StateStore) -> Iterable[object]:
    yield from store.jobs()
    yield from store.allocs()
    yield from store.nodes()
    yield from store.evaluations()
    yield from store.deployments()


def restore(snapshot: str | os.PathLike[str], data_dir: Path) -> tuple[SnapshotInfo, Path | None]:
    """Verify ``snapshot`` and make it the store of the (stopped) server at ``data_dir``.

    Returns what it holds and where the replaced store was kept.  Nothing is changed
    unless the snapshot, and the copy of it made beside the store, both verify."""
    info = verify(snapshot)
    data_dir = data_dir.absolute()
    lock = DataDirLock(data_dir, "restoring a snapshot into it")
    try:
        directory = server_dir(data_dir)
        staged = directory / ".state.db.restoring"
        try:
            shutil.copyfile(snapshot, staged)
            with open(staged, "rb+") as f:
                os.fsync(f.fileno())
            copied = verify(staged)
            if copied.index != info.index:
                raise StoreError(f"the copy of {snapshot} at {staged} differs from it")
            db = store_path(data_dir)
            aside = move_aside(db, "replaced")
            os.replace(staged, db)
            fsync_dir(directory)
        except OSError as exc:
            raise StoreError(
                f"cannot restore into {directory}: {exc.strerror or exc}", path=str(directory)
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
        cluster_id = info.cluster_id or read_cluster_id(data_dir)
        if cluster_id is not None and cluster_id != read_cluster_id(data_dir):
            write_cluster_id(data_dir, cluster_id)
        return info, aside
    finally:
        lock.close()
