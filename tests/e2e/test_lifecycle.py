"""End to end: the real CLI against a real `podium agent --dev` running real processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import DevAgent, as_json, free_port, wait_until, write_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_run_status_logs_scale_history_stop(dev_agent: DevAgent) -> None:
    run = dev_agent.cli("job", "run", str(EXAMPLES / "hello.yaml"), check=True)
    assert "running" in run.stdout.lower()
    allocs = dev_agent.wait_running("hello", 2)
    pids = [a["task_states"]["server"]["pid"] for a in allocs]
    assert all(psutil.pid_exists(p) for p in pids)

    status = dev_agent.cli("job", "status", "hello", check=True)
    assert "hello" in status.stdout and "running" in status.stdout

    alloc_id = allocs[0]["id"]
    logs = wait_until(
        lambda: (
            (r := dev_agent.cli("alloc", "logs", alloc_id[:8])).returncode == 0
            and "hello from" in r.stdout
            and r
        ),
        timeout=15,
        what="the task's output in alloc logs",
    )
    assert f"allocation {alloc_id}" in logs.stdout

    alloc_status = dev_agent.cli("alloc", "status", alloc_id[:6], check=True)
    assert "server" in alloc_status.stdout and "Started" in alloc_status.stdout

    dev_agent.cli("job", "scale", "hello", "web", "3", check=True)
    dev_agent.wait_running("hello", 3)
    history = dev_agent.cli("job", "history", "hello", "-o", "json", check=True)
    versions = as_json(history)
    assert [v["version"] for v in versions] == [1, 0]
    assert any("count" in line for line in versions[0]["diff"])

    dev_agent.cli("job", "stop", "hello", check=True, timeout=60)
    wait_until(
        lambda: (
            not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
        ),
        timeout=15,
        what="the task processes to exit",
    )
    final = dev_agent.allocs("hello")
    assert all(a["desired_status"] == "stop" for a in final)
    assert all(a["client_status"] == "complete" for a in final)
    job = dev_agent.get("/v1/job/hello")
    assert job["status"] == "dead" and job["stop"] is True


def test_restart_on_failure_then_fail_with_exit_code(dev_agent: DevAgent, tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        """
job: flaky
groups:
  g:
    restart: {attempts: 2, interval: 1m, delay: 100ms, mode: fail}
    reschedule: {attempts: 0, unlimited: false}
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sh, args: ["-c", "echo starting; exit 3"]}
""",
    )
    # `job run` may see the task running before its first exit; what matters is the outcome
    dev_agent.cli("job", "run", path, timeout=60)
    alloc = wait_until(
        lambda: [a for a in dev_agent.allocs("flaky") if a["client_status"] == "failed"],
        what="a failed alloc",
    )[0]
    state = alloc["task_states"]["t"]
    assert state["restarts"] == 2
    assert state["exit_code"] == 3
    assert state["failed"] is True
    assert "restart policy" in alloc["client_description"]
    status = dev_agent.cli("alloc", "status", alloc["id"], check=True).stdout
    assert "exited with code 3" in status and "failed" in status


def test_batch_job_completes(dev_agent: DevAgent) -> None:
    dev_agent.cli("job", "run", str(EXAMPLES / "batch.yaml"), check=True, timeout=60)
    allocs = wait_until(
        lambda: (
            (a := dev_agent.allocs("report"))
            and all(x["client_status"] == "complete" for x in a)
            and a
        ),
        what="the batch allocation to complete",
    )
    assert allocs[0]["task_states"]
    assert all(s["exit_code"] == 0 for s in allocs[0]["task_states"].values())
    wait_until(
        lambda: dev_agent.get("/v1/job/report")["status"] == "dead", what="the batch job to be dead"
    )


def test_stop_honours_kill_signal_and_kill_timeout(dev_agent: DevAgent, tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        """
job: signals
groups:
  polite:
    tasks:
      t:
        driver: raw_exec
        kill_signal: SIGINT
        config:
          command: /bin/sh
          args: ["-c", "trap 'echo got INT; exit 0' INT; echo ready; while true; do sleep 0.1; done"]
  stubborn:
    tasks:
      t:
        driver: raw_exec
        kill_timeout: 2s
        config:
          command: /bin/sh
          args: ["-c", "trap 'echo ignoring TERM' TERM; echo ready; while true; do sleep 0.1; done"]
""",
    )
    dev_agent.cli("job", "run", path, check=True)
    allocs = dev_agent.wait_running("signals", 2)
    by_group = {a["group"]: a for a in allocs}
    wait_until(
        lambda: all("ready" in dev_agent.cli("alloc", "logs", a["id"]).stdout for a in allocs),
        what="both tasks to be ready",
    )
    started = time.monotonic()
    dev_agent.cli("job", "stop", "signals", check=True, timeout=60)
    elapsed = time.monotonic() - started
    polite_logs = dev_agent.cli("alloc", "logs", by_group["polite"]["id"], check=True).stdout
    assert "got INT" in polite_logs
    stubborn_logs = dev_agent.cli("alloc", "logs", by_group["stubborn"]["id"], check=True).stdout
    assert "ignoring TERM" in stubborn_logs
    assert elapsed >= 2.0  # the stubborn task was given its kill_timeout before SIGKILL
    stubborn = dev_agent.get(f"/v1/allocation/{by_group['stubborn']['id']}")
    assert stubborn["task_states"]["t"]["signal"] == 9


def test_bad_spec_is_refused_with_file_and_line(dev_agent: DevAgent, tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        """job: broken
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config:
          comand: /bin/true
