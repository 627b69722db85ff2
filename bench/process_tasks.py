"""Benchmark: 1,000 raw_exec `sleep` tasks through Podium's whole path, against the floor.

    python bench/process_tasks.py [--count 1000] [--runs 3]

For each run it measures, in the same process and on the same machine:

- floor: Python's subprocess.Popen spawning the same number of `sleep` processes
  (nothing else: no API, no scheduler, no bookkeeping);
- podium: from `POST /v1/jobs` (one job, one group of COUNT raw_exec `sleep` tasks)
  on a fresh `podium agent --dev` until the server reports all COUNT allocations
  running, i.e. through API, evaluation, scheduler, plan commit to SQLite, agent
  sync, driver start and the agents' batched status reports;
- the dev agent's RSS with the COUNT tasks running (server and agent in one process),
  and the per-task supervision cost: the PSS of each task's shim process.

It prints medians and the ratio podium/floor. Results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import psutil
from devagent import dev_agent, wait_group_running


def floor(count: int) -> float:
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["sleep", "3600"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(count)
    ]
    elapsed = time.perf_counter() - start
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    return elapsed


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def podium_run(count: int) -> dict[str, float]:
    with dev_agent(stop_timeout=30) as (client, agent):
        job = {
            "job": "bench",
            "groups": {
                "sleepers": {
                    "count": count,
                    "tasks": {
                        "sleep": {
                            "driver": "raw_exec",
                            "config": {"command": "sleep", "args": ["3600"]},
                            "resources": {"cpu": 1, "memory": 1},
                        }
                    },
                }
            },
        }
        start = time.perf_counter()
        client.post("/v1/jobs", json={"job": job}).raise_for_status()
        wait_group_running(client, "bench", "sleepers", count)
        elapsed = time.perf_counter() - start
        proc = psutil.Process(agent.pid)
        rss_mb = proc.memory_info().rss / 1e6
        shims = [c for c in proc.children(recursive=False) if c.name() in ("sh", "dash")]
        per_task_pss = statistics.median(pss_kb(c.pid) for c in shims) / 1024 if shims else 0.0
        client.delete("/v1/job/bench").raise_for_status()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = client.get("/v1/job/bench").json()["summary"]["sleepers"]
            if s["running"] == 0 and s["pending"] == 0:
                break
            time.sleep(0.2)
        return {
            "seconds": elapsed,
            "rss_mb": rss_mb,
            "shim_pss_mb": per_task_pss,
            "shims": float(len(shims)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    floors, runs = [], []
    for i in range(args.runs):
        floors.append(floor(args.count))
        runs.append(podium_run(args.count))
        print(
            f"run {i + 1}: floor {floors[-1]:.2f}s  podium {runs[-1]['seconds']:.2f}s  "
            f"rss {runs[-1]['rss_mb']:.0f} MB  shim pss {runs[-1]['shim_pss_mb']:.2f} MB"
        )
    f = statistics.median(floors)
    p = statistics.median(r["seconds"] for r in runs)
    rss = statistics.median(r["rss_mb"] for r in runs)
    pss = statistics.median(r["shim_pss_mb"] for r in runs)
    print()
    print(f"{args.count} tasks, median of {args.runs} runs")
    print(f"  floor (Python spawns {args.count} sleeps): {f:6.2f} s")
    print(
        f"  podium (job run → all running):           {p:6.2f} s   ratio {p / f:.1f}x floor"
        "   (target < 2 s; supervisord 4.3 on this machine, per the design brief: ~4.1 s)"
    )
    print(f"  dev agent RSS with tasks running:         {rss:6.0f} MB  (target < 100 MB)")
    print(f"  supervision cost per task (shim PSS):     {pss:6.2f} MB  (Nomad: 10-25 MB RSS)")


if __name__ == "__main__":
    main()
