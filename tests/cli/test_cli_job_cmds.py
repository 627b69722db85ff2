"""``podium job status|scale|history|stop|inspect``."""

from __future__ import annotations

import json

from podium.models import Deployment, DeploymentGroup, JobVersion

from .conftest import Invoke
from .fakes import (
    ALLOC_A,
    ALLOC_B,
    EVAL_ID,
    FakeServer,
    alloc,
    evaluation,
    exhausted_metric,
    job_info,
    spec,
)

JOB_ROW = {
    "id": "web",
    "type": "service",
    "priority": 50,
    "status": "running",
    "version": 3,
    "stop": False,
    "submit_time": 1.0,
    "modify_index": 9,
    "summary": {"web": {"pending": 1, "running": 2, "complete": 0, "failed": 0, "lost": 0}},
}


def test_status_lists_jobs(cli: Invoke, fake: FakeServer) -> None:
    fake.on(
        "GET", "/v1/jobs", [JOB_ROW, {**JOB_ROW, "id": "batchy", "type": "batch", "summary": {}}]
    )
    result = cli("job", "status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "ID",
        "Type",
        "Priority",
        "Status",
        "Version",
        "Allocs",
        "Submitted",
    ]
    web = next(line for line in lines if line.startswith("web"))
    assert web.split()[:8] == ["web", "service", "50", "running", "3", "2", "running,", "1"]
    assert "2 running, 1 pending" in web
    assert any(line.startswith("batchy") for line in lines)


