"""Periodic and dispatched jobs end to end: the real CLI against a real
``podium agent --dev`` running real processes (raw_exec).

Overlap is judged from what the tasks themselves recorded (the time each wrote when it
started and when it ended), never from the test's clock."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import DevAgent, as_json, wait_until, write_job

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DATE = shutil.which("date") or "/bin/date"


def periodic(job: str, seconds: float) -> str:
    """A batch job launched every 2 s, prohibit_overlap, whose task runs ``seconds``
    and prints its own start and end times (nanoseconds)."""
    return f"""
job: {job}
type: batch
periodic: {{cron: "*/2 * * * * *", prohibit_overlap: true}}
groups:
  g:
    restart: {{attempts: 0}}
    reschedule: {{attempts: 0}}
    tasks:
      t:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "echo start $({DATE} +%s%N); sleep {seconds}; echo end $({DATE} +%s%N)"]
        resources: {{cpu: 50, memory: 16}}
"""


def children(agent: DevAgent, job: str) -> list[dict[str, Any]]:
    return list(agent.get(f"/v1/job/{job}/children"))


def allocs_of(agent: DevAgent, job_id: str) -> list[dict[str, Any]]:
    return list(agent.get(f"/v1/job/{quote(job_id, safe='')}/allocations"))


def stdout_of(agent: DevAgent, alloc_id: str) -> str:
    found = list(agent.data_dir.rglob(f"{alloc_id}/alloc/logs/t.stdout")) + list(
        agent.data_dir.rglob(f"{alloc_id}/alloc/logs/main.stdout")
    )
    assert found, f"no stdout log for allocation {alloc_id}"
    return found[0].read_text()


def completed_runs(agent: DevAgent, job: str) -> list[tuple[str, int, int]]:
    """(child id, start ns, end ns) of every launch that finished, as its task wrote."""
    runs = []
    for child in children(agent, job):
        for a in allocs_of(agent, child["id"]):
            if a["client_status"] != "complete":
                continue
            times = dict(line.split() for line in stdout_of(agent, a["id"]).splitlines())
            runs.append((child["id"], int(times["start"]), int(times["end"])))
    return sorted(runs, key=lambda r: r[1])


def launch_time(child_id: str) -> int:
    return int(child_id.rsplit("-", 1)[1])


def test_a_periodic_job_every_2s_runs_without_overlap(dev_agent: DevAgent, tmp_path: Path) -> None:
    short = write_job(tmp_path, periodic("quick", 1), "quick.yaml")
    long = write_job(tmp_path, periodic("slow", 2.5), "slow.yaml")
    out = dev_agent.cli("job", "run", short, check=True).stdout
    assert "Periodic job: next launch" in out
    dev_agent.cli("job", "run", long, check=True)
    assert dev_agent.allocs("quick") == []  # the template itself is never placed

    n = 4
    quick = wait_until(
        lambda: (r := completed_runs(dev_agent, "quick")) and len(r) >= n and r,
        timeout=90,
        what=f"{n} finished launches of quick",
    )
    slow = wait_until(
        lambda: (r := completed_runs(dev_agent, "slow")) and len(r) >= 3 and r,
        timeout=90,
        what="3 finished launches of slow",
    )
    dev_agent.cli("job", "stop", "quick", check=True)
    dev_agent.cli("job", "stop", "slow", check=True)

    for runs in (quick, slow):
        for (_, _, end), (_, start, _) in itertools.pairwise(runs):
            assert start > end, f"a launch started before the previous one ended: {runs}"
    # launches are every 2 s on the even second; the quick task (1 s) needs no skipping,
    # so its first n launches took about n*2 s (a skip costs 2 s more: allowed twice on
    # a busy machine); the slow one (2.5 s) must skip every other launch at least
    at_quick = sorted(launch_time(c) for c, _, _ in quick[:n])
    assert all(t % 2 == 0 for t in at_quick)
    assert at_quick[-1] - at_quick[0] <= (n - 1) * 2 + 4, at_quick
    at_slow = sorted(launch_time(c) for c, _, _ in slow)
    assert all(b - a >= 4 for a, b in itertools.pairwise(at_slow)), at_slow

    # the parent's status lists its launches; the job list counts them under it
    status = dev_agent.cli("job", "status", "quick", check=True).stdout
    assert "Children" in status and "quick/periodic-" in status
    listing = dev_agent.cli("job", "status", check=True).stdout
    assert "batch/periodic" in listing and "quick/periodic-" not in listing
    assert "quick/periodic-" in dev_agent.cli("job", "status", "--children", check=True).stdout


def test_periodic_force_launches_now(dev_agent: DevAgent, tmp_path: Path) -> None:
    job = write_job(tmp_path, periodic("later", 0.1).replace("*/2 * * * * *", "0 0 1 1 *"))
    dev_agent.cli("job", "run", job, check=True)
    forced = as_json(dev_agent.cli("job", "periodic", "force", "later", "-o", "json", check=True))
    child = forced["job_id"]
    assert child.startswith("later/periodic-")
    wait_until(
        lambda: any(a["client_status"] == "complete" for a in allocs_of(dev_agent, child)),
        timeout=60,
        what="the forced launch to finish",
    )
    assert [c["id"] for c in children(dev_agent, "later")] == [child]  # once a year only
    refused = dev_agent.cli("job", "periodic", "force", "nope")
    assert refused.returncode != 0 and "not found" in refused.stderr

    # the example, as written: launches every 10 s, and once more when forced
    dev_agent.cli("job", "run", str(EXAMPLES / "periodic.yaml"), check=True)
    dev_agent.cli("job", "periodic", "force", "report-cron", check=True)
    alloc = wait_until(
        lambda: [
            a
            for c in children(dev_agent, "report-cron")
            for a in allocs_of(dev_agent, c["id"])
            if a["client_status"] == "complete"
        ],
        timeout=60,
        what="a launch of examples/periodic.yaml to finish",
    )[0]
    assert "report for launch report-cron/periodic-" in stdout_of(dev_agent, alloc["id"])
    dev_agent.cli("job", "stop", "report-cron", check=True)


def test_a_dispatched_job_reads_its_payload_and_meta(dev_agent: DevAgent, tmp_path: Path) -> None:
    # the example, as written
    dev_agent.cli("job", "run", str(EXAMPLES / "dispatch.yaml"), check=True)
    assert dev_agent.allocs("greet") == []
    out = dev_agent.cli(
        "job",
        "dispatch",
        "greet",
        "--meta",
        "name=Ada",
        "--idempotency-token",
        "retry-1",
        "-",
        "-o",
        "json",
        input="hello from the payload\n",
        check=True,
    )
    first = json.loads(out.stdout)["dispatched_job_id"]
    assert first.startswith("greet/dispatch-")
    alloc = wait_until(
        lambda: [a for a in allocs_of(dev_agent, first) if a["client_status"] == "complete"],
        timeout=60,
        what="the dispatched job to finish",
    )[0]
    log = stdout_of(dev_agent, alloc["id"])
    assert "Hello, Ada!" in log
    assert "payload:\nhello from the payload" in log

    # a retry with the same token is the same dispatch; another token is another one
    again = as_json(
        dev_agent.cli(
            "job",
            "dispatch",
            "greet",
            "--meta",
            "name=Ada",
            "--idempotency-token",
            "retry-1",
            "-o",
            "json",
            check=True,
        )
    )
    assert again["dispatched_job_id"] == first and again["existing"] is True
    payload = tmp_path / "p.txt"
    payload.write_text("second\n")
    other = dev_agent.cli(
        "job",
        "dispatch",
        "greet",
        "--meta",
        "name=Bob",
        "--meta",
        "greeting=Bonjour",
        str(payload),
        check=True,
    ).stdout
    assert "Dispatched job greet/dispatch-" in other
    assert len(children(dev_agent, "greet")) == 2

    # bad dispatches say what is wrong and make nothing
    for args, says in (
        ((), "required meta missing: name"),
        (("--meta", "name=x", "--meta", "colour=red"), "not declared by the job: colour"),
        (("--meta", "nokey"), "KEY=VALUE"),
    ):
        bad = dev_agent.cli("job", "dispatch", "greet", *args)
        assert bad.returncode != 0 and says in bad.stderr, bad.stderr
    big = tmp_path / "big"
    big.write_bytes(b"x" * (16 * 1024 + 1))
    bad = dev_agent.cli("job", "dispatch", "greet", "--meta", "name=x", str(big))
    assert bad.returncode != 0 and "16 KiB" in bad.stderr
    assert len(children(dev_agent, "greet")) == 2
    status = dev_agent.cli("job", "status", "greet", check=True).stdout
    assert "Parameterized" in status and first in status
