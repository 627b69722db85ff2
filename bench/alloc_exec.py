"""Benchmark: ``podium alloc exec`` through the whole path, beside its floors.

    sudo python bench/alloc_exec.py [--runs 50] [--megabytes 50]

A fresh `podium agent --dev` runs a raw_exec, an exec and (when an engine answers) a docker
task.  Each session is the SDK's ``Client.exec``: a WebSocket to the server, the server's
grant and relay to the agent, the driver's spawn (``nsenter``/``setpriv`` for exec, the
Engine's exec for docker), the exit code back.  Printed, medians and p95 of RUNS sessions of
``true``:

- floor: this process spawning ``true`` (``subprocess.run``);
- raw_exec, exec: the session;
- docker: the session, beside ``docker exec CONTAINER true`` (the docker CLI, same engine);

then MEGABYTES of stdout (``head -c``) and of stdin (``wc -c``) through a raw_exec session.
Results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time

from devagent import dev_agent

from podium.client import Client

JOB = {
    "job": "bench-exec",
    "groups": {
        "raw": {
            "tasks": {
                "t": {"driver": "raw_exec", "config": {"command": "/bin/sleep", "args": ["3600"]}}
            }
        },
        "iso": {
            "tasks": {
                "t": {"driver": "exec", "config": {"command": "/bin/sleep", "args": ["3600"]}}
            }
        },
    },
}
DOCKER = {
    "tasks": {
        "c": {
            "driver": "docker",
            "resources": {"memory": 32},
            "config": {"image": "podium-test/busybox:1", "command": "sleep", "args": ["3600"]},
        }
    }
}


def timed(fn: object, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.95) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--megabytes", type=int, default=50)
    args = parser.parse_args()
    docker_cli = shutil.which("docker")
    has_docker = (
        docker_cli is not None
        and subprocess.run(
            [docker_cli, "image", "inspect", "podium-test/busybox:1"], capture_output=True
        ).returncode
        == 0
    )
    job = {"job": JOB["job"], "groups": dict(JOB["groups"])}  # type: ignore[call-overload]
    if has_docker:
        job["groups"]["box"] = DOCKER
    with dev_agent() as (http, _proc):
        http.post("/v1/jobs", json={"job": job}).raise_for_status()
        deadline = time.monotonic() + 120
        want = len(job["groups"])
        while True:
            allocs = [
                a
                for a in http.get("/v1/job/bench-exec/allocations").json()
                if a["client_status"] == "running"
            ]
            if len(allocs) == want:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"not running: {allocs}")
            time.sleep(0.2)
        by_group = {a["group"]: a["id"] for a in allocs}
        client = Client(str(http.base_url))
        print(f"session of `true`, {args.runs} runs: median / p95 (ms)")
        floor = timed(lambda: subprocess.run(["true"], check=True), args.runs)
        print(f"  floor: spawn `true` here      {floor[0]:7.1f} / {floor[1]:7.1f}")
        for group in ("raw", "iso", "box"):
            if group not in by_group:
                continue
            alloc = by_group[group]
            result = timed(lambda a=alloc: client.exec(a, ["true"]), args.runs)
            print(f"  {group:5} podium alloc exec (SDK)  {result[0]:7.1f} / {result[1]:7.1f}")
        if has_docker:
            name = f"podium-c-{by_group['box']}"
            peer = timed(
                lambda: subprocess.run([docker_cli, "exec", name, "true"], check=True), args.runs
            )
            print(f"  box   `docker exec` (CLI)       {peer[0]:7.1f} / {peer[1]:7.1f}")
        n = args.megabytes * 10**6
        start = time.perf_counter()
        out = client.exec(by_group["raw"], ["head", "-c", str(n), "/dev/zero"])
        took = time.perf_counter() - start
        assert len(out.stdout) == n
        print(f"stdout: {args.megabytes} MB in {took:.2f} s, {n / took / 1e6:.0f} MB/s")
        start = time.perf_counter()
        counted = client.exec(by_group["raw"], ["wc", "-c"], stdin=b"x" * n)
        took = time.perf_counter() - start
        assert int(counted.stdout) == n
        print(f"stdin:  {args.megabytes} MB in {took:.2f} s, {n / took / 1e6:.0f} MB/s")
        client.close()
        http.delete("/v1/job/bench-exec", params={"purge": "true"})


if __name__ == "__main__":
    main()
