"""Benchmark: what committing a plan costs, in the plan applier and in the scheduler's harness.

    python bench/plan_commit.py                     # 1,000 nodes, 20 plans of 1,000 placements
    python bench/plan_commit.py --nodes 5000 --plans 40 --per-plan 1000

The scheduler's own rate is bench/scheduler.py's; the SQLite backend's write alone is
bench/store_sqlite.py's.  This one times the step between them: the plan applier's
``apply`` (re-check every node of the plan against the latest state, build the rows, one
transaction) on a real SQLite store and on the memory store, its re-check alone, and
``Harness.apply`` on the same plans, so a change to the commit rule shows what it costs
per placement.  Medians over the plans, in ms per plan; later plans land on fuller nodes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from podium.models import SchedulerResult
from podium.scheduler import schedule
from podium.scheduler.harness import Harness, id_sequence, make_job, make_node
from podium.server.core import Server
from podium.state import SqliteBackend, StateStore

NOW = 1000.0


def _server(store: StateStore, nodes: int) -> Server:
    server = Server(store, clock=lambda: NOW)
    for i in range(nodes):
        server.register_node(make_node(f"n{i}", cpu=16000, memory=65536))
    return server


def run(server: Server, plans: int, per_plan: int) -> dict[str, list[float]]:
    """Schedule ``plans`` jobs one after another; time each plan's re-check and commit,
    and the harness's apply of the same result on a copy of the same cluster."""
    new_id = id_sequence("a")
    h = Harness(now=NOW)
    for node in server.store.nodes():
        h.add_node(node)
    times: dict[str, list[float]] = {"check": [], "apply": [], "harness": []}
    for j in range(plans):
        spec = make_job(f"job{j}", count=per_plan, cpu=100, memory=128)
        server.register_job(spec)
        h.register(spec)
        ev = next(e for e in server.store.evaluations() if e.job_id == spec.id and not e.terminal())
        result: SchedulerResult = schedule(server.store.view(), ev, NOW, new_id=new_id)
        start = time.perf_counter()
        server.applier.check(result)
        times["check"].append(time.perf_counter() - start)
        start = time.perf_counter()
        outcome = server.applier.apply(result, NOW)
        times["apply"].append(time.perf_counter() - start)
        assert not outcome.rejected_nodes, outcome
        assert outcome.committed_placements == per_plan, outcome
        # the harness holds the same cluster: the same plan fits there too
        start = time.perf_counter()
        h_outcome = h.apply(result, now=NOW)
        times["harness"].append(time.perf_counter() - start)
        assert h_outcome.committed_placements == per_plan, h_outcome
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--per-plan", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    print(
        f"{args.nodes:,} nodes, {args.plans} plans of {args.per_plan:,} placements; "
        "medians, ms per plan"
    )
    with tempfile.TemporaryDirectory() as tmp:
        stores = {
            "sqlite": StateStore(SqliteBackend(Path(tmp) / "state.db")),
            "memory": StateStore(),
        }
        for name, store in stores.items():
            times = run(_server(store, args.nodes), args.plans, args.per_plan)
            med = {k: statistics.median(v) * 1000 for k, v in times.items()}
            per = args.per_plan / 1000
            print(
                f"  {name:6s} store: applier.apply {med['apply']:7.1f} ms "
                f"(re-check {med['check']:5.1f} ms)  "
                f"= {med['apply'] / per:6.1f} ms per 1,000 placements; "
                f"Harness.apply {med['harness']:6.1f} ms"
            )
            store.close()


if __name__ == "__main__":
    main()
