"""Benchmark: N busybox containers, Podium against Docker Swarm on the same Docker Engine.

    python bench/swarm_race.py [--count 100] [--runs 1]

For each run it measures, against the local engine (image podium-test/busybox:1, `sleep 3600`):

- floor: bare parallel `docker run -d` of COUNT containers through the Docker SDK in a pool
  of 8 threads, until every call has returned with its container started;
- swarm: `docker swarm init` on loopback, one service of COUNT replicas, from the create call
  until COUNT of its tasks report `running` (polling service.tasks());
- podium: from `POST /v1/jobs` (one job, one group of COUNT docker tasks) on a fresh
  `podium agent --dev` until the job summary reports COUNT running; then the job is stopped
  and the time until its containers are gone is reported too.
- rolling update (both): all COUNT instances replaced by a new version (an environment
  variable changes), PARALLEL at a time, each batch after the previous one has run for
  MONITOR seconds: Swarm's `service update` with update_config parallelism/monitor (delay 0,
  order start-first like Podium's, stop grace 5 s like Podium's kill_timeout),
  Podium's `update` block max_parallel/min_healthy_time (health from task states).  Timed
  from the update call until every running instance is the new version (Podium: until its
  deployment reports successful).

Everything created (containers, the service, the swarm) is removed, also on error.
It prints medians and the ratios podium/swarm and podium/floor. Results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import docker.types
import httpx
from devagent import dev_agent, wait_group_running

IMAGE = "podium-test/busybox:1"
BENCH_LABEL = "podium-bench"
BENCH_VALUE = "swarm_race"
JOB_ID = "swarm-race"
SERVICE = "podium-swarm-race"

# Figures in the design brief, measured earlier on this machine.
BRIEF_SWARM_S = 32.0
BRIEF_FLOOR_S = 10.8


def container_ids(client: docker.DockerClient, label: str, *, running: bool = False) -> list[str]:
    """IDs of the containers carrying ``label``: one list call, no per-container inspect
    (``containers.list`` inspects each one and races with removals in progress)."""
    filters: dict[str, str] = {"label": label}
    if running:
        filters["status"] = "running"
    return [c["Id"] for c in client.api.containers(all=not running, filters=filters)]


def remove_containers(client: docker.DockerClient, label: str) -> int:
    """Force-remove every container carrying ``label`` (``key`` or ``key=value``)."""
    found = container_ids(client, label)

    def rm(cid: str) -> None:
        try:
            client.api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(rm, found))
    return len(found)


# --- floor -------------------------------------------------------------------------------------


def floor_run(client: docker.DockerClient, count: int) -> float:
    label = {BENCH_LABEL: BENCH_VALUE}

    def one(_: int) -> str:
        c = client.containers.run(IMAGE, ["sleep", "3600"], detach=True, labels=label)
        return c.id

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(one, range(count)))
        elapsed = time.perf_counter() - start
        running = len(container_ids(client, f"{BENCH_LABEL}={BENCH_VALUE}", running=True))
        if running < len(ids):
            raise RuntimeError(f"floor: only {running} of {len(ids)} containers running")
        return elapsed
    finally:
        remove_containers(client, f"{BENCH_LABEL}={BENCH_VALUE}")


# --- swarm -------------------------------------------------------------------------------------


def swarm_init(client: docker.DockerClient) -> str | None:
    """Init a single-node swarm; return None on success, else the reason it failed."""
    try:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        return None
    except docker.errors.APIError as exc:
        first = str(exc)
    try:
        client.swarm.init()
        return None
    except docker.errors.APIError as exc:
        return f"loopback: {first}; default: {exc}"


def _swarm_wait(service: Any, count: int, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    running = 0
    while time.monotonic() < deadline:
        tasks = service.tasks(filters={"desired-state": "running"})
        running = sum(
            1
            for t in tasks
            if t["Status"]["State"] == "running"
            and f"V={version}" in (t["Spec"]["ContainerSpec"].get("Env") or [])
        )
        if running >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"swarm: only {running} of {count} tasks running after {timeout:.0f} s")


def swarm_run(
    client: docker.DockerClient, count: int, parallel: int, monitor: float, timeout: float = 300
) -> tuple[float, float]:
    """(seconds to COUNT running, seconds for the rolling update of all of them)."""
    service = None
    try:
        start = time.perf_counter()
        service = client.services.create(
            IMAGE,
            command=["sleep", "3600"],
            name=SERVICE,
            env=["V=1"],
            stop_grace_period=int(5e9),
            mode=docker.types.ServiceMode("replicated", replicas=count),
            labels={BENCH_LABEL: BENCH_VALUE},
        )
        _swarm_wait(service, count, "1", timeout)
        up = time.perf_counter() - start
        service.reload()
        start = time.perf_counter()
        service.update(
            env=["V=2"],
            # start-first, as Podium does (a batch's new instances start while the old
            # ones stop); the same 5 s stop grace as Podium's kill_timeout default.
            update_config=docker.types.UpdateConfig(
                parallelism=parallel,
                delay=0,
                monitor=int(monitor * 1e9),
                failure_action="pause",
                order="start-first",
            ),
        )
        _swarm_wait(service, count, "2", timeout)
        return up, time.perf_counter() - start
    finally:
        if service is not None:
            with contextlib.suppress(docker.errors.APIError):
                service.remove()
        # The service's containers go away asynchronously; wait for them, then force the rest.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not container_ids(client, f"com.docker.swarm.service.name={SERVICE}"):
                break
            time.sleep(0.5)
        remove_containers(client, f"com.docker.swarm.service.name={SERVICE}")


def swarm_leave(client: docker.DockerClient) -> None:
    with contextlib.suppress(docker.errors.APIError):
        client.swarm.leave(force=True)


# --- podium ------------------------------------------------------------------------------------


def podium_run(
    client: docker.DockerClient, count: int, parallel: int, monitor: float
) -> dict[str, float]:
    job_label = f"podium.job_id={JOB_ID}"
    try:
        with dev_agent(stop_timeout=60) as (http, _agent):
            return _podium_race(client, http, count, job_label, parallel, monitor)
    finally:
        left = remove_containers(client, job_label)
        if left:
            print(f"  (podium left {left} containers behind; force-removed)")


def _podium_job(count: int, version: str, parallel: int, monitor: float) -> dict[str, Any]:
    return {
        "job": JOB_ID,
        "update": {
            "max_parallel": parallel,
            "min_healthy_time": monitor,
            "health_check": "task_states",
        },
        "groups": {
            "boxes": {
                "count": count,
                "tasks": {
                    "box": {
                        "driver": "docker",
                        "env": {"V": version},
                        "config": {"image": IMAGE, "command": "sleep", "args": ["3600"]},
                        "resources": {"cpu": 10, "memory": 16},
                    }
                },
            }
        },
    }


def _podium_deployed(http: httpx.Client, version: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    index = 0
    while time.monotonic() < deadline:
        r = http.get(f"/v1/job/{JOB_ID}/deployment", params={"index": index, "wait": "5s"})
        r.raise_for_status()
        index = int(r.headers.get("X-Podium-Index", "0"))
        dep = r.json()
        if dep and dep["job_version"] == version:
            if dep["status"] == "successful":
                return
            if dep["status"] != "running":
                raise RuntimeError(
                    f"podium deployment {dep['status']}: {dep['status_description']}"
                )
    raise RuntimeError(f"podium: deployment of version {version} not done after {timeout:.0f} s")


def _podium_race(
    client: docker.DockerClient,
    http: httpx.Client,
    count: int,
    job_label: str,
    parallel: int,
    monitor: float,
) -> dict[str, float]:
    start = time.perf_counter()
    job = _podium_job(count, "1", parallel, monitor)
    http.post("/v1/jobs", json={"job": job}).raise_for_status()
    first_running = wait_group_running(http, JOB_ID, "boxes", count, since=start)
    elapsed = time.perf_counter() - start
    containers = len(container_ids(client, job_label, running=True))

    update_start = time.perf_counter()
    job = _podium_job(count, "2", parallel, monitor)
    http.post("/v1/jobs", json={"job": job}).raise_for_status()
    _podium_deployed(http, 1)
    update = time.perf_counter() - update_start

    stop_start = time.perf_counter()
    http.delete(f"/v1/job/{JOB_ID}").raise_for_status()
    deadline = time.monotonic() + 180
    stopped = None
    while time.monotonic() < deadline:
        if not container_ids(client, job_label):
            stopped = time.perf_counter() - stop_start
            break
        time.sleep(0.2)
    return {
        "seconds": elapsed,
        "update_seconds": update,
        "first_running": first_running or elapsed,
        "containers": float(containers),
        "stop_seconds": stopped if stopped is not None else float("nan"),
    }


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-swarm", action="store_true")
    parser.add_argument("--parallel", type=int, default=10, help="rolling update batch size")
    parser.add_argument(
        "--monitor", type=float, default=1.0, help="seconds a batch must run before the next"
    )
    args = parser.parse_args()
    client = docker.from_env(timeout=120)
    client.images.get(IMAGE)  # fail early if the image is missing
    version = client.version().get("Version", "?")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"docker {version}, python {platform.python_version()}"
    )
    floors: list[float] = []
    swarms: list[float] = []
    swarm_updates: list[float] = []
    runs: list[dict[str, float]] = []
    swarm_skipped = "--skip-swarm" if args.skip_swarm else None
    in_swarm = False
    try:
        if swarm_skipped is None:
            if client.info().get("Swarm", {}).get("LocalNodeState") == "active":
                swarm_skipped = "this engine is already in a swarm; not touching it"
            else:
                swarm_skipped = swarm_init(client)
                in_swarm = swarm_skipped is None
            if swarm_skipped:
                print(f"swarm skipped: {swarm_skipped}")
        for i in range(args.runs):
            floors.append(floor_run(client, args.count))
            if in_swarm:
                up, upd = swarm_run(client, args.count, args.parallel, args.monitor)
                swarms.append(up)
                swarm_updates.append(upd)
            runs.append(podium_run(client, args.count, args.parallel, args.monitor))
            sw = f"{swarms[-1]:.2f}s (update {swarm_updates[-1]:.2f}s)" if swarms else "n/a"
            print(
                f"run {i + 1}: floor {floors[-1]:.2f}s  swarm {sw}  "
                f"podium {runs[-1]['seconds']:.2f}s (first running {runs[-1]['first_running']:.2f}s, "
                f"{runs[-1]['containers']:.0f} containers; update {runs[-1]['update_seconds']:.2f}s; "
                f"stop → gone {runs[-1]['stop_seconds']:.2f}s)"
            )
    finally:
        if in_swarm:
            swarm_leave(client)
        remove_containers(client, f"{BENCH_LABEL}={BENCH_VALUE}")

    f = statistics.median(floors)
    p = statistics.median(r["seconds"] for r in runs)
    stop = statistics.median(r["stop_seconds"] for r in runs)
    print()
    print(f"{args.count} containers, median of {args.runs} runs")
    print(f"  floor (8 threads of docker run -d):   {f:6.2f} s   (brief: {BRIEF_FLOOR_S} s)")
    if swarms:
        s = statistics.median(swarms)
        print(
            f"  swarm (service → {args.count} running):      {s:6.2f} s   (brief: {BRIEF_SWARM_S} s)"
        )
    else:
        s = None
        print(f"  swarm: skipped ({swarm_skipped})")
    print(f"  podium (job run → all running):      {p:6.2f} s")
    print(f"  podium stop → containers gone:       {stop:6.2f} s")
    if s is not None:
        print(
            f"  podium / swarm: {p / s:.2f}x   (vs brief's swarm figure: {p / BRIEF_SWARM_S:.2f}x)"
        )
    print(f"  podium / floor: {p / f:.2f}x   (vs brief's floor figure: {p / BRIEF_FLOOR_S:.2f}x)")
    pu = statistics.median(r["update_seconds"] for r in runs)
    batches = -(-args.count // args.parallel)
    print(
        f"rolling update of {args.count}, {args.parallel} at a time, {args.monitor:g} s monitor "
        f"({batches} batches; floor {batches * args.monitor:.0f} s of monitoring alone)"
    )
    if swarm_updates:
        su = statistics.median(swarm_updates)
        print(f"  swarm (service update → all new):    {su:6.2f} s")
    print(f"  podium (job run → deployment done):  {pu:6.2f} s")
    if swarm_updates:
        print(f"  podium / swarm: {pu / su:.2f}x")


if __name__ == "__main__":
    main()
