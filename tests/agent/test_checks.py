"""Health checks on the agent: the three kinds against real local endpoints, and the
check loops of one allocation runner (start with the task, restart it, stop first)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podium.agent.allocrunner import RestartRequested
from podium.agent.checks import OUTPUT_LIMIT, AllocChecks, http_check, script_check, tcp_check
from podium.agent.runner import AllocRunner
from podium.drivers.base import DriverHealth, TaskHandle
from podium.drivers.mock import MockDriver
from podium.models import (
    Allocation,
    CheckStatus,
    DesiredStatus,
    JobSpec,
    TaskStateName,
)

from .conftest import OfflineRunner, make_alloc, until

# --------------------------------------------------------------------------- endpoints


@contextlib.asynccontextmanager
async def http_server(
    status: int = 200, body: bytes = b"ok", hang: bool = False
) -> AsyncIterator[int]:
    """A tiny HTTP server on a free port that answers every request alike."""
    requests: list[bytes] = []
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError:  # a TCP check: connected, said nothing
            writer.close()
            return
        if hang:
            await release.wait()
        writer.write(
            f"HTTP/1.1 {status} Whatever\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        release.set()
        server.close()


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_http_passes_on_2xx_and_says_what_it_got() -> None:
    async with http_server(204, b"") as port:
        outcome = await http_check("127.0.0.1", port, "/health")
    assert outcome.passed
    assert outcome.output.startswith(f"GET http://127.0.0.1:{port}/health: HTTP 204")


async def test_http_fails_on_500_unless_expected() -> None:
    async with http_server(500, b"database down") as port:
        failed = await http_check("127.0.0.1", port, "/")
        expected = await http_check("127.0.0.1", port, "/", expected_status=500)
    assert not failed.passed and "HTTP 500" in failed.output and "database down" in failed.output
    assert expected.passed


async def test_http_fails_when_refused_or_silent() -> None:
    refused = await http_check("127.0.0.1", closed_port(), "/")
    assert not refused.passed and "refused" in refused.output
    async with http_server(hang=True) as port:
        silent = await http_check("127.0.0.1", port, "/", timeout=0.1)
    assert not silent.passed and "no answer within 0.1s" in silent.output


async def test_tcp_passes_on_a_listener_and_fails_without() -> None:
    async with http_server() as port:
        assert (await tcp_check("127.0.0.1", port)).passed
    outcome = await tcp_check("127.0.0.1", closed_port())
    assert not outcome.passed and "refused" in outcome.output


async def test_script_runs_in_the_task_env_and_dir(tmp_path: Path) -> None:
    outcome = await script_check(
        "/bin/sh",
        ["-c", 'echo "$GREETING from $(pwd)"; test "${WHO}" = "me"'],
        env={"GREETING": "hi", "WHO": "me", "PATH": "/usr/bin:/bin"},
        cwd=str(tmp_path),
    )
    assert outcome.passed and outcome.output == f"hi from {tmp_path}"


async def test_script_fails_on_exit_status_timeout_and_missing_command(tmp_path: Path) -> None:
    failed = await script_check("/bin/sh", ["-c", "echo no; exit 3"], env={}, cwd=str(tmp_path))
    assert not failed.passed and failed.output == "exit status 3\nno"
    slow = await script_check("/bin/sleep", ["5"], env={}, cwd=str(tmp_path), timeout=0.1)
    assert not slow.passed and "killed after 0.1s" in slow.output
    missing = await script_check("/no/such/thing", [], env={}, cwd=str(tmp_path))
    assert not missing.passed and "cannot run /no/such/thing" in missing.output
    # ${VAR} in the command line comes from the task's environment
    expanded = await script_check(
        "/bin/sh", ["-c", "exit ${CODE}"], env={"CODE": "0"}, cwd=str(tmp_path)
    )
    assert expanded.passed


async def test_output_is_truncated(tmp_path: Path) -> None:
    outcome = await script_check(
        "/bin/sh", ["-c", "head -c 5000 /dev/zero | tr '\\0' x"], env={}, cwd=str(tmp_path)
    )
    assert outcome.passed and len(outcome.output) == OUTPUT_LIMIT


# --------------------------------------------------------------------------- the runner


class HealthyMock(MockDriver):
    """A mock driver with a verdict of its own, as Docker's HEALTHCHECK."""

    def __init__(self) -> None:
        super().__init__()
        self.verdict: DriverHealth | None = DriverHealth(healthy=False, output="unhealthy: 1")

    async def health(self, handle: TaskHandle) -> DriverHealth | None:
        return self.verdict


@pytest.fixture
def make_runner(offline_runner: OfflineRunner) -> Callable[..., AllocRunner]:
    made: list[Allocation] = []

    def make(checks: list[dict[str, Any]], driver: MockDriver | None = None) -> AllocRunner:
        spec = JobSpec.model_validate(
            {
                "job": "web",
                "groups": {
                    "g": {
                        "restart": {"attempts": 3, "interval": "1h", "delay": "0s"},
                        "network": {"ports": {"http": {}}},
                        "services": [{"name": "web", "port": "http", "checks": checks}],
                        "tasks": {"t": {"driver": "mock", "config": {"run_for": "1h"}}},
                    }
                },
            }
        )
        alloc = make_alloc(f"alloc-{len(made)}")
        made.append(alloc)
        runner = offline_runner(alloc, spec, driver or MockDriver())
        runner.start()
        return runner

    return make


