"""The embedded SQLite backend: one file, WAL, fsync on every commit.

``synchronous=FULL`` in WAL mode makes a commit durable before it returns, so
an acknowledged write survives kill -9 of the server and a power cut alike.
One transaction per store commit: a plan of 1,000 allocations is one fsync.

Checkpoints (copying the WAL back into the database file) run on a thread of
their own, not inside whichever commit crosses SQLite's 1,000-page mark: the
commit path runs on the server's event loop, and a checkpoint there stalled
every request behind it (a 1,000-allocation plan: 21 ms median with inline
checkpoints, 14 ms without).  The WAL holds every committed transaction until
then, so durability is the same; a crash leaves a longer WAL to replay.

PASSIVE checkpoints alone let the WAL grow without bound: they never wait, so under
sustained writes (or while a reader holds an old snapshot) the WAL is never wholly
copied back, SQLite never rewinds it, and the file only grows.  So every
``truncate_every`` intervals, and whenever the WAL has grown past ``wal_limit``, the
checkpointer runs a TRUNCATE checkpoint with a short busy timeout (it may hold the
writer for the copy of what PASSIVE left, a few milliseconds; if a reader holds it, it
gives up and tries again later), and ``journal_size_limit`` shrinks the WAL whenever
SQLite rewinds it.

A failed write (a full disk, an I/O error) raises :class:`~podium.state.errors.StoreFull`
or :class:`~podium.state.errors.StoreError` with SQLite's own message: SQLite may already
have rolled the transaction back, so the ROLLBACK here is only tried when a transaction
is still open, and its failure never hides the first error.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from podium.state.backend import Row
from podium.state.errors import StoreDamaged, StoreError, StoreFull

log = logging.getLogger("podium.state")

CHECKPOINT_INTERVAL = 1.0
"""Seconds between background checkpoints."""
TRUNCATE_EVERY = 30
"""Every this many checkpoint intervals, a TRUNCATE checkpoint (else PASSIVE)."""
WAL_LIMIT = 64 * 1024 * 1024
"""A WAL larger than this is truncated at the next interval, not the 30th."""
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""What SQLite shrinks the WAL to whenever it rewinds it (after a complete checkpoint)."""
TRUNCATE_BUSY_MS = 200
"""How long a TRUNCATE checkpoint waits for the writer and readers before it gives up."""

OBJECTS = """
CREATE TABLE IF NOT EXISTS {name} (
    tbl   TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
);
"""
"""A rowid table with a (tbl, key) index, not a WITHOUT ROWID one: the values are
~1 KB JSON documents (an allocation), and SQLite's own advice is that WITHOUT ROWID
suits rows under ~1/20 of a page.  Measured with 100,000 allocations stored: a plan
of 1,000 new allocations took 58 ms to insert in the clustered table and 21 ms in
this one; updating 200 random ones, 4.1 vs 4.2 ms (bench/store_sqlite.py measures both
layouts, checkpointing included)."""

