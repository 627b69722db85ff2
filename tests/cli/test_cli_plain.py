"""Without a terminal: full-width lines, and watch loops that print one line per change.

The runner here is not a terminal (as a log file or a pipe is) and says
``COLUMNS=80``, the width rich falls back to: nothing may be wrapped or cut
to it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from podium.cli.main import app
from podium.models import Deployment, DeploymentGroup, TaskEvent, TaskState

from .fakes import (
    ALLOC_A,
    ALLOC_B,
    EVAL_ID,
    NODE_ID,
    FakeServer,
    alloc,
    evaluation,
    job_info,
    node_info,
)
from .test_cli_job_run import JOB_FILE, REGISTERED

LONG = "the task could not open /var/lib/app/" + "deeply/nested/" * 12 + "config.yaml"


def plain(*args: str, **env: str) -> Result:
    """The CLI as a script runs it: stdout is not a terminal; $COLUMNS says 80."""
    return CliRunner().invoke(
        app, list(args), env={"COLUMNS": "80", "PODIUM_ADDR": None, "TTY_INTERACTIVE": None, **env}
    )


def test_tables_keep_full_width_lines(fake: FakeServer) -> None:
    event = TaskEvent(time=1_700_000_000.0, type="Driver Failure", message=LONG)
    failed = alloc(
        ALLOC_A,
        "failed",
        client_description=LONG,
        task_states={"server": TaskState(state="dead", failed=True, events=[event])},
    )
    fake.on("GET", "/v1/job/web", job_info())
    fake.on("GET", "/v1/job/web/allocations", [failed])
    fake.on("GET", "/v1/job/web/evaluations", [])
    fake.on("GET", "/v1/job/web/deployment", None)
    result = plain("job", "status", "web")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # the event's description is on one line, whole, in its table row
    row = next(line for line in lines if ALLOC_A[:8] in line and "Driver Failure" in line)
    assert row.endswith(LONG)
    assert max(len(line) for line in lines) > 80
    assert all(line == line.rstrip() for line in lines)  # no padding to a huge width


def test_a_status_line_with_a_long_description_is_one_line(fake: FakeServer) -> None:
    fake.on("GET", f"/v1/allocation/{ALLOC_A[:4]}", alloc(client_description=LONG))
    result = plain("alloc", "status", ALLOC_A[:4])
    assert result.exit_code == 0, result.output
    assert any(line.endswith(f"pending ({LONG})") for line in result.stdout.splitlines())


def test_a_terminal_still_gets_wrapped_tables(fake: FakeServer) -> None:
    fake.on("GET", f"/v1/allocation/{ALLOC_A[:4]}", alloc(client_description=LONG))
    result = plain("alloc", "status", ALLOC_A[:4], TTY_INTERACTIVE="1", NO_COLOR="1")
    assert result.exit_code == 0, result.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # bold stays with NO_COLOR
    assert max(len(line) for line in text.splitlines()) <= 80


# -- watch loops: one line per change ----------------------------------------------------------


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text(JOB_FILE)
    return path


def _run_script(fake: FakeServer) -> None:
    """Five answers of a pending evaluation, then complete; then the allocations start."""
    fake.on("POST", "/v1/jobs", REGISTERED)
    pending = evaluation("pending")
    done = evaluation("complete", plan_summary={"place": 2})
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", *([pending] * 5), done)
    both_pending = [alloc(ALLOC_A, "pending"), alloc(ALLOC_B, "pending", index=1)]
    one_running = [alloc(ALLOC_A, "running"), alloc(ALLOC_B, "pending", index=1)]
    both_running = [alloc(ALLOC_A, "running"), alloc(ALLOC_B, "running", index=1)]
    fake.on(
        "GET",
        "/v1/job/web/allocations",
        *([both_pending] * 4),
        *([one_running] * 6),
        both_running,
    )


def test_job_run_prints_a_line_per_change(fake: FakeServer, job_file: Path) -> None:
    _run_script(fake)
    result = plain("job", "run", str(job_file))
    assert result.exit_code == 0, result.output
    assert len(fake.calls("GET", f"/v1/evaluation/{EVAL_ID}")) == 6  # it did poll 6 times
    lines = result.stdout.splitlines()
    assert lines[:7] == [
        "Job web version 0",
        f"Evaluation {EVAL_ID[:8]}: pending",
        f"Evaluation {EVAL_ID[:8]}: complete (plan: place 2)",
        f"Allocation {ALLOC_A[:8]} web.web[0] on laptop: pending",
        f"Allocation {ALLOC_B[:8]} web.web[1] on laptop: pending",
        f"Allocation {ALLOC_A[:8]} web.web[0] on laptop: running",
        f"Allocation {ALLOC_B[:8]} web.web[1] on laptop: running",
    ]
    # then the end state, once, as a terminal is left with it, and the outcome
    assert lines[7].split() == ["ID", "Node", "Group", "Version", "Desired", "Status", "Created"]
    assert [line.split()[0] for line in lines[8:10]] == [ALLOC_A[:8], ALLOC_B[:8]]
    assert lines[10:] == ["All 2 allocations running."]
    assert "\x1b[" not in result.stdout and "\r" not in result.stdout


def test_on_a_terminal_job_run_repaints(fake: FakeServer, job_file: Path) -> None:
    _run_script(fake)
    result = plain("job", "run", str(job_file), TTY_INTERACTIVE="1", NO_COLOR="1")
    assert result.exit_code == 0, result.output
    assert "\x1b[2K" in result.stdout  # rich Live erasing its previous frame
    assert "All 2 allocations running." in result.stdout


def test_a_live_view_shows_what_fits_the_screen(fake: FakeServer, tmp_path: Path) -> None:
    """A live view redraws all it holds on every change: with 40 allocations on a 20-line
    terminal it holds the 12 that fit (those not running first) and counts the rest."""
    path = tmp_path / "web.yaml"
    path.write_text(JOB_FILE.replace("count: 2", "count: 40"))
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete", plan_summary={"place": 40}))
    ids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(40)]
    some = [alloc(a, "running" if i < 30 else "pending", index=i) for i, a in enumerate(ids)]
    every = [alloc(a, "running", index=i) for i, a in enumerate(ids)]
    fake.on("GET", "/v1/job/web/allocations", some, every)
    result = plain("job", "run", str(path), TTY_INTERACTIVE="1", NO_COLOR="1", LINES="20")
    assert result.exit_code == 0, result.output
    assert "... and 28 more (40 in all: 10 pending, 30 running)" in result.stdout
    assert "... and 28 more (40 in all: 40 running)" in result.stdout
    first = result.stdout.split("... and 28 more (40 in all: 10 pending")[0]
    assert all(f"{i:08x}" in first for i in range(30, 40))  # the pending ten are shown
    assert "All 40 allocations running." in result.stdout


def _counts(running: int, pending: int, failed: int = 0) -> dict[str, Any]:
    return job_info(summary={"web": {"running": running, "pending": pending, "failed": failed}})


def _large_run(fake: FakeServer, tmp_path: Path, *summaries: dict[str, Any]) -> list[str]:
    path = tmp_path / "web.yaml"
    path.write_text(JOB_FILE.replace("count: 2", "count: 60"))
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete", plan_summary={"place": 60}))
    fake.on("GET", "/v1/job/web", *summaries)
    return [f"{i:08x}-0000-4000-8000-000000000000" for i in range(60)]


def test_a_large_job_is_followed_by_its_counts(fake: FakeServer, tmp_path: Path) -> None:
    """From FOLLOW_COUNTS_FROM instances, job run follows the job's summary, then reads the
    allocations once: a line per change of the counts, not one per allocation."""
    ids = _large_run(
        fake, tmp_path, _counts(0, 60), _counts(0, 60), _counts(45, 15), _counts(60, 0)
    )
    fake.on(
        "GET", "/v1/job/web/allocations", [alloc(a, "running", index=i) for i, a in enumerate(ids)]
    )
    result = plain("job", "run", str(tmp_path / "web.yaml"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2:5] == [
        "Allocations: 0/60 running, 60 pending",
        "Allocations: 45/60 running, 15 pending",
        "Allocations: 60/60 running",
    ]
    assert not any(line.startswith("Allocation ") for line in lines)  # no line per allocation
    assert sum(line.split()[:1] in ([a[:8]] for a in ids) for line in lines) == 60  # end table
    assert lines[-1] == "All 60 allocations running."
    assert len(fake.calls("GET", "/v1/job/web/allocations")) == 1


def test_a_large_job_with_a_failure_says_which(fake: FakeServer, tmp_path: Path) -> None:
    ids = _large_run(fake, tmp_path, _counts(0, 60), _counts(30, 29, failed=1))
    allocs = [alloc(a, "running", index=i) for i, a in enumerate(ids)]
    allocs[7] = alloc(ids[7], "failed", index=7, client_description="task t failed")
    fake.on("GET", "/v1/job/web/allocations", allocs)
    result = plain("job", "run", str(tmp_path / "web.yaml"))
    assert result.exit_code == 1, result.output
    assert f"Allocation {ids[7][:8]} (web.web[7]) failed: task t failed" in result.output


def _node(drain: bool, allocs: int) -> dict[str, Any]:
    return node_info(drain=drain, alloc_count=allocs)


def test_a_drain_prints_a_line_per_change_not_per_answer(fake: FakeServer) -> None:
    answers = [_node(False, 3)] + [_node(True, 3)] * 50 + [_node(True, 1)] * 50 + [_node(False, 0)]
    fake.on("GET", "/v1/node/lap", _node(False, 3))
    fake.on("GET", f"/v1/node/{NODE_ID}", *answers[1:])
    fake.on("PUT", f"/v1/node/{NODE_ID}/drain", {"index": 5})
    fake.on("GET", f"/v1/node/{NODE_ID}/allocations", [])
    result = plain("node", "drain", "lap")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"Draining node laptop ({NODE_ID[:8]}), deadline 1h.",
        "  3 allocation(s) left on the node",
        "  1 allocation(s) left on the node",
        "Node laptop drained.",
    ]
    assert len(fake.calls("GET", f"/v1/node/{NODE_ID}")) == 101


def _deployment(healthy: int, status: str = "running", description: str = "") -> Deployment:
    return Deployment(
        id="d79b4608-0000-4000-8000-000000000001",
        job_id="web",
        job_version=1,
        status=status,
        status_description=description or f"deployment is {status}",
        groups={
            "web": DeploymentGroup(
                desired_total=2, healthy_allocs=healthy, placed_allocs=2, require_progress_by=9e9
            )
        },
    )


def test_deployment_watch_prints_a_line_per_change(fake: FakeServer) -> None:
    done = _deployment(2, "successful", "deployment completed successfully")
    fake.on(
        "GET",
        "/v1/deployment/d79b",
        _deployment(0),
    )
    fake.on(
        "GET",
        "/v1/deployment/d79b4608-0000-4000-8000-000000000001",
        *([_deployment(0)] * 10),
        *([_deployment(1)] * 10),
        done,
    )
    result = plain("deployment", "status", "d79b", "--watch")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert Counter(lines) == Counter(
        [
            "Deployment d79b4608 of job web version 1: running",
            "  Group web: 0/2 healthy, 0 unhealthy, 2 placed",
            "  Group web: 1/2 healthy, 0 unhealthy, 2 placed",
            "Deployment d79b4608 of job web version 1: successful: deployment completed "
            "successfully",
            "  Group web: 2/2 healthy, 0 unhealthy, 2 placed",
        ]
    )
    assert len(lines) == 5


def test_a_long_warning_stays_one_line(fake: FakeServer, job_file: Path) -> None:
    fake.on("POST", "/v1/jobs", {**REGISTERED, "warnings": [LONG]})
    result = plain("job", "run", "--detach", str(job_file))
    assert result.exit_code == 0, result.output
    assert f"Warning: {LONG}\n" in result.stderr
