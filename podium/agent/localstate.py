"""The agent's own small SQLite file: what it runs, so a restarted agent can resume.

Per allocation: the allocation and job spec last seen from the server, the
state machine's state, and the driver handles of its tasks; and the uid each
allocation's ``exec`` tasks run as (``uid_leases``, see ``podium.drivers.uids``).  WAL with
``synchronous=NORMAL``: durable across kill -9 of the agent (a process crash),
which is what re-attaching needs; many updates are batched per transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS allocs (
    id       TEXT PRIMARY KEY,
    alloc    TEXT NOT NULL,
    spec     TEXT NOT NULL,
    machine  TEXT NOT NULL,
    handles  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS uid_leases (
    alloc_id TEXT PRIMARY KEY,
    uid      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


CACHE_KIB = 256
"""SQLite's page cache for this file, in KiB (its default is 2,000)."""


@dataclass
class StoredAlloc:
    id: str
    alloc: str
    spec: str
    machine: dict[str, Any]
    handles: dict[str, dict[str, Any]]


class LocalState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The agent writes rows by key and reads them all back only at start-up: SQLite's
        # default page cache (up to 2 MB) would mostly hold pages it never reads again.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.executescript(SCHEMA)

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))

    def load(self) -> list[StoredAlloc]:
        rows = self._db.execute("SELECT id, alloc, spec, machine, handles FROM allocs").fetchall()
        return [StoredAlloc(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4])) for r in rows]

    def save_many(self, items: list[StoredAlloc]) -> None:
        if not items:
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO allocs(id, alloc, spec, machine, handles) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (i.id, i.alloc, i.spec, json.dumps(i.machine), json.dumps(i.handles))
                    for i in items
                ],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def delete(self, alloc_id: str) -> None:
        self._db.execute("DELETE FROM allocs WHERE id=?", (alloc_id,))

    def uid_leases(self) -> dict[str, int]:
        """Allocation id -> the uid its exec tasks run as."""
        rows = self._db.execute("SELECT alloc_id, uid FROM uid_leases").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def set_uid_lease(self, alloc_id: str, uid: int | None) -> None:
        """Record a lease (committed when this returns), or remove it (``uid`` None)."""
        if uid is None:
            self._db.execute("DELETE FROM uid_leases WHERE alloc_id=?", (alloc_id,))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO uid_leases(alloc_id, uid) VALUES (?, ?)", (alloc_id, uid)
            )

    def close(self) -> None:
        self._db.close()
