"""The SQLite store under a failing disk: a full disk is a clear error that changes
nothing (on disk or in memory) and heals, and the WAL cannot grow without bound.

The full disk here is SQLite's own SQLITE_FULL, reached through ``max_page_count`` on
a real file (tests/server/test_store_process.py fills a real tmpfs instead)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from podium.models import Evaluation, TriggeredBy
from podium.state import SqliteBackend, StateStore
from podium.state import sqlite as sqlite_mod
from podium.state.errors import StoreError, StoreFull


def _limit_pages(backend: SqliteBackend, pages: int) -> None:
    backend._db.execute(f"PRAGMA max_page_count={pages}")


def _pages(backend: SqliteBackend) -> int:
    return int(backend._db.execute("PRAGMA page_count").fetchone()[0])


def test_a_full_disk_raises_store_full_with_sqlites_cause_and_heals(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "state.db")
    try:
        backend.commit(1, {"allocs": [("a", b"x" * 100)]}, {})
        _limit_pages(backend, _pages(backend))
        big = [(f"b{i}", b"y" * 4000) for i in range(50)]
        with pytest.raises(StoreFull) as err:
            backend.commit(2, {"allocs": big}, {})
        # the first error, not a failed ROLLBACK's "no transaction is active"
        assert "database or disk is full" in str(err.value)
        assert str(tmp_path / "state.db") in str(err.value)
        assert not backend._db.in_transaction
        _limit_pages(backend, 1_000_000)  # room again: the same connection writes
        backend.commit(2, {"allocs": big}, {})
        index, rows = backend.load()
        assert index == 2 and len(list(rows)) == 51
    finally:
        backend.close()


def test_a_failed_commit_leaves_memory_as_it_was_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    backend = store.backend
    assert isinstance(backend, SqliteBackend)
    try:
        txn = store.txn()
        txn.put_eval(
            Evaluation(
                id="e1", job_id="web", triggered_by=TriggeredBy.JOB_REGISTER, create_index=txn.index
            )
        )
        store.commit(txn)
        _limit_pages(backend, _pages(backend))
        txn = store.txn()
        for i in range(40):
            txn.put_eval(
                Evaluation(
                    id=f"big{i}",
                    job_id="x" * 3000,
                    triggered_by=TriggeredBy.JOB_REGISTER,
                    create_index=txn.index,
                ),
            )
        with pytest.raises(StoreError):
            store.commit(txn)
        assert store.index == 1
        assert [e.id for e in store.evaluations()] == ["e1"]
        assert store.evals_by_job("x" * 3000) == []
        _limit_pages(backend, 1_000_000)
        txn = store.txn()  # built again at the same index: nothing moved
        assert txn.index == 2
        txn.put_eval(
            Evaluation(
                id="e2", job_id="web", triggered_by=TriggeredBy.JOB_REGISTER, create_index=txn.index
            )
        )
        assert store.commit(txn) == 2
    finally:
        store.close()
    again = StateStore(SqliteBackend(tmp_path / "state.db"))
    try:  # the disk holds exactly what memory held
        assert again.index == 2
        assert sorted(e.id for e in again.evaluations()) == ["e1", "e2"]
    finally:
        again.close()


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_wal_is_truncated_after_a_reader_let_it_grow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader holding an old snapshot stops every checkpoint while writes go on, so the
    WAL grows; PASSIVE checkpoints alone leave the file at that size for good once the
    reader has gone.  TRUNCATE checkpoints bring it back to (almost) nothing."""
    monkeypatch.setattr(sqlite_mod, "CHECKPOINT_INTERVAL", 0.05)
    monkeypatch.setattr(sqlite_mod, "TRUNCATE_EVERY", 4, raising=False)
    path = tmp_path / "state.db"
    backend = SqliteBackend(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        index = 0
        row = b"z" * 900

        def write(n: int) -> None:
            nonlocal index
            for _ in range(n):
                index += 1
                backend.commit(index, {"allocs": [(f"a{index % 500}", row)] * 1}, {})

        write(10)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM objects").fetchone()  # holds its snapshot
        write(3000)
        grown = _wal(path)
        assert grown > 2_000_000, grown
        reader.execute("COMMIT")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # writes go on, as on a busy server
            write(5)
            if _wal(path) < grown // 10:
                break
            time.sleep(0.02)
        assert _wal(path) < grown // 10, (grown, _wal(path), getattr(backend, "checkpoints", {}))
    finally:
        reader.close()
        backend.close()
