"""Benchmark: ``podium sim`` at several sizes, each in a fresh process.

    python bench/sim.py                                   # 500 and 5,000 nodes, 100,000 placements
    python bench/sim.py --runs 500x100x1000 5000x1000x1000 # NODESxJOBSxCOUNT, as many as wanted
    python bench/sim.py --store memory --constraints
    python bench/sim.py --pair --repeat 3 --agent-procs 1 --runs 5000x100x1000  # plain vs --secure
    python bench/sim.py --repeat 3 --agent-procs 1 --runs 5000x1000x1000  # median and range

Each run is ``podium sim`` (a real server and N mock-driver agents, in its process or
with ``--agent-procs N`` in N worker processes over loopback HTTP; SQLite store by default); its JSON line is collected and printed as a table beside
the anchors: Nomad C1M (3,750 placements/s end to end, 5 servers), kube-scheduler's
CI floor (680 pods/s at 5,000 nodes) and the Kubernetes API SLO (p99 <= 1 s).

``--repeat N``: N runs of each size; without ``--pair``, each size's median and range
(fastest-slowest) of every headline figure follow the table, beside the calibration of
each run, as the README quotes them (issue 18: a figure is a median of three or more).

``--secure``: every run with ``podium sim --secure`` (TLS, ACL, agent certificates).
``--pair``: each size plain and secure, one after the other (the order alternating from
one repeat to the next, so drift in the machine's load falls on both alike), then the
medians side by side with the ratio secure/plain against issue 13's target (TLS and ACL
cost at most 15%).  Before each run a calibration (a fixed pure-Python loop, ms) and the
load average are printed: a slower machine shows there, not as a cost of TLS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from podium.sim.health import calibrate

C1M = 3750.0
KUBE_FLOOR = 680.0
API_SLO_MS = 1000.0
SECURE_TARGET = 0.15
"""Issue 13: TLS and ACL may cost at most 15% (of the plain figure, in the same run)."""

Row = dict[str, object]


def run_one(nodes: int, jobs: int, count: int, extra: list[str]) -> Row:
    cmd = [
        sys.executable, "-m", "podium.cli.main", "sim",
        "--nodes", str(nodes), "--jobs", str(jobs), "--count", str(count), *extra,
    ]  # fmt: skip
    cal = calibrate()
    load = os.getloadavg()[0]
    print(f"$ {' '.join(cmd[2:])}  (calibration {cal} ms, load {load:.2f})", file=sys.stderr)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    figures: Row = json.loads(out.stdout.strip().splitlines()[-1])
    figures["exit"] = out.returncode
    figures["calibration_ms"] = cal
    figures["load"] = round(load, 2)
    return figures


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"machine: {platform.node()} {platform.machine()} ({cpu}), {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )


def table(rows: list[Row]) -> None:
    print(
        f"{'mode':>6} {'nodes':>6} {'placements':>10} {'seconds':>8} {'e2e/s':>8} "
        f"{'sched/s':>8} {'rss MB':>7} {'agents':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'hb p99':>7} {'down':>5} {'calib':>6} invariants"
    )
    for r in rows:
        print(
            f"{'secure' if r.get('secure') else 'plain':>6} "
            f"{r['nodes']:>6} {r['placements']:>10,} {r['seconds']:>8} {r['placements_per_s']:>8} "
            f"{r['scheduler_placements_per_s']:>8} {r['server_rss_mb']:>7} "
            f"{r.get('agents_rss_mb')!s:>7} {r['api_p50_ms']!s:>7} "
            f"{r['api_p99_ms']!s:>7} {_probe_heartbeat_p99(r)!s:>7} {r.get('nodes_down')!s:>5} "
            f"{r.get('calibration_ms')!s:>6} "
            f"{'ok' if r['invariants_ok'] and not r['exit'] else 'BROKEN'}"
        )


def _probe_heartbeat_p99(row: Row) -> object:
    beats = row.get("heartbeats")
    probe = beats.get("probe") if isinstance(beats, dict) else None
    return probe.get("p99_ms") if isinstance(probe, dict) else None


HEADLINE = (
    ("seconds", "seconds"),
    ("placements_per_s", "placements/s end to end"),
    ("scheduler_placements_per_s", "scheduler placements/s"),
    ("server_rss_mb", "server RSS MB"),
    ("agents_rss_mb", "agents' RSS MB"),
    ("api_p99_ms", "API p99 ms"),
    ("heartbeat_p99_ms", "heartbeat p99 ms (probe)"),
    ("nodes_down", "nodes declared down"),
    ("calibration_ms", "calibration ms"),
)


def repeat_summary(size: str, rows: list[Row]) -> None:
    """Each headline figure's median and range over the runs of one size."""
    print(f"\n{size}: {len(rows)} runs, median [min .. max]")
    for key, label in HEADLINE:
        values = [
            float(v)
            for r in rows
            if isinstance(
                v := (_probe_heartbeat_p99(r) if key == "heartbeat_p99_ms" else r.get(key)),
                int | float,
            )
        ]
        if values:
            print(
                f"  {label:28} {statistics.median(values):>10,.1f}  "
                f"[{min(values):,.1f} .. {max(values):,.1f}]"
            )
    broken = sum(1 for r in rows if not r["invariants_ok"] or r["exit"])
    print(f"  {'invariants':28} {'held in every run' if not broken else f'BROKEN in {broken}'}")