SCHEMA = (
    OBJECTS.format(name="objects")
    + """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
)
"""``meta`` holds the last committed index; ``info`` the cluster id (text)."""


def store_error(path: Path, doing: str, exc: sqlite3.Error) -> StoreError:
    """SQLite's error as the store's: StoreFull for a full disk (SQLITE_FULL), else
    StoreError; the message names the file and carries SQLite's own words."""
    cause = str(exc) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", None)
    full = code == sqlite3.SQLITE_FULL or "disk is full" in cause
    kind = StoreFull if full else StoreError
    return kind(f"{doing} {path} failed: {cause}", path=str(path), cause=cause)


class SqliteBackend:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        checkpoint_interval: float | None = None,
        truncate_every: int | None = None,
        wal_limit: int | None = None,
    ) -> None:
        """The checkpointer's settings default to the module's constants (read now)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._interval = CHECKPOINT_INTERVAL if checkpoint_interval is None else checkpoint_interval
        self._truncate_every = max(1, TRUNCATE_EVERY if truncate_every is None else truncate_every)
        self._wal_limit = WAL_LIMIT if wal_limit is None else wal_limit
        self.checkpoints = {"passive": 0, "truncate": 0, "truncate_busy": 0}
        """How many checkpoints ran, by kind (read by tests and the bench)."""
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreDamaged(
                f"{self.path}: cannot open: {exc}", path=str(self.path), cause=str(exc)
            ) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            self._migrate_clustered()
            self._db.executescript(SCHEMA)
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreDamaged(
                f"{self.path} is not a readable Podium store: {exc}",
                path=str(self.path),
                cause=str(exc),
            ) from exc
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def wal_size(self) -> int:
        """The WAL file's size in bytes (0 when there is none)."""
        try:
            return self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            return 0

    def _checkpoint_loop(self) -> None:
        """Checkpoints on a connection of this thread's own (SQLite releases the GIL while
        it copies and syncs): PASSIVE ones never wait for or block the writer; a TRUNCATE
        one now and then (or when the WAL outgrew its limit) rewinds and empties the WAL."""
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        ticks = 0
        try:
            db.execute(f"PRAGMA busy_timeout={TRUNCATE_BUSY_MS}")
            while not self._closing.wait(self._interval):
                ticks += 1
                truncate = ticks % self._truncate_every == 0 or self.wal_size() > self._wal_limit
                try:
                    if truncate:
                        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                        self.checkpoints["truncate_busy" if busy else "truncate"] += 1
                    else:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.checkpoints["passive"] += 1
                except sqlite3.Error as exc:  # retried at the next interval
                    log.warning("background checkpoint of %s failed: %s", self.path, exc)
        finally:
            db.close()

    def _migrate_clustered(self) -> None:
        """A store written by an earlier Podium keeps its objects in a WITHOUT ROWID
        table: copy them into the rowid table, in one transaction (all or nothing)."""
        db = self._db
        row = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='objects'")
        found = row.fetchone()
        if found is None or "WITHOUT ROWID" not in str(found[0]).upper():
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DROP TABLE IF EXISTS objects_rowid")
            db.execute(OBJECTS.format(name="objects_rowid"))
            db.execute("INSERT INTO objects_rowid SELECT tbl, key, value FROM objects")
            db.execute("DROP TABLE objects")
            db.execute("ALTER TABLE objects_rowid RENAME TO objects")
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def check(self) -> None:
        """Raise StoreDamaged unless SQLite finds the file sound (``quick_check``: every
        page and index readable; O(size), ~1 s per GB, once at start-up)."""
        try:
            found = [str(r[0]) for r in self._db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            found = [str(exc)]
        if found != ["ok"]:
            raise StoreDamaged(
                f"{self.path} is damaged: {'; '.join(found[:3])}",
                path=str(self.path),
                cause="; ".join(found[:3]),
            )

    def load(self) -> tuple[int, Iterable[Row]]:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='index'").fetchone()
            index = int(row[0]) if row else 0
            rows = self._db.execute("SELECT tbl, key, value FROM objects").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(
                f"{self.path} is damaged: {exc}", path=str(self.path), cause=str(exc)
            ) from exc
        return index, [(str(t), str(k), bytes(v)) for t, k, v in rows]

    def cluster_id(self) -> str | None:
        """The cluster this store belongs to (None: a store from before cluster ids)."""
        row = self._db.execute("SELECT value FROM info WHERE key='cluster_id'").fetchone()
        return str(row[0]) if row else None

    def set_cluster_id(self, cluster_id: str) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO info(key, value) VALUES ('cluster_id', ?)", (cluster_id,)
            )
        except sqlite3.Error as exc:
            raise store_error(self.path, "writing the cluster id to", exc) from exc

    def snapshot(self, dest: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the store to ``dest`` (a SQLite file: the snapshot
        format, see podium.state.snapshot).  Blocking: call it on a thread.  It reads
        through a connection of its own in one step (one read transaction), so it sees
        one committed index while the writer goes on (WAL)."""
        src = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        dst = sqlite3.connect(str(dest), isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            raise store_error(self.path, "a snapshot of", exc) from exc
        finally:
            dst.close()
            src.close()

    def commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        try:
            self._commit(index, puts, deletes)
        except sqlite3.Error as exc:
            raise store_error(self.path, "writing", exc) from exc

    def _commit(
        self, index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, rows in puts.items():
                db.executemany(
                    "INSERT OR REPLACE INTO objects(tbl, key, value) VALUES (?, ?, ?)",
                    [(table, key, value) for key, value in rows],
                )
            for table, keys in deletes.items():
                db.executemany(
                    "DELETE FROM objects WHERE tbl=? AND key=?", [(table, k) for k in keys]
                )
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('index', ?)", (index,))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Roll back what is still open: SQLite rolls back by itself on some errors (a
        full disk), and a ROLLBACK then fails ("no transaction is active")."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback on %s failed: %s", self.path, exc)

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join()
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # the WAL stays; the next open replays it
            log.warning("final checkpoint of %s failed: %s", self.path, exc)
        self._db.close()
