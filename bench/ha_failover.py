"""Benchmark: three `podium server --etcd` processes on a three-member etcd cluster.

    python bench/ha_failover.py [--writes 200] [--kills 5]

Real etcd members (Debian's /usr/bin/etcd) and real server processes on loopback, data on
disk (/var/tmp).  It prints, with the machine and a calibration figure of the same run:

- etcd's own write floor: a single-key put through the JSON gateway, on the three members;
- a Podium write (`PUT /v1/var/...`, one commit) sent to the leader, and sent to a
  follower (forwarded, then read back by the follower's replica before it answers): the
  median and p90, and their ratio to etcd's floor;
- failover: the leader killed (SIGKILL) `--kills` times; seconds from the kill until every
  running server names one new leader (the issue's bound: 10 s; target: lease TTL 5 s + 2 s).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sim import calibrate
from podium.state.etcd_client import b64
from tests.ha.cluster import EtcdCluster, HACluster


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"{statistics.median(values):7.2f} {values[int(len(values) * 0.9)]:7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
        f"calibration {calibrate()} ms"
    )
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp)
        etcd = EtcdCluster.start(3, root / "etcd")
        cluster = HACluster(root, etcd, args=["--log-level", "warning"])
        try:
            cluster.start_all()
            with httpx.Client(trust_env=False) as http:
                url = etcd.endpoints[0]
                value = b64(b"x" * 200)
                floor = []
                for i in range(args.writes + 20):
                    start = time.perf_counter()
                    http.post(f"{url}/v3/kv/put", json={"key": b64(f"/floor/{i}"), "value": value})
                    floor.append((time.perf_counter() - start) * 1000)
                floor = floor[20:]
            leader = cluster.wait_leader()
            follower = next(s for s in cluster.servers if s is not leader)
            figures: dict[str, list[float]] = {"etcd put (floor)": floor}
            for who, server in (("leader", leader), ("follower", follower)):
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    took = []
                    for i in range(args.writes + 20):
                        start = time.perf_counter()
                        r = c.put(f"/v1/var/bench/{who}/{i}", json={"items": {"k": "v" * 200}})
                        took.append((time.perf_counter() - start) * 1000)
                        r.raise_for_status()
                    figures[f"Podium write via the {who}"] = took[20:]
            base = statistics.median(floor)
            print(f"{'what (ms)':34} {'median':>7} {'p90':>7} {'x floor':>8}")
            for name, values in figures.items():
                print(f"{name:34} {ms(values)} {statistics.median(values) / base:8.1f}")
            failovers = []
            for _ in range(args.kills):
                leader = cluster.wait_leader()
                killed = time.monotonic()
                cluster.kill(leader.index)
                cluster.wait_leader(timeout=60, other_than=leader.url)
                failovers.append(time.monotonic() - killed)
                cluster.start(leader.index)
            print(
                f"failover after kill -9 of the leader, {args.kills} times (s): "
                f"median {statistics.median(failovers):.1f}, "
                f"min {min(failovers):.1f}, max {max(failovers):.1f} "
                f"(bound 10 s; lease TTL 5 s)"
            )
        finally:
            cluster.close()
            etcd.close()


if __name__ == "__main__":
    main()
