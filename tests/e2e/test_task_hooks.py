"""Lifecycle hooks end to end: a real `podium agent --dev` running real processes.

The tasks write files with nanosecond timestamps; the order of those timestamps (and
what each task found written by the others) shows the order the agent ran them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import DevAgent, wait_until, write_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def hooks_job(d: Path) -> str:
    stamp = "date +%s%N"
    return f"""
job: hooks
type: service
groups:
  g:
    restart: {{attempts: 0, interval: 1m, delay: 100ms, mode: fail}}
    tasks:
      init:
        driver: raw_exec
        lifecycle: {{hook: prestart}}
        config:
          command: /bin/sh
          args: ["-c", "sleep 0.5; {stamp} > {d}/init.tmp && mv {d}/init.tmp {d}/init.done"]
      proxy:
        driver: raw_exec
        lifecycle: {{hook: prestart, sidecar: true}}
        config:
          command: /bin/sh
          args:
            - -c
            - |
              trap '{stamp} > {d}/proxy.stopped; exit 0' TERM
              {stamp} > {d}/proxy.started
              while true; do {stamp} > {d}/proxy.beat; sleep 0.2; done
      main:
        driver: raw_exec
        config:
          command: /bin/sh
          args:
            - -c
            - |
              cat {d}/init.done > {d}/main.saw || exit 1
              {stamp} > {d}/main.started
              trap '{stamp} > {d}/main.stopped; exit 0' TERM
              while true; do sleep 0.2; done
      after:
        driver: raw_exec
        lifecycle: {{hook: poststart}}
        config:
          command: /bin/sh
          args: ["-c", "{stamp} > {d}/after.ran"]
      cleanup:
        driver: raw_exec
        lifecycle: {{hook: poststop}}
        config:
          command: /bin/sh
          args: ["-c", "cat {d}/main.stopped > {d}/cleanup.saw; {stamp} > {d}/cleanup.ran"]
"""


def stamp(path: Path) -> int:
    return int(path.read_text().strip())


def states(alloc: dict[str, Any]) -> dict[str, str]:
    return {name: s["state"] for name, s in alloc["task_states"].items()}


def test_prestart_sidecar_poststart_and_poststop_run_in_order(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    d = tmp_path / "out"
    d.mkdir()
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, hooks_job(d)), check=True)

    # The allocation is pending while only its prestart tasks run.
    pending = wait_until(
        lambda: (a := dev_agent.allocs("hooks")) and Path(d, "proxy.started").exists() and a,
        timeout=60,
        what="the prestart sidecar to start",
    )
    if not Path(d, "main.started").exists():
        assert pending[0]["client_status"] in ("pending", "running")

    alloc = dev_agent.wait_running("hooks", 1, timeout=60)[0]
    alloc_id = alloc["id"]
    wait_until(lambda: Path(d, "main.started").exists(), timeout=30, what="main to start")

    # prestart ran to completion before main, which saw what it wrote
    assert Path(d, "main.saw").read_text() == Path(d, "init.done").read_text()
    assert stamp(d / "init.done") < stamp(d / "main.started")
    # the sidecar started before main, and keeps running beside it
    assert stamp(d / "proxy.started") < stamp(d / "main.started")
    main_started = stamp(d / "main.started")
    wait_until(
        lambda: stamp(d / "proxy.beat") > main_started + 300_000_000,
        timeout=30,
        what="the sidecar to beat while main runs",
    )
    # poststart ran once main ran (its process had started: the agent's record of it)
    wait_until(lambda: Path(d, "after.ran").exists(), timeout=30, what="the poststart task")
    main_state = dev_agent.get(f"/v1/allocation/{alloc_id}")["task_states"]["main"]
    assert stamp(d / "after.ran") > main_state["started_at"] * 1e9

    def together() -> dict[str, str] | None:
        a = dev_agent.get(f"/v1/allocation/{alloc_id}")
        s = states(a)
        ok = s["main"] == "running" and s["proxy"] == "running" and s["init"] == "dead"
        return s if ok and a["client_status"] == "running" else None

    seen = wait_until(together, timeout=30, what="main and its sidecar running together")
    a = dev_agent.get(f"/v1/allocation/{alloc_id}")
    assert not a["task_states"]["init"]["failed"]
    assert a["task_states"]["init"]["restarts"] == 0
    assert seen["cleanup"] == "pending"  # poststop waits for main to stop
    assert not Path(d, "cleanup.ran").exists()

    # Stop the job: main stops, then poststop runs, then the allocation is complete.
    dev_agent.cli("job", "stop", "hooks", check=True)
    done = wait_until(
        lambda: (
            (a := dev_agent.get(f"/v1/allocation/{alloc_id}"))["client_status"] == "complete" and a
        ),
        timeout=90,
        what="the stopped allocation to complete",
    )
    # reported complete only after poststop ran
    assert Path(d, "cleanup.ran").exists()
    assert stamp(d / "main.stopped") < stamp(d / "cleanup.ran")
    assert Path(d, "cleanup.saw").read_text() == Path(d, "main.stopped").read_text()
    # the sidecar was stopped after main
    assert stamp(d / "proxy.stopped") >= stamp(d / "main.stopped")
    assert set(states(done).values()) == {"dead"}
    assert not any(s["failed"] for s in done["task_states"].values())


def test_a_failing_prestart_blocks_main_and_fails_the_allocation(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    d = tmp_path / "out"
    d.mkdir()
    job = f"""
