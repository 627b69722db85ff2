"""Benchmark: the scheduler alone, placements per second, and what its shortcuts cost.

    python bench/scheduler.py                       # laptop-sized defaults
    python bench/scheduler.py --nodes 5000 --placements 100000

Nodes of mixed shapes (2-16 cores, 4-64 GB), one constraint on every job
(``${attr.cpu.arch} = amd64``, which 90% of the nodes pass) and bin-packing.
Jobs of ``--per-job`` instances are scheduled one after another through the
in-memory harness (each plan applied before the next job, as the plan applier
would), so later jobs see fuller nodes.  Printed beside the anchors measured
elsewhere: kube-scheduler's CI floor (680 pods/s at 5,000 nodes) and Nomad's
C1M (3,750 placements/s across 5 servers).

Quality: on a small instance the same jobs are placed again with
``candidate_limit=0`` (every feasible node scored: the exhaustive baseline);
average utilisation of the used nodes and the spread of allocations per node
are printed for both, so the speed of scoring only a few candidates (Nomad's
power-of-two-choices / log2(n)) is shown beside what it costs.

``--preempt`` turns preemption on for every job type (docs/preemption.md).  Every job
here has the same priority, so nothing is ever preempted: the figure is what preemption
costs when it is enabled but unused (bench/RESULTS.md compares it with the code before it).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

from podium.scheduler import schedule
from podium.scheduler.harness import (
    Harness,
    id_sequence,
    make_eval,
    make_group,
    make_job,
    make_node,
)

KUBE_FLOOR = 680.0
C1M = 3750.0
SHAPES = [(2, 4096), (4, 8192), (8, 16384), (8, 32768), (16, 65536)]


PREEMPT = False
"""Preemption on for every type (``--preempt``)."""


def build(nodes: int, seed: int) -> Harness:
    rng = random.Random(seed)
    h = Harness(now=1000.0)
    if PREEMPT:
        h.set_preemption("service", "batch", "system")
    for i in range(nodes):
        cores, mem = rng.choice(SHAPES)
        arch = "arm64" if rng.random() < 0.1 else "amd64"
        h.add_node(make_node(f"n{i}", cpu=cores * 2000, memory=mem, attributes={"cpu.arch": arch}))
    return h


def run(
    nodes: int, placements: int, per_job: int, limit: int | None, seed: int
) -> dict[str, float]:
    h = build(nodes, seed)
    new_id = id_sequence()
    rng = random.Random(seed + 1)
    jobs = max(1, placements // per_job)
    placed = 0
    elapsed = 0.0
    for j in range(jobs):
        cpu, mem = rng.choice([(100, 128), (250, 256), (500, 512), (1000, 1024)])
        spec = make_job(
            f"job{j}",
            groups={"g": make_group(per_job, cpu=cpu, memory=mem)},
            job_fields={"constraints": [{"attribute": "${attr.cpu.arch}", "value": "amd64"}]},
        )
        h.register(spec)
        ev = make_eval(f"job{j}", eval_id=f"eval-{j}")
        start = time.perf_counter()
        result = schedule(h, ev, 1000.0, new_id=new_id, candidate_limit=limit)
        elapsed += time.perf_counter() - start
        h.apply(result)
        placed += len(result.plan.placements)
    used = [n for n in h.nodes() if h.allocs_by_node(n.id)]
    utils = []
    for n in used:
        cpu, mem = h.node_usage(n.id)
        utils.append(max(cpu / n.resources.cpu, mem / n.resources.memory))
    per_node = [len(h.allocs_by_node(n.id)) for n in h.nodes()]
    return {
        "placed": float(placed),
        "rate": placed / elapsed if elapsed else 0.0,
        "seconds": elapsed,
        "util": statistics.mean(utils) if utils else 0.0,
        "used_nodes": float(len(used)),
        "spread_sd": statistics.pstdev(per_node),
        "overcommitted": float(len(h.overcommitted())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--placements", type=int, default=20000)
    parser.add_argument("--per-job", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--preempt", action="store_true", help="preemption on for every job type (never needed)"
    )
    args = parser.parse_args()
    global PREEMPT
    PREEMPT = args.preempt
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    print(f"preemption: {'on for every type (unused)' if PREEMPT else 'defaults'}")
    rates = []
    last: dict[str, float] = {}
    for r in range(args.runs):
        last = run(args.nodes, args.placements, args.per_job, None, seed=r)
        rates.append(last["rate"])
        print(
            f"run {r + 1}: {last['placed']:.0f} placements in {last['seconds']:.2f}s "
            f"= {last['rate']:,.0f}/s, over-committed nodes: {last['overcommitted']:.0f}"
        )
    rate = statistics.median(rates)
    print()
    print(
        f"{args.nodes} nodes, {args.placements} placements, {args.per_job} per job, "
        f"median of {args.runs}:"
    )
    print(
        f"  podium scheduler: {rate:10,.0f} placements/s  "
        f"({rate / KUBE_FLOOR:.1f}x kube-scheduler's CI floor of {KUBE_FLOOR:.0f}/s, "
        f"{rate / C1M:.1f}x Nomad C1M's {C1M:.0f}/s)"
    )

    small_nodes, small_placements = 200, 2000
    fast = run(small_nodes, small_placements, 50, None, seed=7)
    exact = run(small_nodes, small_placements, 50, 0, seed=7)
    print()
    print(
        f"quality on {small_nodes} nodes / {small_placements} placements "
        "(default candidates vs every feasible node scored):"
    )
    for name, res in (("default (log2 n)", fast), ("exhaustive", exact)):
        print(
            f"  {name:17s} {res['rate']:10,.0f}/s  used nodes {res['used_nodes']:4.0f}  "
            f"mean utilisation {res['util']:.2f}  allocs/node sd {res['spread_sd']:.2f}"
        )


if __name__ == "__main__":
    main()
