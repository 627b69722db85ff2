"""``alloc signal`` and ``alloc restart`` through the isolating drivers (issue 16): the
exec driver's process group and a Docker container, each with a shell that traps USR1.
(raw_exec is tests/e2e/test_alloc_ops.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DevAgent, wait_until, write_job
from tests.e2e.test_docker import IMAGE
from tests.e2e.test_docker import SKIP as NO_DOCKER

SCRIPT = (
    "trap 'echo got-usr1 >> $PODIUM_TASK_DIR/signals.txt' USR1; "
    "touch $PODIUM_TASK_DIR/ready; while true; do sleep 1; done"
)
CONFIGS = {
    "exec": "command: /bin/sh",
    "docker": f"image: {IMAGE}\n          command: /bin/sh",
}


def job(driver: str) -> str:
    return f"""
job: {driver}-ops
groups:
  g:
    restart: {{attempts: 0, mode: fail}}
    tasks:
      t:
        driver: {driver}
        resources: {{memory: 32, cpu: 100}}
        config:
          {CONFIGS[driver]}
          args: ["-c", "{SCRIPT}"]
"""


def _state(agent: DevAgent, alloc_id: str) -> dict[str, Any]:
    state: dict[str, Any] = agent.get(f"/v1/allocation/{alloc_id}")["task_states"]["t"]
    return state


@pytest.mark.parametrize("driver", ["exec", "docker"])
def test_signal_and_restart_through_the_driver(
    dev_agent: DevAgent, tmp_path: Path, driver: str
) -> None:
    if driver == "docker" and NO_DOCKER:
        pytest.skip(NO_DOCKER)
    info = dev_agent.get("/v1/nodes")[0]["drivers"].get(driver, {})
    if not info.get("healthy"):
        pytest.skip(f"{driver} driver unhealthy here: {info.get('description')}")
    dev_agent.cli("job", "run", write_job(tmp_path, job(driver)), check=True, timeout=120)
    [alloc] = dev_agent.wait_running(f"{driver}-ops", 1, timeout=60)
    aid = alloc["id"]
    wait_until(
        lambda: dev_agent.cli("alloc", "fs", aid, "t/ready", "--stat").returncode == 0,
        what="the trap to be set",
    )
    started = _state(dev_agent, aid)["started_at"]
    dev_agent.cli("alloc", "signal", aid, "-s", "USR1", check=True)
    wait_until(
        lambda: "got-usr1" in dev_agent.cli("alloc", "fs", aid, "t/signals.txt").stdout,
        what=f"the {driver} task to trap USR1",
    )
    assert _state(dev_agent, aid)["started_at"] == started, "a signal is not a restart"

    dev_agent.cli("alloc", "restart", aid, check=True)

    def again() -> bool:
        s = _state(dev_agent, aid)
        return s["state"] == "running" and s["started_at"] != started

    wait_until(again, timeout=60, what=f"the {driver} task to run again")
    s = _state(dev_agent, aid)
    assert s["restarts"] == 0
    assert [e["type"] for e in s["events"]].count("Restart Signaled") == 1
    assert dev_agent.get(f"/v1/allocation/{aid}")["client_status"] == "running"