def tcp(port: str = "http", **kw: Any) -> dict[str, Any]:
    return {
        "name": "alive",
        "type": "tcp",
        "port": port,
        "interval": "50ms",
        "timeout": "50ms",
        **kw,
    }


async def test_a_check_starts_with_its_task_and_reports_changes(
    make_runner: Callable[..., AllocRunner],
) -> None:
    runner = make_runner([tcp()])
    await until(lambda: runner.checks.running == ["alive"], "the check to start")
    result = await until(lambda: runner.check_results.get("alive"), "a result")
    # nothing listens on the allocated port
    assert result.status == CheckStatus.CRITICAL and result.service == "web"
    assert "refused" in result.output
    assert runner.id in runner.host._dirty  # type: ignore[attr-defined]  # the Agent
    later = await until(
        lambda: (r := runner.check_results["alive"]).consecutive_failures >= 3 and r,
        "more failures",
    )
    assert later.time >= result.time
    report = runner.checks.report()
    assert report is not None and set(report) == {"alive"}


async def test_a_failing_check_restarts_the_task_and_says_why(
    make_runner: Callable[..., AllocRunner],
) -> None:
    runner = make_runner([tcp(on_failure="restart", failures_before_restart=2, grace="0s")])
    track = runner.machine.tasks["t"]
    await until(lambda: track.state.restarts >= 1, "a restart")
    event = next(e for e in track.state.events if e.type == "Restart Signaled")
    assert event.message.startswith("check alive failed 2 times: TCP 127.0.0.1:")
    # counted against the restart policy, and the check runs again on the new run
    assert track.window_restarts >= 1
    await until(lambda: runner.checks.running == ["alive"], "the check to start again")


async def test_failures_within_grace_do_not_restart(
    make_runner: Callable[..., AllocRunner],
) -> None:
    runner = make_runner([tcp(on_failure="restart", failures_before_restart=1, grace="1h")])
    await until(
        lambda: (r := runner.check_results.get("alive")) and r.consecutive_failures >= 3,
        "failures",
    )
    assert runner.machine.tasks["t"].state.restarts == 0


async def test_checks_stop_before_the_tasks_are_killed(
    make_runner: Callable[..., AllocRunner],
) -> None:
    runner = make_runner([tcp()])
    await until(lambda: runner.checks.running, "the check to start")
    driver = runner.host.driver("mock")
    at_kill: list[list[str]] = []
    original = driver.stop

    async def stop(handle: TaskHandle, signal: str, timeout: float) -> None:
        at_kill.append(runner.checks.running)
        await original(handle, signal, timeout)

    driver.stop = stop  # type: ignore[method-assign]
    stopped = runner.alloc.model_copy(update={"desired_status": DesiredStatus.STOP})
    runner.update(stopped, runner.machine.spec)
    assert runner.checks.running == []  # at once, before the kill even starts
    await until(lambda: runner.machine.terminal(), "the task to stop")
    assert at_kill == [[]]


async def test_a_passing_http_check_on_the_allocated_port(
    make_runner: Callable[..., AllocRunner],
) -> None:
    async with http_server() as port:
        runner = make_runner([{"name": "up", "type": "http", "path": "/ready", "interval": "10s"}])
        # point the allocation's port at the test server (as if the task listened there)
        await until(lambda: runner.machine.ports, "ports")
        runner.machine.ports["http"] = runner.machine.ports["http"].model_copy(
            update={"value": port}
        )
        assert isinstance(runner.checks, AllocChecks)
        result = await runner.checks.run_once(
            runner.machine.spec.groups["g"].services[0].checks[0], "web", "t"
        )
    assert result.passed and "HTTP 200" in result.output


async def test_driver_health_is_reported_as_a_check_of_no_service(
    make_runner: Callable[..., AllocRunner],
) -> None:
    driver = HealthyMock()
    runner = make_runner([], driver)
    result = await until(lambda: runner.check_results.get("t-driver-health"), "driver health")
    assert result.service == "" and result.status == CheckStatus.CRITICAL
    assert result.output == "unhealthy: 1"


async def test_no_checks_and_no_driver_verdict_means_no_loops(
    make_runner: Callable[..., AllocRunner],
) -> None:
    runner = make_runner([])
    await until(
        lambda: runner.machine.tasks["t"].state.state == TaskStateName.RUNNING, "the task to run"
    )
    assert runner.checks.running == [] and runner.checks.report() is None


async def test_a_restart_forgets_the_passing_result_of_the_previous_run(
    make_runner: Callable[..., AllocRunner],
) -> None:
    async with http_server() as port:
        runner = make_runner(
            [
                {
                    "name": "up",
                    "type": "http",
                    "path": "/ready",
                    "interval": "50ms",
                    "timeout": "50ms",
                }
            ]
        )
        await until(lambda: runner.machine.ports, "ports")
        runner.machine.ports["http"] = runner.machine.ports["http"].model_copy(
            update={"value": port}
        )
        await until(
            lambda: (r := runner.check_results.get("up")) and r.status == CheckStatus.PASSING,
            "a passing result",
        )
        runner.dispatch(RestartRequested(runner.now(), "t", "template changed"))
        # the moment the old run is gone, its verdict is gone too
        assert runner.check_results["up"].status == CheckStatus.PENDING
        assert "not running" in runner.check_results["up"].output
        await until(
            lambda: runner.check_results["up"].status == CheckStatus.PASSING, "passing again"
        )