def test_status_lists_nothing(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/jobs", [])
    result = cli("job", "status")
    assert result.exit_code == 0 and "No jobs." in result.output


def test_status_json_is_the_api_answer(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/jobs", [JOB_ROW])
    result = cli("job", "status", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [JOB_ROW]


def test_status_of_one_job(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/we", job_info())
    fake.on(
        "GET",
        "/v1/job/web/allocations",
        [alloc(ALLOC_A, "running"), alloc(ALLOC_B, "failed", index=1, desired_status="stop")],
    )
    fake.on(
        "GET",
        "/v1/job/web/evaluations",
        [evaluation(failed_tg_allocs={"web": exhausted_metric()}, queued_allocations={"web": 1})],
    )
    fake.on(
        "GET",
        "/v1/job/web/deployment",
        Deployment(
            id="d3p10y00-0000",
            job_id="web",
            job_version=3,
            status_description="deployment is running",
            groups={"web": DeploymentGroup(desired_total=2, healthy_allocs=1, placed_allocs=2)},
        ),
    )
    result = cli("job", "status", "we")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Latest Deployment" in out and "Deployment d3p10y00 of job web version 3" in out
    assert "1/2" in out
    assert "ID" in out and "= web" in out
    assert "Summary" in out
    summary_row = next(line for line in out.splitlines() if line.startswith("web "))
    assert summary_row.split() == ["web", "0", "0", "2", "0", "1", "0"]
    assert f"Placement Failure (evaluation {EVAL_ID[:8]})" in out
    assert exhausted_metric().describe() in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line[:8] in (ALLOC_A[:8], ALLOC_B[:8])
    }
    assert rows[ALLOC_A[:8]][1:6] == ["9b1d2e3f", "web", "0", "run", "running"]
    assert rows[ALLOC_B[:8]][4:6] == ["stop", "failed"]
    assert fake.calls("GET", "/v1/job/web/allocations")[0].url.params["all"] == "true"


def test_status_of_one_job_as_json(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web", job_info())
    result = cli("job", "status", "web", "--output", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == job_info()
    assert len(fake.requests) == 1


def test_unknown_job(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/nope", {"error": "no job with id or prefix 'nope'"}, status=404)
    result = cli("job", "status", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: no job with id or prefix 'nope'"


def test_scale(cli: Invoke, fake: FakeServer) -> None:
    fake.on("POST", "/v1/job/web/scale", {"eval_id": EVAL_ID, "version": 4, "index": 12})
    result = cli("job", "scale", "web", "web", "5")
    assert result.exit_code == 0, result.output
    assert "Scaled web/web to 5 (version 4)" in result.output
    assert json.loads(fake.requests[0].content) == {"group": "web", "count": 5}
    assert cli("job", "scale", "web", "web", "-1").exit_code == 2  # refused by the CLI


def test_history(cli: Invoke, fake: FakeServer) -> None:
    versions = [
        JobVersion(
            job_id="web",
            version=1,
            spec=spec(count=3),
            submit_time=2.0,
            modify_index=8,
            diff=["~ groups.web.count: 2 => 3"],
        ),
        JobVersion(
            job_id="web",
            version=0,
            spec=spec(),
            submit_time=1.0,
            modify_index=5,
            diff=["+ job web"],
        ),
    ]
    fake.on("GET", "/v1/job/web/versions", versions)
    result = cli("job", "history", "web")
    assert result.exit_code == 0, result.output
    assert "~ groups.web.count: 2 => 3" in result.output
    lines = [line.split()[0] for line in result.output.splitlines()[1:] if line.strip()]
    assert lines == ["1", "0"]


def test_stop_resolves_the_prefix_and_waits(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/we", job_info())
    fake.on("DELETE", "/v1/job/web", {"eval_id": EVAL_ID, "index": 30})
    fake.on(
        "GET",
        "/v1/allocations",
        [alloc(ALLOC_A, "running", desired_status="stop")],
        [alloc(ALLOC_A, "complete", desired_status="stop")],
    )
    result = cli("job", "stop", "we")
    assert result.exit_code == 0, result.output
    assert "Stopping job web" in result.output and "Job web stopped." in result.output
    assert fake.calls("DELETE", "/v1/job/web")[0].url.params.get("purge") is None
    assert len(fake.calls("GET", "/v1/allocations")) == 2
    assert fake.calls("GET", "/v1/allocations")[0].url.params["job_id"] == "web"


def test_stop_purge_detach(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web", job_info())
    fake.on("DELETE", "/v1/job/web", {"eval_id": EVAL_ID, "index": 30})
    result = cli("job", "stop", "--purge", "--detach", "web")
    assert result.exit_code == 0, result.output
    assert fake.calls("DELETE", "/v1/job/web")[0].url.params["purge"] == "true"
    assert not fake.calls("GET", "/v1/allocations")


def test_stop_times_out(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web", job_info())
    fake.on("DELETE", "/v1/job/web", {"eval_id": EVAL_ID, "index": 30})
    fake.on("GET", "/v1/allocations", [alloc(ALLOC_A, "running", desired_status="stop")])
    result = cli("job", "stop", "--timeout", "0s", "web")
    assert result.exit_code == 4
    assert "1 allocation(s) still stopping" in result.output


def test_inspect_prints_the_spec(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web", job_info())
    result = cli("job", "inspect", "web")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == spec().model_dump(mode="json")


def test_placement_failures_come_from_the_newest_eval_that_ran(
    cli: Invoke, fake: FakeServer
) -> None:
    fake.on("GET", "/v1/job/web", job_info())
    fake.on("GET", "/v1/job/web/allocations", [])
    blocked = evaluation("blocked", id="b10c0000-0", triggered_by="queued-allocs")
    failed = evaluation(failed_tg_allocs={"web": exhausted_metric()})
    fake.on("GET", "/v1/job/web/evaluations", [blocked, failed])
    fake.on("GET", "/v1/job/web/deployment", None)
    out = cli("job", "status", "web").output
    assert "Latest Deployment" not in out
    assert exhausted_metric().describe() in out and "No allocations." in out

    fake.on("GET", "/v1/job/web/evaluations", [evaluation(id="0k0k0k0k-0"), failed])
    out = cli("job", "status", "web").output
    assert "Placement Failure" not in out
