"""Benchmark: the SQLite store's commit times, by table layout and checkpointing.

    python bench/store_sqlite.py [--stored 100000] [--commits 20]

Through ``podium.state.sqlite.SqliteBackend`` (the rowid objects table and the
background checkpointer) and, beside it, the layout it replaced: the same table
as WITHOUT ROWID with SQLite's inline auto-checkpoint.  Each starts from STORED
allocations of ~900 bytes (random UUID keys, as placements have), then times the
two writes a placement costs the store: a plan of 1,000 new allocations and a
batch of 200 reports (updates of random stored allocations).  Medians, and the
ratio old/new.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from podium.state.sqlite import SqliteBackend

VALUE = b"x" * 900
OLD_SCHEMA = """
CREATE TABLE objects (tbl TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                      PRIMARY KEY (tbl, key)) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

Commit = Callable[[int, list[tuple[str, bytes]]], None]


def old_layout(path: Path) -> Commit:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(OLD_SCHEMA)

    def commit(index: int, rows: list[tuple[str, bytes]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT OR REPLACE INTO objects(tbl, key, value) VALUES ('allocs', ?, ?)", rows
        )
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('index', ?)", (index,))
        db.execute("COMMIT")

    return commit


def new_layout(path: Path) -> Commit:
    backend = SqliteBackend(path)

    def commit(index: int, rows: list[tuple[str, bytes]]) -> None:
        backend.commit(index, {"allocs": rows}, {})

    return commit


def run(commit: Commit, stored: int, commits: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    keys: list[str] = []
    index = 0
    for _ in range(stored // 1000):
        rows = [(str(uuid.uuid4()), VALUE) for _ in range(1000)]
        keys += [k for k, _ in rows]
        index += 1
        commit(index, rows)
    plans, reports = [], []
    for _ in range(commits):
        rows = [(str(uuid.uuid4()), VALUE) for _ in range(1000)]
        index += 1
        started = time.perf_counter()
        commit(index, rows)
        plans.append(time.perf_counter() - started)
        updates = [(k, VALUE) for k in rng.sample(keys, 200)]
        index += 1
        started = time.perf_counter()
        commit(index, updates)
        reports.append(time.perf_counter() - started)
    return statistics.median(plans) * 1e3, statistics.median(reports) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = run(old_layout(Path(tmp) / "old.db"), args.stored, args.commits, 1)
        new = run(new_layout(Path(tmp) / "new.db"), args.stored, args.commits, 1)
    print(f"{args.stored:,} allocations stored; medians of {args.commits} commits")
    print(f"{'layout':<44} {'1,000-allocation plan':>22} {'200 reports':>12}")
    print(
        f"{'WITHOUT ROWID, inline checkpoints (before)':<44} {old[0]:>19.1f} ms {old[1]:>9.1f} ms"
    )
    print(f"{'rowid + background checkpoints (now)':<44} {new[0]:>19.1f} ms {new[1]:>9.1f} ms")
    print(f"{'before / now':<44} {old[0] / new[0]:>21.2f}x {old[1] / new[1]:>11.2f}x")


if __name__ == "__main__":
    main()
