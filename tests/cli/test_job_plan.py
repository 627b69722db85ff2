"""``podium job plan``, ``run --check-index``, ``revert`` and ``history --diff``, against a
real server in this process (its API through an in-memory transport, no sockets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from podium.cli import common, jobdiff
from podium.client import Client
from podium.models import EvalStatus, GroupChanges, JobSpec
from podium.models.diff import job_diff
from podium.scheduler.harness import make_node
from podium.server.api import create_app
from podium.server.core import Server
from podium.spec import load_job_file
from podium.state import StateStore

from .conftest import Invoke
from .fakes import EVAL_ID, FakeServer, alloc, evaluation

JOB_FILE = """\
job: web
groups:
  web:
    count: {count}
    tasks:
      server:
        driver: mock
        config:
          run_for: 1h
        resources:
          cpu: 100
          memory: {memory}
"""


class InProcessTransport(httpx.BaseTransport):
    """Lets the blocking SDK call an ASGI app: each request runs on a fresh event loop."""

    def __init__(self, app: FastAPI) -> None:
        self._asgi = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return asyncio.run(send())


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Server:
    """A server (not started: evaluations run when a test says) with three nodes, which
    every command's client talks to."""
    srv = Server(StateStore(), clock=lambda: 1000.0)
    for name in ("a", "b", "c"):
        srv.register_node(make_node(name, memory=1024))
    transport = InProcessTransport(create_app(srv))
    monkeypatch.setattr(
        common, "client_factory", lambda address: Client(address, transport=transport)
    )
    monkeypatch.setattr(common, "poll_interval", 0.0)
    monkeypatch.setattr(common, "sleep", lambda _: None)
    return srv


def write_job(tmp_path: Path, count: int = 2, memory: int = 256) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text(JOB_FILE.format(count=count, memory=memory))
    return path


def deploy(server: Server, path: Path) -> int:
    r = server.register_job(load_job_file(path))
    for ev in server.store.evaluations():
        if ev.status == EvalStatus.PENDING:
            server.process_eval(ev)
    return r.job_modify_index


# -- plan --------------------------------------------------------------------------------------


def test_plan_of_a_new_job(cli: Invoke, server: Server, tmp_path: Path) -> None:
    path = write_job(tmp_path)
    index = server.store.index
    result = cli("job", "plan", str(path))
    assert result.exit_code == 1, result.output
    out = result.output
    assert '+ Job: "web"' in out
    assert '+ Group: "web" (2 create)' in out
    assert "  + count: 2" in out
    assert '  + Task: "server"' in out
    assert '    + driver: "mock"' in out
    assert '- Group "web": 2 create' in out
    assert "All allocations can be placed." in out
    assert out.rstrip().endswith(
        f"To submit with the plan's index: podium job run --check-index 0 {path}"
    )
    assert server.store.index == index and not server.store.evaluations()


def test_plan_without_changes_exits_0(cli: Invoke, server: Server, tmp_path: Path) -> None:
    path = write_job(tmp_path)
    modify_index = deploy(server, path)
    result = cli("job", "plan", str(path))
    assert result.exit_code == 0, result.output
    assert '  Job: "web"' in result.output
    assert '  Group: "web" (2 ignore)' in result.output
    assert f"Job modify index: {modify_index}" in result.output
    assert f"podium job run --check-index {modify_index} {path}" in result.output


def test_plan_of_a_change(cli: Invoke, server: Server, tmp_path: Path) -> None:
    deploy(server, write_job(tmp_path, count=2))
    evals = len(server.store.evaluations())
    index = server.store.index
    result = cli("job", "plan", str(write_job(tmp_path, count=3)))
    assert result.exit_code == 1, result.output
    assert '~ Job: "web"' in result.output
    assert '~ Group: "web" (1 create, 2 in-place update)' in result.output
    assert "  ~ count: 2 => 3" in result.output
    assert server.store.index == index and len(server.store.evaluations()) == evals


def test_plan_shows_placement_failures(cli: Invoke, server: Server, tmp_path: Path) -> None:
    deploy(server, write_job(tmp_path, count=2))
    result = cli("job", "plan", "--no-diff", str(write_job(tmp_path, count=8, memory=400)))
    assert result.exit_code == 1, result.output
    assert "Job:" not in result.output
    assert "WARNING: Failed to place all allocations." in result.output
    line = next(x for x in result.output.splitlines() if "could not be placed" in x)
    assert line.strip().startswith('Group "web": ')
    assert "allocations could not be placed: 3 nodes evaluated: 3 exhausted memory" in line


def test_plan_json_is_the_api_answer(cli: Invoke, server: Server, tmp_path: Path) -> None:
    path = write_job(tmp_path)
    modify_index = deploy(server, path)
    result = cli("job", "plan", "-o", "json", str(path))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["job_modify_index"] == modify_index and body["changed"] is False
    assert body["diff"]["type"] == "none"