job: blocked
type: batch
groups:
  g:
    restart: {{attempts: 1, interval: 1m, delay: 100ms, mode: fail}}
    reschedule: {{attempts: 0, unlimited: false}}
    tasks:
      init:
        driver: raw_exec
        lifecycle: {{hook: prestart}}
        config:
          command: /bin/sh
          args: ["-c", "echo tried >> {d}/init.tries; exit 3"]
      main:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "touch {d}/main.ran"]
"""
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, job), check=True)
    alloc = wait_until(
        lambda: (a := dev_agent.allocs("blocked")) and a[0]["client_status"] == "failed" and a[0],
        timeout=60,
        what="the allocation to fail",
    )
    assert Path(d, "init.tries").read_text().count("tried") == 2  # the first run and 1 restart
    assert not Path(d, "main.ran").exists()
    assert alloc["task_states"]["init"]["failed"]
    assert "exceeded its restart policy" in alloc["client_description"]


def test_the_lifecycle_example_runs_as_written(dev_agent: DevAgent) -> None:
    dev_agent.cli("job", "run", str(EXAMPLES / "lifecycle.yaml"), check=True)
    alloc = dev_agent.wait_running("lifecycle", 1, timeout=60)[0]
    logs = wait_until(
        lambda: (
            (r := dev_agent.cli("alloc", "logs", alloc["id"], "app")).returncode == 0
            and "hello from prestart" in r.stdout
            and r
        ),
        timeout=30,
        what="the main task's greeting, read from the prestart task's file",
    )
    assert "hello from prestart" in logs.stdout
    dev_agent.cli("job", "stop", "lifecycle", check=True)
    done = wait_until(
        lambda: (
            (a := dev_agent.get(f"/v1/allocation/{alloc['id']}"))["client_status"] == "complete"
            and a
        ),
        timeout=90,
        what="the stopped allocation to complete",
    )
    tasks = done["task_states"]

    def when(task: str, kind: str) -> float:
        return float(next(e["time"] for e in tasks[task]["events"] if e["type"] == kind))

    assert not any(t["failed"] for t in tasks.values())
    # farewell (poststop) started only after app (main) had stopped, and completed
    assert when("farewell", "Started") >= when("app", "Killed")
    assert when("farewell", "Completed") >= when("farewell", "Started")
    # the sidecar was told to stop only once app had stopped
    assert when("heartbeat", "Killing") >= when("app", "Killed")
    assert when("init-config", "Completed") <= when("app", "Started")


def test_a_batch_allocation_completes_with_its_main_task_not_its_sidecar(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    d = tmp_path / "out"
    d.mkdir()
    stamp_cmd = "date +%s%N"
    job = f"""
job: once
type: batch
groups:
  g:
    tasks:
      proxy:
        driver: raw_exec
        lifecycle: {{hook: prestart, sidecar: true}}
        config:
          command: /bin/sh
          args:
            - -c
            - |
              trap '{stamp_cmd} > {d}/proxy.stopped; exit 0' TERM
              while true; do sleep 0.2; done
      main:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "sleep 1; {stamp_cmd} > {d}/main.done"]
      last:
        driver: raw_exec
        lifecycle: {{hook: poststop}}
        config:
          command: /bin/sh
          args: ["-c", "{stamp_cmd} > {d}/last.ran"]
"""
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, job), check=True)
    alloc = wait_until(
        lambda: (a := dev_agent.allocs("once")) and a[0]["client_status"] == "complete" and a[0],
        timeout=60,
        what="the batch allocation to complete",
    )
    # the sidecar, which never exits on its own, was stopped once main was done
    assert stamp(d / "main.done") < stamp(d / "proxy.stopped")
    assert stamp(d / "main.done") < stamp(d / "last.ran")
    assert set(states(alloc).values()) == {"dead"}
    assert not any(s["failed"] for s in alloc["task_states"].values())


def test_group_depends_on_waits_for_the_main_tasks_past_prestart(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    d = tmp_path / "out"
    d.mkdir()
    stamp_cmd = "date +%s%N"
    job = f"""
job: deps
type: service
groups:
  db:
    tasks:
      migrate:
        driver: raw_exec
        lifecycle: {{hook: prestart}}
        config:
          command: /bin/sh
          args: ["-c", "sleep 2; {stamp_cmd} > {d}/migrate.done"]
      db:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "{stamp_cmd} > {d}/db.started; while true; do sleep 0.2; done"]
  web:
    depends_on: {{db: started}}
    tasks:
      web:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "{stamp_cmd} > {d}/web.started; while true; do sleep 0.2; done"]
"""
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, job), check=True)
    dev_agent.wait_running("deps", 2, timeout=90)
    wait_until(lambda: Path(d, "web.started").exists(), timeout=30, what="web to start")
    # db counts as started only once its main task ran, after its prestart task
    assert stamp(d / "migrate.done") < stamp(d / "db.started") < stamp(d / "web.started")
