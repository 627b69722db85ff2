"""``podium alloc status|logs``."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from podium.cli import common
from podium.cli.main import app
from podium.client import Client
from podium.models import JobVersion, TaskState

from .conftest import Invoke
from .fakes import ALLOC_A, FakeServer, alloc, failed_alloc, spec

LOGS = f"/v1/allocation/{ALLOC_A}/logs"


def test_status_shows_states_and_events(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/allocation/aaaa", failed_alloc())
    result = cli("alloc", "status", "aaaa")
    assert result.exit_code == 0, result.output
    out = result.output
    assert ALLOC_A in out
    assert "web.web[0]" in out
    assert "laptop (9b1d2e3f)" in out
    assert "web (version 0)" in out
    assert "failed (task server failed)" in out
    assert 'Task "server" is dead (failed)' in out
    assert "Exit Code" in out and "= 3" in out
    assert "Not Restarting" in out and "restart attempts exhausted" in out
    assert "2023-11-1" in out  # events carry wall-clock times


def test_status_shows_ports(cli: Invoke, fake: FakeServer) -> None:
    ports = {"http": {"value": 24107, "host_ip": "10.0.0.5"}, "admin": {"value": 9000}}
    fake.on("GET", "/v1/allocation/aaaa", alloc(ports=ports))
    result = cli("alloc", "status", "aaaa")
    assert result.exit_code == 0, result.output
    assert "Ports          = admin 9000, http 10.0.0.5:24107" in result.output
    fake.on("GET", "/v1/allocation/bbbb", alloc())
    assert "Ports          = -" in cli("alloc", "status", "bbbb").output


def test_status_json(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", f"/v1/allocation/{ALLOC_A}", alloc())
    result = cli("alloc", "status", "-o", "json", ALLOC_A)
    assert json.loads(result.stdout) == alloc().model_dump(mode="json")


def test_ambiguous_prefix_shows_the_matches(cli: Invoke, fake: FakeServer) -> None:
    body = {"error": "prefix 'a' matches 2 allocations", "matches": [ALLOC_A, "abcd0000"]}
    fake.on("GET", "/v1/allocation/a", body, status=400)
    result = cli("alloc", "status", "a")
    assert result.exit_code == 1
    assert "prefix 'a' matches 2 allocations" in result.stderr
    assert ALLOC_A in result.stderr and "abcd0000" in result.stderr


def test_logs_use_the_only_task(cli: Invoke, fake: FakeServer) -> None:
    running = alloc(task_states={"server": TaskState(state="running")})
    fake.on("GET", "/v1/allocation/aaaa", running)
    fake.on("GET", LOGS, "line one\nline two\n")
    result = cli("alloc", "logs", "aaaa")
    assert result.exit_code == 0, result.output
    assert result.stdout == "line one\nline two\n"
    params = fake.calls("GET", LOGS)[0].url.params
    assert dict(params) == {"task": "server", "type": "stdout", "origin": "start", "offset": "0"}


def test_logs_stderr_follow_and_named_task(cli: Invoke, fake: FakeServer) -> None:
    two = alloc(task_states={"server": TaskState(), "sidecar": TaskState()})
    fake.on("GET", "/v1/allocation/aaaa", two)
    fake.on("GET", LOGS, "oops\n")
    result = cli("alloc", "logs", "-f", "--stderr", "aaaa", "sidecar")
    assert result.exit_code == 0, result.output
    params = fake.calls("GET", LOGS)[0].url.params
    assert (params["task"], params["type"], params["follow"]) == ("sidecar", "stderr", "true")


def test_logs_with_several_tasks_asks_which(cli: Invoke, fake: FakeServer) -> None:
    fake.on(
        "GET",
        "/v1/allocation/aaaa",
        alloc(task_states={"server": TaskState(), "sidecar": TaskState()}),
    )
    result = cli("alloc", "logs", "aaaa")
    assert result.exit_code == 2  # the command line must name the task
    assert "has 2 tasks; name one of: server, sidecar" in result.stderr
    assert not fake.calls("GET", LOGS)


def test_logs_of_an_unknown_task(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/allocation/aaaa", alloc(task_states={"server": TaskState()}))
    result = cli("alloc", "logs", "aaaa", "nope")
    assert result.exit_code == 1
    assert 'no task "nope"; its tasks are: server' in result.stderr


def test_logs_of_a_pending_alloc_read_tasks_from_the_job_version(
    cli: Invoke, fake: FakeServer
) -> None:
    fake.on("GET", "/v1/allocation/aaaa", alloc())
    fake.on(
        "GET",
        "/v1/job/web/versions",
        [JobVersion(job_id="web", version=0, spec=spec(), submit_time=1, modify_index=1)],
    )
    fake.on("GET", LOGS, "")
    result = cli("alloc", "logs", "aaaa")
    assert result.exit_code == 0, result.output
    assert fake.calls("GET", LOGS)[0].url.params["task"] == "server"


def test_logs_tail(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/allocation/aaaa", alloc(task_states={"server": TaskState()}))
    fake.on("GET", LOGS, "partial\n1\n2\n3\n")
    result = cli("alloc", "logs", "--tail", "2", "aaaa")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2\n3\n"
    params = fake.calls("GET", LOGS)[0].url.params
    assert params["origin"] == "end" and int(params["offset"]) >= 2


def test_log_errors_are_reported(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/allocation/aaaa", alloc(task_states={"server": TaskState()}))
    fake.on("GET", LOGS, {"error": "node laptop is down"}, status=502)
    result = cli("alloc", "logs", "aaaa")
    assert result.exit_code == 1
    assert "node laptop is down" in result.stderr


def test_server_unreachable(cli: Invoke, fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    monkeypatch.setattr(
        common, "client_factory", lambda a: Client(a, transport=httpx.MockTransport(refuse))
    )
    result = cli("alloc", "status", "--address", "http://10.1.2.3:7634", "aaaa")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: cannot reach the Podium server at http://10.1.2.3:7634: "
        "is `podium agent --dev` running?"
    )


def test_address_comes_from_the_environment(
    cli: Invoke, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real = common.client_factory

    def spy(address: str) -> Client:
        seen.append(address)
        return real(address)

    monkeypatch.setattr(common, "client_factory", spy)
    monkeypatch.setenv("PODIUM_ADDR", "http://elsewhere:1")
    fake.on("GET", "/v1/allocation/aaaa", alloc())
    CliRunner().invoke(app, ["alloc", "status", "aaaa"], env={"COLUMNS": "200"})
    assert seen == ["http://elsewhere:1"]


def _running(task: str = "server") -> object:
    return alloc(status="running", task_states={task: TaskState(state="running")})


def test_status_shows_resource_usage_of_running_tasks(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", f"/v1/allocation/{ALLOC_A}", _running())
    usage = {
        "alloc_id": ALLOC_A,
        "node_id": "n",
        "timestamp": 1.0,
        "cpu_percent": 12.5,
        "memory_bytes": 12 * 1024 * 1024,
        "tasks": {
            "server": {
                "cpu_percent": 12.5,
                "memory_bytes": 12 * 1024 * 1024,
                "memory_limit_bytes": 256 * 1024 * 1024,
                "pids": 3,
            }
        },
    }
    fake.on("GET", f"/v1/allocation/{ALLOC_A}/stats", usage)
    result = cli("alloc", "status", ALLOC_A)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Resource Usage:" in out
    assert "12.5% of a core" in out and "12.0 MiB of 256.0 MiB" in out
    assert "Processes" in out and "= 3" in out


def test_status_says_why_usage_is_missing_and_shows_the_rest(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", f"/v1/allocation/{ALLOC_A}", _running())
    fake.on(
        "GET",
        f"/v1/allocation/{ALLOC_A}/stats",
        {"error": "cannot reach the agent of node laptop at http://10.0.0.5:4000"},
        status=502,
    )
    result = cli("alloc", "status", ALLOC_A)
    assert result.exit_code == 0, result.output
    assert "unavailable: " in result.output and "cannot reach the agent" in result.output
    assert 'Task "server" is running' in result.output


def test_status_of_a_finished_allocation_asks_no_usage(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/allocation/aaaa", failed_alloc())
    assert cli("alloc", "status", "aaaa").exit_code == 0
    assert not fake.calls("GET", f"/v1/allocation/{ALLOC_A}/stats")
