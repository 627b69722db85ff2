"""The embedded SQLite backend: one file, WAL, fsync on every commit.

``synchronous=FULL`` in WAL mode makes a commit durable before it returns, so
an acknowledged write survives kill -9 of the server and a power cut alike.
One transaction per store commit: a plan of 1,000 allocations is one fsync.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from podium.state.backend import Row

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    tbl   TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SqliteBackend:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def load(self) -> tuple[int, Iterable[Row]]:
        row = self._db.execute("SELECT value FROM meta WHERE key='index'").fetchone()
        index = int(row[0]) if row else 0
        rows = self._db.execute("SELECT tbl, key, value FROM objects").fetchall()
        return index, [(str(t), str(k), bytes(v)) for t, k, v in rows]

    def commit(
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
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
