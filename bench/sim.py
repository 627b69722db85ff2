"""Benchmark: ``podium sim`` at several sizes, each in a fresh process.

    python bench/sim.py                                   # 500 and 5,000 nodes, 100,000 placements
    python bench/sim.py --runs 500x100x1000 5000x1000x1000 # NODESxJOBSxCOUNT, as many as wanted
    python bench/sim.py --store memory --constraints

Each run is ``podium sim`` (a real server and N mock-driver agents, in its process or
with ``--agent-procs N`` in N worker processes over loopback HTTP; SQLite store by default); its JSON line is collected and printed as a table beside
the anchors: Nomad C1M (3,750 placements/s end to end, 5 servers), kube-scheduler's
CI floor (680 pods/s at 5,000 nodes) and the Kubernetes API SLO (p99 <= 1 s).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

C1M = 3750.0
KUBE_FLOOR = 680.0
API_SLO_MS = 1000.0


def run_one(nodes: int, jobs: int, count: int, extra: list[str]) -> dict[str, object]:
    cmd = [
        sys.executable, "-m", "podium.cli.main", "sim",
        "--nodes", str(nodes), "--jobs", str(jobs), "--count", str(count), *extra,
    ]  # fmt: skip
    print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    figures: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["exit"] = out.returncode
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=["500x100x1000", "5000x100x1000"])
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "memory"])
    parser.add_argument("--constraints", action="store_true")
    parser.add_argument(
        "--agent-procs", type=int, default=0, help="agents in N worker processes over HTTP"
    )
    args = parser.parse_args()
    extra = ["--store", args.store, "--agent-procs", str(args.agent_procs)]
    if args.constraints:
        extra.append("--constraints")
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    rows = []
    for spec in args.runs:
        nodes, jobs, count = (int(x) for x in spec.split("x"))
        rows.append(run_one(nodes, jobs, count, extra))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(
        f"{'nodes':>6} {'placements':>10} {'seconds':>8} {'e2e/s':>8} {'sched/s':>8} "
        f"{'rss MB':>7} {'agents':>7} {'p50 ms':>7} {'p99 ms':>7} {'rejects':>7} invariants"
    )
    for r in rows:
        print(
            f"{r['nodes']:>6} {r['placements']:>10,} {r['seconds']:>8} {r['placements_per_s']:>8} "
            f"{r['scheduler_placements_per_s']:>8} {r['server_rss_mb']:>7} "
            f"{r.get('agents_rss_mb')!s:>7} {r['api_p50_ms']!s:>7} "
            f"{r['api_p99_ms']!s:>7} {r['plan_rejections']:>7} "
            f"{'ok' if r['invariants_ok'] and not r['exit'] else 'BROKEN'}"
        )
    print(
        f"anchors: Nomad C1M {C1M:,.0f}/s end to end (5 servers); kube-scheduler CI floor "
        f"{KUBE_FLOOR:.0f}/s; Kubernetes API p99 <= {API_SLO_MS:.0f} ms"
    )


if __name__ == "__main__":
    main()