""",
    )
    result = dev_agent.cli("job", "run", path)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert f"{path}:8" in out
    assert "did you mean 'command'" in out
    assert dev_agent.get("/v1/jobs") == []


def test_placement_failure_explains_itself(dev_agent: DevAgent, tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        """
job: huge
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["60"]}
        resources: {memory: 100000000}
""",
    )
    result = dev_agent.cli("job", "run", path, timeout=60)
    assert result.returncode == 3  # could not place
    assert "1 node evaluated: 1 exhausted memory" in result.stdout + result.stderr
    status = dev_agent.cli("job", "status", "huge", check=True)
    assert "exhausted memory" in status.stdout


def test_env_and_interpolation(dev_agent: DevAgent, tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        """
job: envjob
type: batch
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        env: {GREETING: "hi ${PODIUM_TASK_NAME}"}
        config:
          command: /bin/sh
          args: ["-c", "echo $GREETING; echo dir=${PODIUM_TASK_DIR}; env | grep ^PODIUM_ | sort"]
""",
    )
    dev_agent.cli("job", "run", path, check=True)
    alloc = wait_until(
        lambda: (a := dev_agent.allocs("envjob")) and a[0]["client_status"] == "complete" and a[0],
        what="completion",
    )
    out = dev_agent.cli("alloc", "logs", alloc["id"], check=True).stdout
    assert "hi t" in out
    for var in (
        "PODIUM_JOB_ID=envjob",
        "PODIUM_GROUP_NAME=g",
        "PODIUM_TASK_NAME=t",
        f"PODIUM_ALLOC_ID={alloc['id']}",
        "PODIUM_ALLOC_INDEX=0",
        "PODIUM_NODE_ID=",
        "PODIUM_ALLOC_DIR=",
        "PODIUM_TASK_DIR=",
    ):
        assert var in out
    task_dir = next(line for line in out.splitlines() if line.startswith("dir="))[4:]
    assert os.path.isabs(task_dir)


def test_alloc_logs_follow_streams_new_output(dev_agent: DevAgent, tmp_path: Path) -> None:
    import subprocess

    from tests.e2e.conftest import PODIUM

    path = write_job(
        tmp_path,
        """
job: ticker
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "i=0; while true; do i=$((i+1)); echo tick $i; echo err $i >&2; sleep 0.2; done"]
""",
    )
    dev_agent.cli("job", "run", path, check=True)
    alloc = dev_agent.wait_running("ticker", 1)[0]
    env = {**os.environ, "PODIUM_ADDR": dev_agent.addr}
    follower = subprocess.Popen(
        [*PODIUM, "alloc", "logs", "-f", alloc["id"][:8]],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert follower.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(seen) < 8:
            line = follower.stdout.readline()
            if line.startswith("tick"):
                seen.append(line.strip())
        # it keeps streaming lines the task writes after the command started
        assert len(seen) >= 8
        numbers = [int(s.split()[1]) for s in seen]
        assert numbers == sorted(numbers)
    finally:
        follower.kill()
        follower.wait()
    stderr = dev_agent.cli("alloc", "logs", "--stderr", alloc["id"], check=True).stdout
    assert "err 1" in stderr and "tick" not in stderr


def test_ports_reach_the_task(dev_agent: DevAgent, tmp_path: Path) -> None:
    from tests.e2e.conftest import free_port

    static = free_port()
    path = write_job(
        tmp_path,
        f"""
job: ported
type: batch
groups:
  g:
    network:
      ports:
        http: {{}}
        admin: {{static: {static}}}
    tasks:
      t:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "echo http=$PODIUM_PORT_http admin=$PODIUM_ADDR_admin; sleep 30"]
""",
    )
    dev_agent.cli("job", "run", path, check=True)
    alloc = dev_agent.wait_running("ported", 1)[0]
    ports = wait_until(
        lambda: dev_agent.get(f"/v1/allocation/{alloc['id']}")["ports"],
        what="the allocation's ports",
    )
    assert ports["admin"]["value"] == static
    assert 20000 <= ports["http"]["value"] < 32000
    out = wait_until(
        lambda: (o := dev_agent.cli("alloc", "logs", alloc["id"]).stdout) and "http=" in o and o,
        what="the task's output",
    )
    assert f"http={ports['http']['value']}" in out
    assert f"admin=127.0.0.1:{static}" in out
    node = dev_agent.get("/v1/nodes")[0]
    assert static in node["ports_in_use"]


def test_a_relative_data_dir_runs_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`podium agent --dev --data-dir data`: the agent works from the absolute path (each
    task's shim runs in the task's own directory, so a relative state path pointed nowhere
    and every task died unrecorded)."""
    monkeypatch.chdir(tmp_path)
    agent = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=Path("data"),
        log_path=tmp_path / "agent.log",
    )
    path = write_job(
        tmp_path,
        """\
job: rel
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sh, args: ["-c", "echo up; exec sleep 3600"]}
""",
    )
    try:
        agent.start()
        agent.cli("job", "run", path, check=True)
        (alloc,) = agent.wait_running("rel", 1)
        assert (tmp_path / "data" / "agent" / "allocs" / alloc["id"]).is_dir()
        logs = agent.cli("alloc", "logs", alloc["id"], "t", check=True)
        assert logs.stdout == "up\n"
        agent.cli("job", "stop", "rel", check=True)
        state = agent.get(f"/v1/allocation/{alloc['id']}")["task_states"]["t"]
        assert state["state"] == "dead" and "shim died" not in str(state["events"])
    finally:
        agent.cleanup()
