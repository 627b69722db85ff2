"""An agent that lost its state (``agent.db``, or its whole data dir) while tasks ran
stops the tasks it had started when it comes back: a raw_exec shim and its task (found in
/proc by the shim's command line) and a docker container (found by its data-dir label),
each logged.  It never touches another agent's tasks on the same machine, and a normal
restart (state intact) re-attaches and stops nothing.  Real agents, processes, engine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DevAgent, free_port, recorded_pids, wait_until, write_job

IMAGE = "podium-test/busybox:1"


def _engine() -> Any:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        client.version()
        client.images.get(IMAGE)
        return client
    except Exception:
        return None


CLIENT = _engine()
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or CLIENT is None, reason="needs root and a Docker Engine with " + IMAGE
)

JOB = f"""
job: keep
type: service
groups:
  procs:
    tasks:
      sleeper:
        driver: raw_exec
        config: {{command: /bin/sh, args: ["-c", "echo up; exec sleep 3600"]}}
  boxes:
    tasks:
      box:
        driver: docker
        resources: {{memory: 32, cpu: 100}}
        config: {{image: {IMAGE}, command: /bin/sleep, args: ["3600"]}}
"""
OTHER = """
job: other
type: service
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sh, args: ["-c", "exec sleep 3600"]}
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def containers(data_dir: Path) -> list[Any]:
    label = f"podium.data_dir={data_dir / 'agent'}"
    return list(CLIENT.containers.list(all=True, filters={"label": label}))


def make_agent(tmp_path: Path, name: str) -> DevAgent:
    return DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / name,
        log_path=tmp_path / f"{name}.log",
    )


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[DevAgent]]:
    made: list[DevAgent] = []
    yield made
    for agent in made:
        agent.cleanup()
        for c in containers(agent.data_dir):
            c.remove(force=True)


def start_keep(agent: DevAgent, tmp_path: Path) -> tuple[list[int], str]:
    agent.cli("job", "run", write_job(tmp_path, JOB, "keep.yaml"), check=True, timeout=90)
    agent.wait_running("keep", 2, timeout=90)
    pids = wait_until(
        lambda: (p := list(recorded_pids(agent.data_dir))) and p,
        what="the raw_exec task's recorded pid",
    )
    (box,) = wait_until(lambda: containers(agent.data_dir), what="the container")
    assert all(alive(p) for p in pids)
    return pids, box.id


def _secrets_mounts(data_dir: Path) -> list[str]:
    top = str(data_dir.resolve()) + "/"
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if " podium-secrets " in line and line.split()[4].startswith(top)
    ]


@pytest.mark.parametrize("lost", ["data dir", "agent.db"])
def test_an_agent_that_lost_its_state_stops_the_tasks_it_started(
    tmp_path: Path, agents: list[DevAgent], lost: str
) -> None:
    other = make_agent(tmp_path, "other")  # another agent on this machine, same engine
    agents.append(other)
    other.start()
    other.cli("job", "run", write_job(tmp_path, OTHER, "other.yaml"), check=True, timeout=90)
    other.wait_running("other", 1, timeout=60)
    other_pids = wait_until(
        lambda: (p := list(recorded_pids(other.data_dir))) and p, what="the other agent's task"
    )

    agent = make_agent(tmp_path, "lost")
    agents.append(agent)
    agent.start()
    pids, box = start_keep(agent, tmp_path)

    agent.kill9()
    assert _secrets_mounts(agent.data_dir)  # the tasks' secrets/ dirs: tmpfs (issue 14)
    if lost == "data dir":
        # as `rm -rf` does: all but the busy mount points (and the dirs they are in)
        shutil.rmtree(agent.data_dir, ignore_errors=True)
    else:
        (agent.data_dir / "agent" / "agent.db").unlink()
    assert all(alive(p) for p in pids)  # orphans now: nothing owns them
    agent.start()

    wait_until(lambda: not any(alive(p) for p in pids), timeout=30, what="the orphans to stop")
    wait_until(
        lambda: box not in {c.id for c in CLIENT.containers.list(all=True)},
        timeout=30,
        what="the orphaned container to be removed",
    )
    log = wait_until(
        lambda: (text := agent.log_path.read_text()).count("stopped orphaned task") >= 2 and text,
        what="both orphans in the agent's log",
    )
    assert "raw_exec task" in log and "docker task" in log
    assert not _secrets_mounts(agent.data_dir)  # taken off: no allocation owns them
    # the other agent's task on the same machine was not touched
    assert all(alive(p) for p in other_pids)
    assert other.running("other")


def test_a_normal_restart_reattaches_and_stops_nothing(
    tmp_path: Path, agents: list[DevAgent]
) -> None:
    agent = make_agent(tmp_path, "restarted")
    agents.append(agent)
    agent.start()
    pids, box = start_keep(agent, tmp_path)
    agent.kill9()
    agent.start()
    wait_until(
        lambda: "re-attached to" in agent.log_path.read_text(), what="the agent to re-attach"
    )
    agent.wait_running("keep", 2, timeout=30)
    assert all(alive(p) for p in pids)
    assert CLIENT.containers.get(box).status == "running"
    assert "stopped orphaned task" not in agent.log_path.read_text()
