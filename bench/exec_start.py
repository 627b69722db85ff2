"""Benchmark: what the exec driver's isolation costs a task's start.

    sudo python bench/exec_start.py [--count 100] [--runs 5]

An ``exec`` task starts through a longer chain than a ``raw_exec`` one: ``unshare`` (pid and
mount namespaces), pid 1 of the namespace running ``mount --fstab`` to build the task's own
read-only root, ``pivot_root`` and ``umount`` of the old root, then ``setpriv`` to the
allocation's uid.  For each run, in the same process and on the same machine, COUNT ``sleep``
tasks (each its own allocation, so each its own uid) are started at once with
``asyncio.gather`` and timed until every task runs its own command (``Driver.task_pid``: it
leads its process group, past the whole set-up chain), then destroyed:

- floor: Python's ``subprocess.Popen`` spawning COUNT ``sleep`` processes;
- raw_exec: :class:`podium.drivers.RawExecDriver` (the shim, no isolation);
- exec: :class:`podium.drivers.ExecDriver` (namespaces, cgroups, own root, own uid).

It prints each run, the medians, and the ratios exec/raw_exec and exec/floor (medians of the
per-run ratios).  Needs root, cgroups and util-linux (as the exec driver does).  Results go in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from podium.drivers import ExecDriver, ProcessDriver, RawExecDriver
from podium.drivers.base import TaskContext
from podium.models import Resources
from podium.models.taskconfig import ExecConfig

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def floor(count: int) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["sleep", "3600"]) for _ in range(count)]
    took = time.perf_counter() - t0
    for p in procs:
        p.kill()
        p.wait()
    return took


def context(base: Path, i: int) -> TaskContext:
    alloc = str(uuid.uuid4())
    alloc_dir = base / alloc
    task_dir = alloc_dir / "sleep"
    task_dir.mkdir(parents=True)
    (alloc_dir / "alloc").mkdir()
    return TaskContext(
        alloc_id=alloc,
        task_name="sleep",
        job_id="bench",
        group="g",
        alloc_index=i,
        node_id="node",
        config=ExecConfig(command="sleep", args=["3600"]),
        env={"PATH": PATH},
        resources=Resources(cpu=1, memory=16),
        alloc_dir=str(alloc_dir),
        task_dir=str(task_dir),
        stdout_path=str(task_dir / "stdout.log"),
        stderr_path=str(task_dir / "stderr.log"),
    )


async def burst(driver: ProcessDriver, count: int, base: Path) -> float:
    ctxs = [context(base, i) for i in range(count)]
    t0 = time.perf_counter()
    handles = await asyncio.gather(*(driver.start(c) for c in ctxs))
    pids = await asyncio.gather(*(driver.task_pid(h) for h in handles))
    took = time.perf_counter() - t0
    if None in pids:
        raise SystemExit(f"exec_start: {pids.count(None)} of {count} {driver.name} tasks exited")
    await asyncio.gather(*(driver.destroy(h) for h in handles))
    return took


async def measure(args: argparse.Namespace) -> None:
    """All runs on one event loop: a driver keeps loop-bound watches of its tasks."""
    if os.geteuid() != 0:
        raise SystemExit("exec_start: needs root (the exec driver does)")
    exec_driver = ExecDriver("podium-bench")
    why = exec_driver.fingerprint()
    if not why.healthy:
        raise SystemExit(f"exec_start: the exec driver cannot run here: {why.description}")
    raw = RawExecDriver("podium-bench")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    rows: list[tuple[float, float, float]] = []
    data = Path(tempfile.mkdtemp(prefix="podium-exec-bench-"))
    try:
        for run in range(1, args.runs + 1):
            f = floor(args.count)
            r = await burst(raw, args.count, data / f"raw{run}")
            e = await burst(exec_driver, args.count, data / f"exec{run}")
            rows.append((f, r, e))
            print(
                f"run {run}: floor {f:.3f}s  raw_exec {r:.3f}s  exec {e:.3f}s  "
                f"exec/raw_exec {e / r:.2f}x  exec/floor {e / f:.1f}x"
            )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    per = 1000 / args.count
    print(
        f"median of {args.runs} runs, {args.count} tasks at once: floor {med[0]:.3f}s, "
        f"raw_exec {med[1]:.3f}s, exec {med[2]:.3f}s "
        f"({med[2] * per:.1f} ms a task vs raw_exec {med[1] * per:.1f} ms); "
        f"exec/raw_exec {statistics.median(e / r for _, r, e in rows):.2f}x, "
        f"exec/floor {statistics.median(e / f for f, _, e in rows):.1f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    asyncio.run(measure(ap.parse_args()))


if __name__ == "__main__":
    main()
