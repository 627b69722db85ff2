"""A real `podium agent --dev` in a subprocess, and the real CLI against it.

The fixture always cleans up: it stops every job, stops the agent, and as a last
resort kills any task process group it finds recorded under the data directory,
so a failing test never leaves processes behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

_SCRIPT = Path(sys.executable).parent / "podium"
# The installed console script, as a user runs it.
PODIUM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "podium.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class DevAgent:
    addr: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    # -- process control
    def start(self) -> None:
        host_port = self.addr.removeprefix("http://")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                *PODIUM,
                "agent",
                "--dev",
                "--data-dir",
                str(self.data_dir),
                "--http-addr",
                host_port,
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_until(self._ready, timeout=30, what="the dev agent to register its node")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"dev agent exited with {self.proc.returncode}:\n{self.logs()}")
        nodes = httpx.get(f"{self.addr}/v1/nodes", timeout=2).json()
        return bool(nodes) and nodes[0]["status"] == "ready"

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- API and CLI
    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.addr}{path}", params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def cli(
        self, *args: str, timeout: float = 60.0, check: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PODIUM_ADDR": self.addr, "COLUMNS": "200", "NO_COLOR": "1"}
        result = subprocess.run(
            [*PODIUM, *args], capture_output=True, text=True, env=env, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podium {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nagent log:\n{self.logs()}"
            )
        return result

    def allocs(self, job: str) -> list[dict[str, Any]]:
        return list(self.get(f"/v1/job/{job}/allocations"))

    def running(self, job: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.allocs(job)
            if a["client_status"] == "running" and a["desired_status"] == "run"
        ]

    def wait_running(self, job: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        return list(
            wait_until(
                lambda: (r := self.running(job)) and len(r) == count and r,
                timeout=timeout,
                what=f"{count} running allocations of {job}",
            )
        )

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                for job in self.get("/v1/jobs", namespace="*"):
                    httpx.delete(
                        f"{self.addr}/v1/job/{quote(job['id'], safe='')}",  # children have '/'
                        params={"purge": "true", "namespace": job.get("namespace", "default")},
                        timeout=5,
                    )
                wait_until(
                    lambda: all(
                        a["client_status"] not in ("running", "pending")
                        for a in self.get("/v1/allocations", namespace="*")
                    ),
                    timeout=20,
                    what="every allocation to stop",
                )
            except (AssertionError, httpx.HTTPError):
                pass
        self.terminate()
        kill_recorded_tasks(self.data_dir)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM a process we started, SIGKILL it after ``grace`` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def recorded_pids(data_dir: Path) -> Iterator[int]:
    """The pids the task shims recorded under ``data_dir``.  The agent removes allocation
    directories while this walks them: os.walk skips what vanished (Path.rglob raises)."""
    for top, dirs, files in os.walk(data_dir):
        if os.path.basename(top) == ".podium" and "pid" in files:
            dirs.clear()
            try:
                yield int(Path(top, "pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue


def kill_recorded_tasks(data_dir: Path) -> None:
    """Last resort: SIGKILL every process group recorded by a task shim under data_dir."""
    for pid in recorded_pids(data_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev_agent(tmp_path: Path) -> Iterator[DevAgent]:
    agent = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "agent.log",
    )
    try:
        agent.start()
        yield agent
    finally:
        agent.cleanup()


def write_job(tmp_path: Path, text: str, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)
