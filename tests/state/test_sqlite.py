"""The SQLite backend's file format: rowid objects table, and stores written before it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from podium.state.sqlite import SqliteBackend

OLD_SCHEMA = """
CREATE TABLE objects (
    tbl   TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _objects_sql(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("SELECT sql FROM sqlite_master WHERE name='objects'").fetchone()[0])
    finally:
        db.close()


def test_a_store_from_an_earlier_version_keeps_every_object(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    rows = [("allocs", f"a{i}", f'{{"id": "a{i}"}}'.encode()) for i in range(500)]
    rows.append(("jobs", "default/web", b'{"id": "web"}'))
    db.executemany("INSERT INTO objects VALUES (?, ?, ?)", rows)
    db.execute("INSERT INTO meta VALUES ('index', 42)")
    db.commit()
    db.close()

    backend = SqliteBackend(path)
    index, loaded = backend.load()
    assert index == 42
    assert sorted(loaded) == sorted(rows)
    # writes keep working on the migrated table: replace one, add one, delete one
    backend.commit(43, {"allocs": [("a1", b"new"), ("b1", b"x")]}, {"allocs": ["a2"]})
    backend.close()
    assert "WITHOUT ROWID" not in _objects_sql(path).upper()

    again = SqliteBackend(path)  # and a second open leaves it as it is
    index, loaded = again.load()
    again.close()
    got = {(t, k): v for t, k, v in loaded}
    assert index == 43 and len(got) == len(rows) + 1 - 1
    assert got[("allocs", "a1")] == b"new" and got[("allocs", "b1")] == b"x"
    assert ("allocs", "a2") not in got


def test_a_new_store_uses_the_rowid_table(tmp_path: Path) -> None:
    SqliteBackend(tmp_path / "s.db").close()
    assert "WITHOUT ROWID" not in _objects_sql(tmp_path / "s.db").upper()


def test_checkpoints_run_in_the_background_and_at_close(tmp_path: Path) -> None:
    """No commit checkpoints inline; the checkpointer thread copies the WAL into the
    database file within a few intervals, and close() leaves no WAL behind."""

    path = tmp_path / "s.db"
    backend = SqliteBackend(path)
    before = path.stat().st_size
    rows = [(f"a{i}", b"x" * 900) for i in range(2000)]
    backend.commit(1, {"allocs": rows}, {})
    deadline = time.monotonic() + 20  # poll for the whole copy: it may land in steps
    while path.stat().st_size <= before + 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size > before + 1_000_000, "nothing was checkpointed"
    backend.commit(2, {"allocs": [("b", b"y")]}, {})
    backend.close()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    again = SqliteBackend(path)
    index, loaded = again.load()
    again.close()
    assert index == 2 and len(loaded) == 2001
