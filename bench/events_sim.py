"""Benchmark: the event stream's cost during ``podium sim``, and that it misses nothing.

    python bench/events_sim.py                        # 500 nodes, 10,000 placements, 5 pairs
    python bench/events_sim.py --size 5000x100x1000 --runs 3

Each pair is ``podium sim --agent-procs 1`` without and with ``--events`` (a subscriber in
another process reading ``GET /v1/event/stream`` over a socket for the whole run, every
topic, every namespace), each in a fresh process, the order alternating between pairs.
Printed: per run the calibration (bench/sim.py's fixed loop) and load, then the medians
side by side and the ratio with/without: placements/s, API p99 (issue 16's bound: < 1 s
with a subscriber), events sent against events the commits made (every one must arrive:
``podium sim`` itself fails the run otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from sim import API_SLO_MS, Row, machine, run_one


def num(row: Row, key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def median(rows: list[Row], key: str) -> float | None:
    values = [v for r in rows if (v := num(r, key)) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="500x10x1000", help="NODESxJOBSxCOUNT")
    parser.add_argument("--runs", type=int, default=5, help="pairs (without, with) to run")
    args = parser.parse_args()
    nodes, jobs, count = (int(x) for x in args.size.split("x"))
    print(machine())
    plain: list[Row] = []
    events: list[Row] = []
    for i in range(args.runs):
        order = [False, True] if i % 2 == 0 else [True, False]
        for with_events in order:
            extra = ["--agent-procs", "1", *(["--events"] if with_events else [])]
            row = run_one(nodes, jobs, count, extra)
            (events if with_events else plain).append(row)
            ev = row.get("events") or {}
            assert isinstance(ev, dict)
            print(
                f"  {'events' if with_events else 'plain':>6}: calib {row['calibration_ms']} ms, "
                f"load {row['load']}, {row['seconds']} s, {row['placements_per_s']}/s, "
                f"API p99 {row['api_p99_ms']} ms, events {ev.get('received', '-')}/"
                f"{ev.get('expected', '-')} ({ev.get('mb', '-')} MB), "
                f"{'ok' if row['invariants_ok'] and not row['exit'] else 'BROKEN'}"
            )
    print(f"\n{args.size}: median of {args.runs} pairs")
    print(f"  {'':26} {'plain':>10} {'events':>10} {'ratio':>8}")
    for key, label in (
        ("placements_per_s", "placements/s end to end"),
        ("api_p50_ms", "API p50 ms"),
        ("api_p99_ms", "API p99 ms"),
        ("server_cpu_s", "server CPU s"),
        ("server_rss_mb", "server RSS MB"),
    ):
        a, b = median(plain, key), median(events, key)
        ratio = f"{b / a:.2f}" if a and b is not None else "-"
        print(
            f"  {label:26} {a if a is not None else '-':>10} {b if b is not None else '-':>10} {ratio:>8}"
        )
    sent = [r["events"] for r in events if isinstance(r.get("events"), dict)]
    missing = sum(int(e["missing_indexes"]) for e in sent)  # type: ignore[index]
    p99 = median(events, "api_p99_ms")
    ok = all(r["invariants_ok"] and not r["exit"] for r in plain + events)
    print(
        f"  events: {sum(int(e['received']) for e in sent):,} received of "  # type: ignore[index]
        f"{sum(int(e['expected']) for e in sent):,} committed, {missing} indexes short; "  # type: ignore[index]
        f"API p99 with a subscriber {p99} ms (bound {API_SLO_MS:.0f} ms): "
        f"{'met' if p99 is not None and p99 < API_SLO_MS else 'MISSED'}"
    )
    sys.exit(0 if ok and missing == 0 else 1)


if __name__ == "__main__":
    main()
