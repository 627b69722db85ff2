"""End to end: a high-priority job on a full node preempts the lowest-priority allocations.

A real ``podium agent --dev`` (server and client in one process) runs real processes
(raw_exec ``sleep``).  The jobs are sized from the node's own fingerprinted capacity, so
that four instances of a priority-20 job fill its cpu exactly, whatever machine runs
the test.  With service preemption turned on through the real CLI, ``job plan`` of a
priority-80 job asking half the node lists two preemptions; running it stops exactly
two of the low job's allocations, marked with what preempted them; their job queues
their replacements (blocked: no room); once the high job stops, the replacements run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from tests.e2e.conftest import DevAgent, as_json, wait_until, write_job

JOB = """
job: {name}
priority: {priority}
groups:
  {name}:
    count: {count}
    tasks:
      main:
        driver: raw_exec
        config:
          command: /bin/sleep
          args: ["3600"]
        resources:
          cpu: {cpu}
          memory: 32
"""


def node_cpu(agent: DevAgent) -> int:
    (node,) = agent.get("/v1/nodes")
    full = agent.get(f"/v1/node/{node['id']}")
    full = full.get("node", full)
    return int(full["resources"]["cpu"]) - int(full.get("reserved", {}).get("cpu", 0))


def pid_of(alloc: dict[str, Any]) -> int:
    return int(alloc["task_states"]["main"]["pid"])


def test_high_priority_job_preempts_and_victims_are_rescheduled(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    cap = node_cpu(dev_agent)
    quarter = cap // 4
    assert quarter >= 100, f"node too small to divide: {cap} MHz"

    out = dev_agent.cli("operator", "scheduler", "set-config", "--preempt", "service,system")
    assert out.returncode == 0, out.stdout + out.stderr
    got = as_json(dev_agent.cli("operator", "scheduler", "get-config", "-o", "json", check=True))
    assert got["preemption_config"]["service_scheduler_enabled"] is True

    low = write_job(tmp_path, JOB.format(name="low", priority=20, count=4, cpu=quarter), "low.yaml")
    dev_agent.cli("job", "run", low, check=True)
    before = dev_agent.wait_running("low", 4, timeout=60)
    low_pids = {a["id"]: pid_of(a) for a in before}

    high = write_job(
        tmp_path, JOB.format(name="high", priority=80, count=1, cpu=2 * quarter), "high.yaml"
    )
    plan = dev_agent.cli("job", "plan", high)
    assert plan.returncode == 1, plan.stdout + plan.stderr  # it would place and preempt
    assert "Preemptions: 2 allocations of lower-priority jobs would be stopped" in plan.stdout
    assert plan.stdout.count("(job 'low', priority 20;") == 2
    assert len(dev_agent.running("low")) == 4  # a plan changes nothing

    dev_agent.cli("job", "run", high, "--detach", check=True)
    (winner,) = dev_agent.wait_running("high", 1, timeout=60)

    def preempted() -> list[dict[str, Any]]:
        return [a for a in dev_agent.allocs("low") if a.get("preempted_by_alloc")]

    victims = wait_until(
        lambda: (v := preempted()) and len(v) == 2 and v, timeout=30, what="two preemptions"
    )
    for v in victims:
        assert v["preempted_by_alloc"] == winner["id"]
        assert v["preempted_by_job"] == "high"
        assert v["desired_status"] == "stop"
        assert v["desired_description"].startswith("preempted by allocation")
    assert sorted(winner.get("preempted_allocations") or []) == sorted(v["id"] for v in victims)
    shown = dev_agent.cli("alloc", "status", victims[0]["id"], check=True).stdout
    assert "Preempted By" in shown and winner["id"][:8] in shown and "job high" in shown, shown
    # the victims' processes are stopped for real; the other two keep running
    victim_ids = {v["id"] for v in victims}
    wait_until(
        lambda: all(
            dev_agent.get(f"/v1/allocation/{i}")["client_status"] == "complete" for i in victim_ids
        ),
        timeout=60,
        what="the preempted allocations to stop",
    )
    for alloc_id, pid in low_pids.items():
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert alive == (alloc_id not in victim_ids), alloc_id
    assert len(dev_agent.running("low")) == 2

    # their job queued the replacements: an evaluation triggered by the preemption, and
    # a blocked one waiting for room (polled: a capacity change re-runs it meanwhile)
    def evals() -> list[dict[str, Any]]:
        return list(dev_agent.get("/v1/job/low/evaluations"))

    assert any(e["triggered_by"] == "preemption" for e in evals())
    wait_until(
        lambda: any(e["status"] == "blocked" for e in evals()),
        timeout=30,
        what="the low job's blocked evaluation",
    )
    status = dev_agent.cli("job", "status", "low", check=True).stdout
    assert "preempted" in status, status

    # room appears: the high job stops, the replacements run, linked to their victims
    dev_agent.cli("job", "stop", "high", "--detach", check=True)
    after = dev_agent.wait_running("low", 4, timeout=90)
    new = [a for a in after if a["id"] not in low_pids]
    assert len(new) == 2
    assert {a["previous_allocation"] for a in new} == victim_ids
