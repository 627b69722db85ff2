"""Benchmark: the store on etcd beside etcd's own write floor and the SQLite store.

    python bench/etcd_store.py [--commits 200] [--plans 20]

One etcd member on loopback (Debian's /usr/bin/etcd), its data dir on disk (ext4) and then
on tmpfs (/dev/shm: no fsync cost, what is left is etcd and the HTTP path).  On each:

- etcd's floor: a loop of single-key puts, of one-compare txns (the shape of a Podium
  commit), and of 100 KB puts (what a 1,000-allocation plan compresses to), through the
  JSON gateway on one keep-alive connection;
- EtcdBackend.commit of a 1-row transaction, and of a plan of 1,000 ~900-byte allocations
  (random ids, as real ones have: they decide how well a plan compresses);
- SqliteBackend.commit of the same two, its file on the same file system.

Medians and p90 in milliseconds; the ratio to etcd's put floor in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from podium.state.etcd import EtcdBackend
from podium.state.etcd_client import b64
from podium.state.etcd_member import EtcdCluster
from podium.state.sqlite import SqliteBackend

Puts = dict[str, list[tuple[str, bytes]]]


def plan(seed: int, n: int = 1000) -> Puts:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3)]
        body = {"id": ids[0], "eval_id": ids[1], "node_id": ids[2], "name": f"web.g[{i}]"}
        rows.append((ids[0], json.dumps({**body, "pad": "x" * 760}).encode()))
    return {"allocs": rows}


def timed(n: int, step: Callable[[int], None]) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        step(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def stats(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[int(len(ms) * 0.9)]


def measure(where: str, root: Path, commits: int, plans: int) -> dict[str, list[float]]:
    cluster = EtcdCluster.start(1, root / "etcd")
    out: dict[str, list[float]] = {}
    try:
        url = cluster.endpoints[0]
        with httpx.Client(trust_env=False) as http:
            value = b64(b"x" * 100)

            def raw_put(i: int) -> None:
                http.post(f"{url}/v3/kv/put", json={"key": b64(f"/floor/{i}"), "value": value})

            def raw_txn(i: int) -> None:
                key = b64(f"/floor-txn/{i}")
                http.post(
                    f"{url}/v3/kv/txn",
                    json={
                        "compare": [
                            {
                                "key": key,
                                "target": "CREATE",
                                "result": "EQUAL",
                                "create_revision": 0,
                            }
                        ],
                        "success": [{"request_put": {"key": key, "value": value}}],
                    },
                )

            big = b64(random.randbytes(100_000))  # a compressed 1,000-allocation plan's size

            def raw_big(i: int) -> None:
                http.post(f"{url}/v3/kv/put", json={"key": b64(f"/floor-big/{i}"), "value": big})

            timed(20, raw_put)  # warm up
            out["etcd: put (floor)"] = timed(commits, raw_put)
            out["etcd: txn, 1 compare"] = timed(commits, raw_txn)
            out["etcd: put of 100 KB (a plan's record)"] = timed(plans, raw_big)
        backend = EtcdBackend(cluster.endpoints, cluster="bench")
        one = [(f"j{i}", json.dumps({"id": f"j{i}", "pad": "x" * 400}).encode()) for i in range(1)]
        out["EtcdBackend: 1-row commit"] = timed(
            commits, lambda i: backend.commit(i + 1, {"jobs": one}, {})
        )
        plans_in = [plan(i) for i in range(plans)]
        base = commits
        out["EtcdBackend: 1,000-allocation plan"] = timed(
            plans, lambda i: backend.commit(base + i + 1, plans_in[i], {})
        )
        backend.close()
        sqlite = SqliteBackend(root / "state.db")
        out["SqliteBackend: 1-row commit"] = timed(
            commits, lambda i: sqlite.commit(i + 1, {"jobs": one}, {})
        )
        out["SqliteBackend: 1,000-allocation plan"] = timed(
            plans, lambda i: sqlite.commit(base + i + 1, plans_in[i], {})
        )
        sqlite.close()
    finally:
        cluster.close()
    print(f"\n== data on {where}")
    floor = statistics.median(out["etcd: put (floor)"])
    print(f"{'what':40} {'median ms':>10} {'p90 ms':>8} {'x floor':>8}")
    for name, ms in out.items():
        median, p90 = stats(ms)
        print(f"{name:40} {median:10.2f} {p90:8.2f} {median / floor:8.1f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--plans", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as disk:
        measure("disk (/var/tmp)", Path(disk), args.commits, args.plans)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        measure("tmpfs (/dev/shm)", Path(shm), args.commits, args.plans)


if __name__ == "__main__":
    main()
