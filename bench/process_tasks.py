"""Benchmark: 1,000 raw_exec `sleep` tasks through Podium's whole path, against the floor.

    python bench/process_tasks.py [--count 1000] [--runs 5] [--tty] [--skip-api]

For each run it measures, in the same process and on the same machine:

- floor: Python's subprocess.Popen spawning the same number of `sleep` processes
  (nothing else: no API, no scheduler, no bookkeeping, no files);
- files: creating the directories and log files that many task starts create (not a
  target: the disk's share of a run, see DATA);
- cli: what a user sees.  On a fresh `podium agent --dev`, the real `podium job run FILE`
  (the installed console script beside this Python) is spawned with a job file of one
  group of COUNT raw_exec `sleep 3600` tasks, and timed from that spawn until the command
  exits.  `job run` of a job without an update block follows the job's allocations and
  exits 0 only once it has seen every one of the new version running with all its tasks
  running, so its exit is the later of the two ends (the server had them all running
  before the CLI could see it); the benchmark then checks the server's summary says
  COUNT running, and counts a run that did not as a failure.  The command's output goes
  to a pipe (plain output, as in a log or CI), or with --tty to a pseudo-terminal
  (120x40), as a person at a terminal sees it, live view and all;
- cli start: `podium version` on its own, the part of the above that is only the
  command's own start-up (interpreter, imports, Typer), and the CLI process's CPU time;
- api: on another fresh dev agent, from `POST /v1/jobs` until the server reports all COUNT
  allocations running (through API, evaluation, scheduler, plan commit to SQLite, agent
  sync, driver start and the agents' batched status reports), with no CLI;
- the dev agent's RSS with the COUNT tasks running (server and agent in one process),
  right after the CLI's exit (the figure a user sees), and the per-task supervision cost:
  the PSS of each task's shim process.

It prints each run, then medians and each figure's ratio to the floor of the same run
(median of the per-run ratios).  Results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import pty
import resource
import shutil
import statistics
import struct
import subprocess
import tempfile
import termios
import threading
import time
from pathlib import Path

import psutil
from devagent import PODIUM, dev_agent, wait_group_running

DATA = Path(__file__).with_name("out")
"""Where the dev agents' data dirs go: a directory of this checkout (bench/out, ignored by
git), not the system's temp dir, and removed only after the last run.  ext4 on this VM
creates inodes 5-40x slower in a block group that saw many recent deletions (the kernel's
``recently_deleted`` scan): /tmp, churned by the test suites running beside, and any run
right after the previous one's data was deleted.  The floor creates no files; DATA keeps
that disk effect (reported as "files") from passing for Podium's own cost."""

JOB = """\
job: bench
type: service
groups:
  sleepers:
    count: {count}
    tasks:
      sleep:
        driver: raw_exec
        config:
          command: sleep
          args: ["3600"]
        resources:
          cpu: 1
          memory: 1
"""


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


