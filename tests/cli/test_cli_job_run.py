"""``podium job run``: parse locally, register, follow the evaluation and the allocations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Invoke
from .fakes import (
    ALLOC_A,
    ALLOC_B,
    EVAL_ID,
    FakeServer,
    alloc,
    evaluation,
    exhausted_metric,
    failed_alloc,
    job_info,
)

JOB_FILE = """\
job: web
type: service
groups:
  web:
    count: 2
    tasks:
      server:
        driver: raw_exec
        config:
          command: /bin/sleep
          args: ["60"]
"""

REGISTERED = {"eval_id": EVAL_ID, "job_modify_index": 7, "version": 0, "index": 7, "changed": True}


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text(JOB_FILE)
    return path


def _needs_spec() -> None:
    pytest.importorskip("podium.spec")
    from podium import spec

    if not hasattr(spec, "load_job_file"):
        pytest.skip("podium.spec.load_job_file is not written yet")


def test_run_follows_eval_then_allocations_to_running(
    cli: Invoke, fake: FakeServer, job_file: Path
) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on(
        "GET",
        f"/v1/evaluation/{EVAL_ID}",
        evaluation("pending"),
        evaluation("complete", plan_summary={"place": 2}),
    )
    fake.on(
        "GET",
        "/v1/job/web/allocations",
        [alloc(ALLOC_A), alloc(ALLOC_B, index=1)],
        [alloc(ALLOC_A, "running"), alloc(ALLOC_B, "pending", index=1)],
        [alloc(ALLOC_A, "running"), alloc(ALLOC_B, "running", index=1)],
    )
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 0, result.output
    assert "All 2 allocations running" in result.output
    assert "aaaa1111" in result.output and "bbbb2222" in result.output
    assert "place 2" in result.output
    # the spec went out as parsed from the file
    sent = json.loads(fake.calls("POST", "/v1/jobs")[0].content)
    assert sent["job"]["groups"]["web"]["tasks"]["server"]["config"]["args"] == ["60"]
    # blocking queries: the second look at the eval passes the first answer's index
    ev_calls = fake.calls("GET", f"/v1/evaluation/{EVAL_ID}")
    assert "index" not in ev_calls[0].url.params
    assert int(ev_calls[1].url.params["index"]) > 0
    # terminal allocations count for the watch (batch jobs complete)
    assert fake.calls("GET", "/v1/job/web/allocations")[0].url.params["all"] == "true"


def test_allocations_of_other_versions_are_ignored(
    cli: Invoke, fake: FakeServer, job_file: Path
) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", {**REGISTERED, "version": 1})
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete"))
    old = alloc("cccc3333-0", "running", job_version=0, desired_status="stop")
    fake.on(
        "GET",
        "/v1/job/web/allocations",
        [old, alloc(ALLOC_A, "running", job_version=1)],
        [
            old,
            alloc(ALLOC_A, "running", job_version=1),
            alloc(ALLOC_B, "running", 1, job_version=1),
        ],
    )
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 0, result.output
    assert len(fake.calls("GET", "/v1/job/web/allocations")) == 2
    assert "cccc3333" not in result.output


def test_placement_failure_exits_3_with_the_reasons(
    cli: Invoke, fake: FakeServer, job_file: Path
) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", REGISTERED)
    ev = evaluation(
        "complete",
        failed_tg_allocs={"web": exhausted_metric()},
        queued_allocations={"web": 2},
        blocked_eval="b10cedee-0000",
    )
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", ev)
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 3, result.output
    assert "Placement failed" in result.output
    assert exhausted_metric().describe() in result.output
    assert 'Group "web" could not place 2 allocations' in result.output
    assert "b10cedee" in result.output and "blocked" in result.output
    assert not fake.calls("GET", "/v1/job/web/allocations")


def test_a_failed_allocation_exits_1_with_its_task_events(
    cli: Invoke, fake: FakeServer, job_file: Path
) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete"))
    fake.on("GET", "/v1/job/web/allocations", [alloc()], [failed_alloc()])
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 1, result.output
    assert "Allocation aaaa1111 (web.web[0]) failed" in result.output
    assert "task server failed" in result.output
    assert "restart attempts exhausted" in result.output
    assert "exit code 3" in result.output


def test_a_failed_evaluation_exits_1(cli: Invoke, fake: FakeServer, job_file: Path) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("failed", status_description="boom"))
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 1
    assert "failed: boom" in result.output


def test_batch_jobs_are_done_when_complete(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    _needs_spec()
    path = tmp_path / "batch.yaml"
    path.write_text(
        JOB_FILE.replace("type: service", "type: batch").replace("count: 2", "count: 1")
    )
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete"))
    fake.on("GET", "/v1/job/web/allocations", [alloc()], [alloc(status="complete")])
    result = cli("job", "run", str(path))
    assert result.exit_code == 0, result.output
    assert "All 1 allocation running or complete" in result.output


def test_timeout(cli: Invoke, fake: FakeServer, job_file: Path) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("pending"))
    result = cli("job", "run", "--timeout", "0s", str(job_file))
    assert result.exit_code == 4
    assert "Timed out after 0s waiting for the evaluation" in result.output


def test_detach_prints_the_eval_and_returns(cli: Invoke, fake: FakeServer, job_file: Path) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("job", "run", "--detach", "--check-index", "7", str(job_file))
    assert result.exit_code == 0, result.output
    assert EVAL_ID in result.output
    assert len(fake.requests) == 1
    assert json.loads(fake.requests[0].content)["check_index"] == 7


def test_json_output_is_the_api_answer(cli: Invoke, fake: FakeServer, job_file: Path) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("job", "run", "-d", "-o", "json", str(job_file))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == REGISTERED


def test_a_bad_file_is_refused_locally(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    _needs_spec()
    path = tmp_path / "bad.yaml"
    path.write_text(JOB_FILE.replace("count: 2", "count: -1").replace("driver:", "drivr:"))
    result = cli("job", "run", str(path))
    assert result.exit_code == 1
    assert f"{path}:5:" in result.output  # count is on line 5
    assert f"{path}:8:9: groups.web.tasks.server.drivr:" in result.output
    assert "invalid job specification" in result.output
    assert not fake.requests


def test_a_missing_file(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    _needs_spec()
    result = cli("job", "run", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert "nope.yaml" in result.output
    assert not fake.requests


def test_a_spec_refused_by_the_server_points_at_the_file(
    cli: Invoke, fake: FakeServer, job_file: Path
) -> None:
    _needs_spec()
    issues = [
        {
            "path": "groups.web.tasks.server.driver",
            "message": "no node has driver raw_exec",
            "line": 7,
            "column": 17,
            "hint": "enable it",
        }
    ]
    fake.on("POST", "/v1/jobs", {"error": "invalid job", "issues": issues}, status=400)
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 1
    assert (
        f"{job_file}:7:17: groups.web.tasks.server.driver: no node has driver raw_exec (enable it)"
        in result.output
    )


def test_check_index_conflict(cli: Invoke, fake: FakeServer, job_file: Path) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", {"error": "job web changed since index 7 (now 5)"}, status=409)
    fake.on("GET", "/v1/job/web", job_info(job_modify_index=5))
    result = cli("job", "run", "--check-index", "7", str(job_file))
    assert result.exit_code == 1
    assert "Error: job web is at modify index 5, not 7: nothing was registered" in result.output
    assert "changed since" not in result.output


def test_check_index_of_a_job_that_does_not_exist(
    cli: Invoke, fake: FakeServer, job_file: Path
) -> None:
    _needs_spec()
    fake.on("POST", "/v1/jobs", {"error": "job web does not exist"}, status=409)
    result = cli("job", "run", "--check-index", "7", "-o", "json", str(job_file))
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "conflict" and error["status"] == 409
    assert error["message"].startswith("job web does not exist, so it is not at modify index 7")


def test_replaced_failures_do_not_count(cli: Invoke, fake: FakeServer, job_file: Path) -> None:
    """An unchanged re-run: an old failure of this version was already rescheduled."""
    _needs_spec()
    fake.on("POST", "/v1/jobs", {**REGISTERED, "changed": False})
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete"))
    replaced = alloc("dddd4444-0", "failed", next_allocation=ALLOC_B)
    fake.on(
        "GET",
        "/v1/job/web/allocations",
        [replaced, alloc(ALLOC_A, "running"), alloc(ALLOC_B, "running", index=1)],
    )
    result = cli("job", "run", str(job_file))
    assert result.exit_code == 0, result.output
    assert "(unchanged)" in result.output
