"""Benchmark: a commit on the leader's store beside the same commit applied by a follower.

    python bench/replica_apply.py [--nodes 1000] [--rounds 20]

The two writes a placement costs the store: a plan of 1,000 new allocations, and a
batch of 200 agents' reports (a client update).  On an in-memory store (no backend: the
store's own work only), medians in ms:

- ``commit``: ``StateStore.commit`` (rows serialised for the backend, then applied);
- ``parse``: ``txn_of`` of those rows, what a follower's replica does on its tail's thread;
- ``apply``: ``StateStore.apply_committed`` of the parsed transaction, on the loop.

Run it with ``PYTHONPATH`` at another checkout to time that one's ``commit`` (a store
without ``apply_committed`` gets the first column only).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from typing import Any

from podium.models import Allocation, ClientStatus, Resources
from podium.state import ALLOCS, StateStore, Txn


def _alloc(i: int, node: str, index: int) -> Allocation:
    return Allocation(
        id=f"{i:08x}-0000-4000-8000-{random.getrandbits(48):012x}",
        eval_id="e",
        name=f"web{i % 100}.g[{i}]",
        job_id=f"web{i % 100}",
        job_version=0,
        group="g",
        index=i,
        node_id=node,
        resources=Resources(cpu=100, memory=128),
        create_index=index,
        modify_index=index,
    )


def _rows(txn: Txn) -> dict[str, list[tuple[str, bytes]]]:
    return {
        t: [(k, o.model_dump_json().encode()) for k, o in objs.items()]
        for t, objs in txn.puts.items()
        if objs
    }


def run(nodes: int, rounds: int) -> dict[str, list[float]]:
    leader = StateStore()
    follower = StateStore()
    following = hasattr(follower, "apply_committed")
    if following:
        from podium.state.store import txn_of
    times: dict[str, list[float]] = {}
    n = 0
    for _ in range(rounds):
        for kind in ("plan", "reports"):
            txn = leader.txn()
            if kind == "plan":
                for _ in range(1000):
                    txn.put_alloc(_alloc(n, f"n{n % nodes}", txn.index))
                    n += 1
            else:
                txn.client_update = True
                for a in random.sample(leader.allocs(), 200):
                    txn.put_alloc(
                        a.model_copy(
                            update={
                                "client_status": ClientStatus.RUNNING,
                                "modify_index": txn.index,
                            }
                        )
                    )
            rows = _rows(txn) if following else {}
            start = time.perf_counter()
            leader.commit(txn)
            times.setdefault(f"{kind} commit", []).append(time.perf_counter() - start)
            if not following:
                continue
            deletes: dict[str, Any] = {"_txn": ["client_update"]} if txn.client_update else {}
            start = time.perf_counter()
            theirs = txn_of(txn.index, rows, deletes)
            times.setdefault(f"{kind} parse", []).append(time.perf_counter() - start)
            start = time.perf_counter()
            follower.apply_committed(theirs)
            times.setdefault(f"{kind} apply", []).append(time.perf_counter() - start)
    assert len(follower.allocs()) in (0, len(leader.allocs()))
    assert leader.table_index(ALLOCS) == leader.index
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    random.seed(1)
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    times = run(args.nodes, args.rounds)
    for key, values in times.items():
        print(f"  {key:16s} {statistics.median(values) * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
