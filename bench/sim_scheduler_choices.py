"""Benchmark: what each of the scheduler's shortcuts buys, on bench/scheduler.py's problem.

    python bench/sim_scheduler_choices.py                  # 5,000 nodes
    python bench/sim_scheduler_choices.py --nodes 1000 --placements 20000

Two switches, measured alone and together:

- scoring log2(n) feasible candidates per placement (Nomad's default for service
  jobs) instead of every feasible node (``candidate_limit=0``);
- caching static feasibility per computed node class
  (``podium.scheduler.feasible.USE_NODE_CLASSES``) instead of per node.

Exhaustive scoring is O(nodes) per placement, so it runs on ``--exhaustive-placements``
(fewer) placements; the rate is what compares.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scheduler as bench

from podium.scheduler import feasible


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--placements", type=int, default=20000)
    parser.add_argument("--exhaustive-placements", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.nodes} nodes; median of {args.runs} runs")
    print(f"{'candidates':>12} {'node classes':>13} {'placements':>10} {'placements/s':>13}")
    for limit, placements in ((None, args.placements), (0, args.exhaustive_placements)):
        for classes in (True, False):
            feasible.USE_NODE_CLASSES = classes
            rates = [
                bench.run(args.nodes, placements, 100, limit, seed=r)["rate"]
                for r in range(args.runs)
            ]
            print(
                f"{'log2(n)' if limit is None else 'all':>12} {'on' if classes else 'off':>13} "
                f"{placements:>10,} {statistics.median(rates):>13,.0f}"
            )
    feasible.USE_NODE_CLASSES = True


if __name__ == "__main__":
    main()