def files_floor(count: int, parent: str) -> float:
    """Creating what a task's start creates on disk, and nothing else: its allocation's
    directories (the allocation, alloc/, alloc/logs, alloc/data, the task's, its .podium)
    and its two log files, where the dev agents' data goes.  Not a target: it says how
    much of a run the disk takes (see DATA below)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    base = tempfile.mkdtemp(prefix="podium-bench-files-", dir=parent)
    start = time.perf_counter()
    for i in range(count):
        alloc = f"{base}/{i}"
        for d in (alloc, f"{alloc}/alloc", f"{alloc}/alloc/logs", f"{alloc}/alloc/data"):
            os.mkdir(d)
        os.mkdir(f"{alloc}/sleep")
        os.mkdir(f"{alloc}/sleep/.podium")
        for stream in ("stdout", "stderr"):
            os.close(os.open(f"{alloc}/alloc/logs/sleep.{stream}", flags, 0o644))
    return time.perf_counter() - start


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def agent_memory(agent: subprocess.Popen[bytes]) -> tuple[float, float, int]:
    """The dev agent's RSS (MB), the median PSS of its tasks' shims (MB), and their number."""
    proc = psutil.Process(agent.pid)
    rss_mb = proc.memory_info().rss / 1e6
    shims = [c for c in proc.children(recursive=False) if c.name() in ("sh", "dash")]
    pss = statistics.median(pss_kb(c.pid) for c in shims) / 1024 if shims else 0.0
    return rss_mb, pss, len(shims)


def job_dict(count: int) -> dict[str, object]:
    return {
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


def api_run(count: int, parent: str) -> dict[str, float]:
    with dev_agent(stop_timeout=30, data_parent=parent) as (client, agent):
        start = time.perf_counter()
        client.post("/v1/jobs", json={"job": job_dict(count)}).raise_for_status()
        wait_group_running(client, "bench", "sleepers", count)
        elapsed = time.perf_counter() - start
        rss_mb, pss, shims = agent_memory(agent)
        return {"seconds": elapsed, "rss_mb": rss_mb, "shim_pss_mb": pss, "shims": shims}


def _spawn_cli(argv: list[str], tty: bool) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """Start the command with its output on a pseudo-terminal (or a pipe), drained by a thread."""
    env = dict(os.environ)
    out: list[bytes] = []
    if not tty:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        reader = proc.stdout
        assert reader is not None
        threading.Thread(target=lambda: out.append(reader.read()), daemon=True).start()
        return proc, out
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env["TERM"] = env.get("TERM") or "xterm-256color"
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the command has exited and the terminal is closed
                break
            if not chunk:
                break
            out.append(chunk)
        os.close(master)

    threading.Thread(target=drain, daemon=True).start()
    return proc, out


def cli_run(count: int, tty: bool, parent: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="podium-bench-job-") as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(JOB.format(count=count))
        with dev_agent(stop_timeout=30, data_parent=parent) as (client, agent):
            argv = [str(PODIUM), "job", "run", str(path), "--address", str(client.base_url)]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc, out = _spawn_cli(argv, tty)
            code = proc.wait()
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            rss_mb, _, _ = agent_memory(agent)
            summary = client.get("/v1/job/bench").json()["summary"]["sleepers"]
            time.sleep(0.2)  # let the drain thread take the last output
            output = b"".join(out)
            if code != 0 or summary["running"] != count:
                tail = output[-2000:].decode(errors="replace")
                raise RuntimeError(f"`podium job run` exited {code}; server: {summary}\n{tail}")
            # a person reads the output after the command ends: the trailing settle time of
            # memory is not what they see, but what the agent holds later is worth knowing
            time.sleep(2.0)
            rss_later, _, _ = agent_memory(agent)
            return {
                "seconds": elapsed,
                "rss_mb": rss_mb,
                "rss_later_mb": rss_later,
                "output_kb": len(output) / 1024,
                "cpu": cli_cpu,
            }


def cli_start() -> float:
    start = time.perf_counter()
    subprocess.run([str(PODIUM), "version"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--tty",
        action="store_true",
        help="run `podium job run` on a pseudo-terminal (live view) instead of a pipe",
    )
    parser.add_argument("--skip-api", action="store_true", help="measure only the CLI's path")
    parser.add_argument(
        "--data-parent",
        default=str(DATA),
        help="where the dev agents' data dirs go (default: bench/out; see DATA)",
    )
    args = parser.parse_args()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("\n")
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {platform.node()} {platform.machine()} ({cpu}), {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}, "
        f"cli on {'a pseudo-terminal' if args.tty else 'a pipe'}"
    )
    os.makedirs(args.data_parent, exist_ok=True)
    data = tempfile.mkdtemp(prefix="process_tasks-", dir=args.data_parent)
    try:
        rows = measure(args, data)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    report(args, rows)


def measure(args: argparse.Namespace, data: str) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    for i in range(args.runs):
        row: dict[str, float] = {
            "floor": floor(args.count),
            "files": files_floor(args.count, data),
            "start": cli_start(),
        }
        cli = cli_run(args.count, args.tty, data)
        row.update(
            cli=cli["seconds"],
            cli_rss=cli["rss_mb"],
            cli_rss_later=cli["rss_later_mb"],
            out_kb=cli["output_kb"],
            cli_cpu=cli["cpu"],
        )
        if not args.skip_api:
            api = api_run(args.count, data)
            row.update(api=api["seconds"], api_rss=api["rss_mb"], pss=api["shim_pss_mb"])
        rows.append(row)
        api_text = (
            ""
            if args.skip_api
            else f"  api {row['api']:.2f}s ({row['api'] / row['floor']:.1f}x)"
            f"  shim pss {row['pss']:.2f} MB"
        )
        print(
            f"run {i + 1}: floor {row['floor']:.2f}s  files {row['files']:.2f}s  "
            f"cli {row['cli']:.2f}s "
            f"({row['cli'] / row['floor']:.1f}x, its own CPU {row['cli_cpu']:.2f}s)  "
            f"cli start {row['start']:.2f}s{api_text}  "
            f"rss {row['cli_rss']:.0f} MB ({row['cli_rss_later']:.0f} MB 2 s later)  "
            f"output {row['out_kb']:.0f} KB",
            flush=True,
        )
    return rows


def report(args: argparse.Namespace, rows: list[dict[str, float]]) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    def ratio(key: str) -> float:
        return statistics.median(r[key] / r["floor"] for r in rows)

    n = args.count
    print()
    print(f"{n} tasks, median of {args.runs} runs (ratios: median of each run's figure / floor)")
    print(f"  floor (Python spawns {n} sleeps):                {med('floor'):6.2f} s")
    print(
        f"  (creating {n} tasks' dirs and log files here:     {med('files'):6.2f} s"
        f"   {ratio('files'):.1f}x floor: the disk's share, not a target)"
    )
    print(
        f"  cli: `podium job run` spawned → exits, all running: {med('cli'):6.2f} s"
        f"   {ratio('cli'):.1f}x floor (target ≤ 4x)"
    )
    print(
        f"    of which the CLI's start (`podium version`):     {med('start'):6.2f} s"
        f"   {ratio('start'):.1f}x floor"
    )
    print(f"    the CLI process's own CPU time:                   {med('cli_cpu'):6.2f} s")
    if not args.skip_api:
        print(
            f"  api: POST /v1/jobs → server reports all running:  {med('api'):6.2f} s"
            f"   {ratio('api'):.1f}x floor"
        )
    print(
        f"  dev agent RSS, {n} tasks running, at the CLI's exit: {med('cli_rss'):5.0f} MB"
        f"  (target < 100 MB; 2 s later: {med('cli_rss_later'):.0f} MB)"
    )
    if not args.skip_api:
        print(f"  dev agent RSS after the API path:                 {med('api_rss'):5.0f} MB")
        print(f"  supervision cost per task (shim PSS):             {med('pss'):5.2f} MB")


if __name__ == "__main__":
    main()
