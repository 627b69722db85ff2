"""End to end: the agent and the server restarted, even with kill -9, lose nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from tests.e2e.conftest import DevAgent, wait_until, write_job

SLEEPER = """
job: keep
groups:
  g:
    count: 2
    restart: {attempts: 3, interval: 1m, delay: 100ms}
    tasks:
      t:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "echo up; while true; do sleep 0.2; done"]
"""


def test_agent_kill9_keeps_tasks_and_reattaches(dev_agent: DevAgent, tmp_path: Path) -> None:
    dev_agent.cli("job", "run", write_job(tmp_path, SLEEPER), check=True)
    before = dev_agent.wait_running("keep", 2)
    pids = {a["id"]: a["task_states"]["t"]["pid"] for a in before}

    dev_agent.kill9()
    # the tasks outlive the agent
    assert all(psutil.pid_exists(p) for p in pids.values())
    dev_agent.start()

    after = dev_agent.wait_running("keep", 2)
    assert {a["id"] for a in after} == set(pids)
    for a in after:
        state = a["task_states"]["t"]
        assert state["pid"] == pids[a["id"]], "the task was restarted"
        assert state["restarts"] == 0
    wait_until(
        lambda: all(
            any(e["type"] == "Reattached" for e in a["task_states"]["t"]["events"])
            for a in dev_agent.allocs("keep")
        ),
        what="Reattached events",
    )

    # the re-attached agent still notices the task's exit and records its code
    victim_id, victim_pid = next(iter(pids.items()))
    os.kill(victim_pid, signal.SIGKILL)

    def restarted() -> bool:
        a = dev_agent.get(f"/v1/allocation/{victim_id}")
        s = a["task_states"]["t"]
        return s["restarts"] == 1 and s["state"] == "running" and s["pid"] != victim_pid

    wait_until(restarted, what="the killed task to be restarted by the re-attached agent")
    events = dev_agent.get(f"/v1/allocation/{victim_id}")["task_states"]["t"]["events"]
    assert any(e["type"] == "Terminated" and e.get("signal") == 9 for e in events)


def test_server_kill9_loses_no_job_and_restarts_no_task(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    dev_agent.cli("job", "run", write_job(tmp_path, SLEEPER), check=True)
    dev_agent.cli("job", "scale", "keep", "g", "3", check=True)
    before = dev_agent.wait_running("keep", 3)
    pids = {a["id"]: a["task_states"]["t"]["pid"] for a in before}
    versions = dev_agent.get("/v1/job/keep/versions")

    dev_agent.kill9()  # the dev agent is the server too: its store goes down hard
    dev_agent.start()

    assert dev_agent.get("/v1/job/keep/versions") == versions
    after = dev_agent.wait_running("keep", 3)
    assert {a["id"]: a["task_states"]["t"]["pid"] for a in after} == pids
    assert all(a["task_states"]["t"]["restarts"] == 0 for a in after)
    # and the cluster still takes work
    dev_agent.cli("job", "scale", "keep", "g", "1", check=True)
    dev_agent.wait_running("keep", 1)
