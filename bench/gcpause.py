"""Benchmark: the longest full collection while a heap grows, with podium.gcpause and without.

    python bench/gcpause.py [--objects 3000000] [--repeat 3]

Each run is a fresh interpreter that grows a heap of long-lived objects (a dict holding a
list each, as stored allocations hold their fields) with CPython's default thresholds and
times every full (generation 2) collection: once as CPython does it (the floor: what any
Python server pays), once with :class:`podium.gcpause.GcPauses` freezing each full pass's
survivors.  Prints the medians of the worst pass and of the passes' total, the ratio, the
CPU model and a calibration loop (podium.sim.health) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from podium.sim.health import calibrate, cpu_model

CHILD = """
import gc, json, sys, time
from podium.gcpause import GcPauses
watch = GcPauses(freeze=sys.argv[2] == "freeze").install()
keep = []
started = time.perf_counter()
for i in range(int(sys.argv[1])):
    keep.append({"i": i, "l": [i]})
print(json.dumps({**watch.figures(), "seconds": time.perf_counter() - started}))
"""


def run(objects: int, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(objects), mode],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"cpu: {cpu_model()}; calibration {calibrate()} ms (lower is faster)")
    results: dict[str, list[dict[str, float]]] = {"plain": [], "freeze": []}
    for _ in range(args.repeat):
        for mode in ("plain", "freeze"):  # interleaved: drift falls on both
            results[mode].append(run(args.objects, mode))
    print(f"{args.objects:,} long-lived dicts, median of {args.repeat} interleaved runs each")
    print(f"{'':28} {'CPython (floor)':>16} {'gcpause':>10} {'ratio':>7}")
    for key, label in (("max_ms", "worst full pass ms"), ("total_s", "all full passes s")):
        plain = statistics.median(r[key] or 0.0 for r in results["plain"])
        frozen = statistics.median(r[key] or 0.0 for r in results["freeze"])
        ratio = frozen / plain if plain else float("nan")
        print(f"{label:28} {plain:>16,.2f} {frozen:>10,.2f} {ratio:>7.3f}")
    for mode in ("plain", "freeze"):
        counts = [int(r["count"]) for r in results[mode]]
        print(f"full passes ({mode}): {counts}")


if __name__ == "__main__":
    main()