def test_plan_errors_exit_255(cli: Invoke, server: Server, tmp_path: Path) -> None:
    result = cli("job", "plan", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 255
    assert f"job file {tmp_path / 'missing.yaml'} does not exist" in result.output
    assert "invalid job specification" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("job: web\ngroups: {}\n")
    assert cli("job", "plan", str(bad)).exit_code == 255


def test_plan_server_error_exits_255(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    fake.on("POST", "/v1/job/web/plan", {"error": "boom"}, status=500)
    result = cli("job", "plan", str(write_job(tmp_path)))
    assert result.exit_code == 255
    assert "boom" in result.output


def test_plan_colours() -> None:
    old = JobSpec.model_validate(
        {"job": "web", "meta": {"a": "1"}, "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}}}
    )
    new = JobSpec.model_validate(
        {
            "job": "web",
            "priority": 70,
            "groups": {"g": {"count": 3, "tasks": {"t": {"driver": "mock", "env": {"X": "y"}}}}},
        }
    )
    lines = jobdiff.diff_lines(job_diff(old, new), {"g": GroupChanges(place=2, in_place_update=1)})
    styles = {line.plain.strip(): str(line.style) for line in lines}
    assert styles['~ Job: "web"'] == "yellow"
    assert styles['- meta.a: "1"'] == "red"
    assert styles["~ priority: 50 => 70"] == "yellow"
    assert styles['~ Group: "g" (2 create, 1 in-place update)'] == "yellow"
    assert styles['+ env.X: "y"'] == "green"
    assert jobdiff.styled("- x").style == "red"


# -- run --check-index -------------------------------------------------------------------------


def test_run_with_a_stale_index(cli: Invoke, server: Server, tmp_path: Path) -> None:
    first = deploy(server, write_job(tmp_path, count=2))
    now = deploy(server, write_job(tmp_path, count=3))
    path = write_job(tmp_path, count=4)
    result = cli("job", "run", "--detach", "--check-index", str(first), str(path))
    assert result.exit_code == 1
    assert (
        f"Error: job web changed since modify index {first}: it is at {now} now; nothing was "
        f"registered; `podium job plan {path}` shows the changes and the index to pass"
    ) in result.output
    # an index the job has not reached yet: it did not "change since" it
    ahead = cli("job", "run", "--detach", "--check-index", str(now + 5), str(path))
    assert ahead.exit_code == 1
    assert f"Error: job web is at modify index {now}, not {now + 5}: nothing was registered" in (
        ahead.output
    )
    assert "changed since" not in ahead.output
    fresh = cli("job", "run", "--detach", "--check-index", "0", str(path))
    assert "job web already exists (at modify index" in fresh.output
    ok = cli("job", "run", "--detach", "--check-index", str(now), str(path))
    assert ok.exit_code == 0, ok.output
    assert "registered (version 2)" in ok.output


# -- revert and history ----------------------------------------------------------------------


def test_revert_and_history(cli: Invoke, server: Server, tmp_path: Path) -> None:
    deploy(server, write_job(tmp_path, count=2))
    deploy(server, write_job(tmp_path, count=3))
    result = cli("job", "revert", "--detach", "we", "0")
    assert result.exit_code == 0, result.output
    assert "Job web reverted to version 0 (new version 2)" in result.output
    job = server.store.job("web")
    assert job is not None and job.version == 2 and job.spec.groups["web"].count == 2

    missing = cli("job", "revert", "web", "9")
    assert missing.exit_code == 1
    assert "job web has no version 9 (versions: 2, 1, 0)" in missing.output
    current = cli("job", "revert", "web", "2")
    assert current.exit_code == 1 and "already at version 2" in current.output

    history = cli("job", "history", "--diff", "web")
    assert history.exit_code == 0, history.output
    out = history.output
    assert "Version 2 (current)" in out
    assert "reverted to version 0" in out
    assert "~ groups.web.count: 3 => 2" in out
    assert "~ groups.web.count: 2 => 3" in out
    assert "+ job web" in out
    assert out.index("Version 2") < out.index("Version 1") < out.index("Version 0")

    table = cli("job", "history", "web")
    assert table.exit_code == 0 and "reverted to version 0" in table.output
    raw = json.loads(cli("job", "history", "--diff", "-o", "json", "web").stdout)
    assert [v["version"] for v in raw] == [2, 1, 0]
    assert raw[0]["diff"] == ["~ groups.web.count: 3 => 2"]


def test_revert_follows_the_new_version(cli: Invoke, fake: FakeServer) -> None:
    from .fakes import job_info

    fake.on("GET", "/v1/job/web", job_info())
    registered: dict[str, Any] = {
        "eval_id": EVAL_ID,
        "job_modify_index": 9,
        "version": 0,
        "index": 9,
        "changed": True,
    }
    fake.on("POST", "/v1/job/web/revert", registered)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete"))
    fake.on(
        "GET",
        "/v1/job/web/allocations",
        [alloc(status="running"), alloc("bbbb", status="running", index=1)],
    )
    result = cli("job", "revert", "web", "0", "--enforce-prior-version", "1")
    assert result.exit_code == 0, result.output
    assert "All 2 allocations running." in result.output
    sent = json.loads(fake.calls("POST", "/v1/job/web/revert")[0].content)
    assert sent == {"version": 0, "enforce_prior_version": 1}
