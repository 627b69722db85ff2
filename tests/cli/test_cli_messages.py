"""Messages that say what happened, once: issue 12's list, each with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podium.cli import render
from podium.cli.job import canary_note
from podium.models import (
    AllocMetric,
    Deployment,
    DeploymentGroup,
    JobSpec,
    TaskEvent,
    TaskState,
)
from podium.scheduler.harness import make_node
from podium.server.core import Server

from .conftest import Invoke
from .fakes import ALLOC_A, ALLOC_B, EVAL_ID, FakeServer, alloc, evaluation, job_info
from .test_cli_job_run import JOB_FILE, REGISTERED
from .test_job_plan import server  # noqa: F401 - the in-process server fixture

DEP_ID = "d79b4608-0000-4000-8000-000000000001"

CANARY_JOB = """\
job: web
update: {max_parallel: 1, canary: 1, health_check: task_states, min_healthy_time: 1s}
groups:
  web:
    count: 2
    tasks:
      server:
        driver: mock
        config: {run_for: 1h}
        resources: {cpu: 100, memory: 64}
"""


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text(JOB_FILE)
    return path


def _canary_file(tmp_path: Path) -> Path:
    path = tmp_path / "canary.yaml"
    path.write_text(CANARY_JOB)
    return path


def _deployment(status: str, description: str, **group: object) -> Deployment:
    fields: dict[str, object] = {"desired_total": 2, "placed_allocs": 1, **group}
    return Deployment(
        id=DEP_ID,
        job_id="web",
        job_version=0,
        status=status,
        status_description=description,
        groups={"web": DeploymentGroup.model_validate(fields)},
    )


# -- said once -----------------------------------------------------------------------------


def test_said_once() -> None:
    assert render.said_once("failed", "failed: failed by a person") == "failed by a person"
    assert (
        render.said_once("failed", "failed: allocation web[1] is unhealthy: exit 3")
        == "failed: allocation web[1] is unhealthy: exit 3"
    )
    assert render.said_once("running", "deployment is running") == "running"
    assert render.said_once("failed", "") == "failed"
    assert render.unrepeated("failed", "failed: failed: x") == "x"


def test_a_deployment_failed_by_a_person_is_said_once(
    cli: Invoke, fake: FakeServer, tmp_path: Path
) -> None:
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete"))
    fake.on("GET", "/v1/job/web/deployment", _deployment("running", "deployment is running"))
    failed = _deployment("failed", "failed: failed by a person; rolling back to version 2")
    fake.on("GET", f"/v1/deployment/{DEP_ID}", failed)
    result = cli("job", "run", str(_canary_file(tmp_path)))
    assert result.exit_code == 1, result.output
    assert "Deployment d79b4608 failed by a person; rolling back to version 2" in result.stdout
    assert "failed: failed" not in result.stdout
    as_json = cli("job", "run", str(_canary_file(tmp_path)), "-o", "json")
    error = json.loads(as_json.stderr)["error"]
    assert error["kind"] == "failed"
    assert error["message"] == ("deployment d79b4608 failed by a person; rolling back to version 2")


def test_the_promotion_hint_is_given_once(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete"))
    waiting = _deployment(
        "running",
        "deployment is running",
        desired_canaries=1,
        placed_canaries=[ALLOC_A],
        healthy_allocs=1,
    )
    fake.on("GET", "/v1/job/web/deployment", waiting)
    fake.on("GET", f"/v1/deployment/{DEP_ID}", waiting)
    for env in ({}, {"TTY_INTERACTIVE": "1", "NO_COLOR": "1"}):
        result = cli("job", "run", str(_canary_file(tmp_path)), **env)
        assert result.exit_code == 0, result.output
        assert result.stdout.count("podium deployment promote d79b4608") == 1, result.stdout
        assert "Canaries are healthy and wait for promotion" in result.stdout


# -- allocations counted by state -----------------------------------------------------------


def test_job_list_does_not_count_stopped_allocations_as_meant_to_run(
    cli: Invoke, fake: FakeServer
) -> None:
    summary = {"web": {"running": 5, "complete": 3}}
    fake.on("GET", "/v1/jobs", [{"id": "web", "status": "running", "summary": summary}])
    result = cli("job", "status")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("web"))
    assert "5 running, 3 complete" in row
    assert "5/8" not in row


# -- recent events in job status -------------------------------------------------------------


def test_job_status_shows_recent_task_events(cli: Invoke, fake: FakeServer) -> None:
    events = [
        TaskEvent(time=1_700_000_000.0 + i, type=kind, message=msg)
        for i, (kind, msg) in enumerate(
            [
                ("Received", "task received by agent"),
                ("Started", "task started"),
                ("Terminated", "exited"),
                ("Restarting", "restarting in 5s"),
            ]
        )
    ]
    a = alloc(ALLOC_A, "running", task_states={"server": TaskState(state="running", events=events)})
    b = alloc(ALLOC_B, "running", index=1, task_states={"server": TaskState(events=events[:1])})
    fake.on("GET", "/v1/job/web", job_info())
    fake.on("GET", "/v1/job/web/allocations", [a, b])
    fake.on("GET", "/v1/job/web/evaluations", [])
    fake.on("GET", "/v1/job/web/deployment", None)
    result = cli("job", "status", "web")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Recent Events" in out
    section = out[out.index("Recent Events") :].splitlines()
    assert section[1].split()[:5] == ["Time", "Alloc", "Task", "Type", "Description"]
    # newest first, each with the allocation and task it happened to
    assert ALLOC_A[:8] in section[2] and "Restarting" in section[2]
    assert "restarting in 5s" in section[2]
    assert sum(ALLOC_B[:8] in line for line in section) == 1


# -- revert says a canary waits ----------------------------------------------------------------


def test_revert_says_that_canaries_will_wait(
    cli: Invoke,
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    from podium.spec import load_job_file

    from .test_cli_deployment import _settle

    server.register_node(make_node("d", memory=4096))
    path = _canary_file(tmp_path)
    server.register_job(load_job_file(path))
    _settle(server)
    path.write_text(CANARY_JOB.replace("run_for: 1h", "run_for: 2h"))
    server.register_job(load_job_file(path))
    _settle(server)
    result = cli("job", "revert", "--detach", "web", "0")
    assert result.exit_code == 0, result.output
    assert "Job web reverted to version 0 (new version 2)" in result.stdout
    assert (
        "The reverted version rolls out like any new one: canaries start first in group "
        "web (1) and wait for `podium deployment promote`"
    ) in result.stdout


def test_canary_note() -> None:
    def spec(update: dict[str, object] | None) -> JobSpec:
        doc: dict[str, object] = {
            "job": "web",
            "groups": {"web": {"tasks": {"t": {"driver": "mock"}}}},
        }
        if update is not None:
            doc["update"] = update
        return JobSpec.model_validate(doc)

    assert canary_note(spec(None)) is None
    assert canary_note(spec({"max_parallel": 1})) is None
    assert "wait for `podium deployment promote`" in str(canary_note(spec({"canary": 1})))
    auto = canary_note(spec({"canary": 1, "auto_promote": True}))
    assert auto is not None and "promoted once healthy" in auto


# -- placement failures in numbers ------------------------------------------------------------


def test_a_placement_failure_says_how_much_was_asked_and_what_the_best_node_had(
    cli: Invoke, fake: FakeServer, job_file: Path
) -> None:
    metric = AllocMetric(
        nodes_evaluated=1,
        nodes_exhausted=1,
        dimension_exhausted={"memory": 1},
        asked={"cpu": 100, "memory": 500_000},
        largest_free={"memory": 21_400},
    )
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on(
        "GET",
        f"/v1/evaluation/{EVAL_ID}",
        evaluation("complete", failed_tg_allocs={"web": metric}, queued_allocations={"web": 2}),
    )
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 3, result.output
    assert (
        "1 node evaluated: 1 exhausted memory; asked 500,000 MB memory; largest free on an "
        "eligible node: 21,400 MB"
    ) in result.stdout
    error = json.loads(cli("job", "run", str(job_file), "-o", "json").stderr)["error"]
    assert error["kind"] == "placement" and error["exit_code"] == 3
    assert "asked 500,000 MB memory" in error["message"]


def test_plan_shows_the_asked_and_largest_free(
    cli: Invoke,
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    from .test_job_plan import write_job

    result = cli("job", "plan", str(write_job(tmp_path, memory=500_000)))
    assert result.exit_code == 1, result.output
    assert "asked 500,000 MB memory; largest free on an eligible node: 1,024 MB" in result.stdout


# -- plan shows reserved and max resources -----------------------------------------------------


def test_plan_shows_each_tasks_reservation_and_limit(
    cli: Invoke,
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "multi.yaml"
    path.write_text(
        """\
job: web
groups:
  web:
    tasks:
      db:
        driver: docker
        config: {image: postgres:16}
        resources: {cpu: 500, memory: 512, memory_max: 1024, cpu_max: 1000}
      cache:
        driver: docker
        config: {image: redis:7}
        resources: {cpu: 100, memory: 64}
      jail:
        driver: exec
        config: {command: /bin/sleep}
        resources: {memory: 128}
      free:
        driver: raw_exec
        config: {command: /bin/sleep}
"""
    )
    result = cli("job", "plan", str(path))
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "Resources per task (reserved, then hard limit):" in out
    assert (
        '- Group "web" task "db" (docker): memory 512 MB, max 1,024 MB; cpu 500 MHz, max 1,000 MHz'
    ) in out
    assert '- Group "web" task "cache" (docker): memory 64 MB, no limit; cpu 100 MHz, no limit' in (
        out
    )
    assert (
        '- Group "web" task "jail" (exec): memory 128 MB, max 128 MB (exec\'s default: the '
        "reservation); cpu 100 MHz, no limit"
    ) in out
    assert (
        '- Group "web" task "free" (raw_exec): memory 300 MB, no limit; cpu 100 MHz, no limit'
    ) in out