PAIRED = (
    ("placements_per_s", "placements/s end to end", True),
    ("scheduler_placements_per_s", "scheduler placements/s", True),
    ("seconds", "seconds", False),
    ("server_rss_mb", "server RSS MB", False),
    ("agents_rss_mb", "agents' RSS MB", False),
    ("server_cpu_s", "server CPU s", False),
    ("agents_cpu_s", "agents' CPU s", False),
    ("api_p50_ms", "API p50 ms", False),
    ("api_p99_ms", "API p99 ms", False),
)
"""Figures compared in --pair mode: (key, label, higher is better)."""


def pair_summary(size: str, plain: list[Row], secure: list[Row]) -> None:
    """Medians side by side, the ratio secure/plain and the cost against the target."""
    print(f"\n{size}: median of {len(plain)} plain and {len(secure)} secure runs")
    print(
        f"  {'':28} {'plain':>10} {'secure':>10} {'secure/plain':>13}  cost (target <= 15%)"
        "  [ratio: median of the pairs' ratios]"
    )
    for key, label, higher in PAIRED:
        a = [float(r[key]) for r in plain if isinstance(r.get(key), int | float)]
        b = [float(r[key]) for r in secure if isinstance(r.get(key), int | float)]
        if not a or not b:
            continue
        pm, sm = statistics.median(a), statistics.median(b)
        # the median of each pair's ratio: the machine's speed drifts between pairs
        pairs = [y / x for x, y in zip(a, b, strict=False) if x]
        ratio = statistics.median(pairs) if pairs else float("nan")
        cost = (1 / ratio - 1) if higher else (ratio - 1)
        verdict = ""
        if key in ("placements_per_s", "scheduler_placements_per_s", "api_p50_ms", "api_p99_ms"):
            verdict = "met" if cost <= SECURE_TARGET else "MISSED"
        print(f"  {label:28} {pm:>10,.1f} {sm:>10,.1f} {ratio:>13.3f}  {cost:+.1%} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=["500x100x1000", "5000x100x1000"])
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "memory", "etcd"])
    parser.add_argument("--constraints", action="store_true")
    parser.add_argument(
        "--agent-procs", type=int, default=0, help="agents in N worker processes over HTTP"
    )
    parser.add_argument("--secure", action="store_true", help="every run with --secure")
    parser.add_argument(
        "--pair", action="store_true", help="each size plain and --secure, side by side"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size (and mode)")
    args = parser.parse_args()
    if (args.secure or args.pair) and args.agent_procs < 1:
        parser.error("--secure and --pair need --agent-procs 1 or more (real sockets)")
    extra = ["--store", args.store, "--agent-procs", str(args.agent_procs)]
    if args.constraints:
        extra.append("--constraints")
    print(machine())
    print(f"calibration: {calibrate()} ms (a fixed pure-Python loop; lower is faster)")
    rows: list[Row] = []
    paired: dict[str, tuple[list[Row], list[Row]]] = {}
    for spec in args.runs:
        nodes, jobs, count = (int(x) for x in spec.split("x"))
        for k in range(args.repeat):
            # pair: plain first, then secure first, and so on
            modes = [k % 2 == 1, k % 2 == 0] if args.pair else [args.secure]
            for secure in modes:
                row = run_one(nodes, jobs, count, [*extra, *(["--secure"] if secure else [])])
                rows.append(row)
                paired.setdefault(spec, ([], []))[1 if secure else 0].append(row)
                print(json.dumps(row), flush=True)
    print()
    table(rows)
    print(
        f"anchors: Nomad C1M {C1M:,.0f}/s end to end (5 servers); kube-scheduler CI floor "
        f"{KUBE_FLOOR:.0f}/s; Kubernetes API p99 <= {API_SLO_MS:.0f} ms"
    )
    if args.pair:
        for spec, (plain, secure) in paired.items():
            pair_summary(spec, plain, secure)
    elif args.repeat > 1:
        for spec, (plain, _) in paired.items():
            repeat_summary(spec, plain)


if __name__ == "__main__":
    main()
