"""A real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) against
real Podium processes: ``podium agent --dev`` (server and agent in one process, from
tests.e2e.conftest), with or without ACLs.

Playwright never downloads a browser here: it launches the system's.  Without
``/usr/bin/chromium`` (or Playwright) every test that needs the browser is skipped, saying
why (and fails under ``PODIUM_TESTS_NO_SKIP=1``, as CI runs them).
Waits are Playwright's ``expect``/``wait_for`` with deadlines, never sleeps.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    PODIUM,
    DevAgent,
    free_port,
    kill_recorded_tasks,
    stop_process,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> None:
    """Skip the running test without the browser: a skip of each test (not of the module),
    so CI's PODIUM_TESTS_NO_SKIP fails it."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)")


@pytest.fixture(autouse=True)
def _need_chromium() -> None:
    """First of each test's own fixtures, so none starts an agent for a browser it cannot
    have."""
    need_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per module.  Not per session: Playwright's sync API keeps an event
    loop running in this thread while it is open, which pytest-asyncio's tests (run
    after this module in the same worker) cannot share."""
    need_chromium()  # module-scoped: set up before the autouse check below
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # a Content-Security-Policy refusal is reported on the console: none is expected
    pg.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"the page raised JavaScript errors: {errors}"


def register(addr: str, job: dict[str, Any], namespace: str = "default", token: str = "") -> Any:
    """A job registered through the HTTP API, as any client does."""
    headers = {"X-Podium-Token": token} if token else {}
    r = httpx.post(
        f"{addr}/v1/jobs",
        json={"job": job},
        params={"namespace": namespace},
        headers=headers,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def sleeper(name: str, count: int = 1, **extra: Any) -> dict[str, Any]:
    """A raw_exec job whose task sleeps (``extra``: more top-level keys, e.g. update)."""
    return {
        "job": name,
        **extra,
        "groups": {
            "g": {
                "count": count,
                "tasks": {
                    "t": {
                        "driver": "raw_exec",
                        "kill_timeout": "1s",
                        "resources": {"cpu": 100, "memory": 64},
                        "config": {"command": "/bin/sleep", "args": ["3600"]},
                    }
                },
            }
        },
    }


@pytest.fixture
def ui_agent(tmp_path: Path) -> Iterator[DevAgent]:
    """A real dev agent (server + agent) whose UI the browser visits."""
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


class AclAgent:
    """``podium agent --dev --acl``, bootstrapped: ``management`` holds the first token."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.addr = f"http://127.0.0.1:{free_port()}"
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.management = ""

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *PODIUM,
                    "agent",
                    "--dev",
                    "--acl",
                    "--data-dir",
                    str(self.tmp / "data"),
                    "--http-addr",
                    self.addr.removeprefix("http://"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != "PODIUM_TOKEN"},
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited:\n{self.log.read_text()[-3000:]}")
            return httpx.get(f"{self.addr}/v1/status", timeout=2).status_code == 401

        wait_until(up, timeout=30, what="the dev agent's API")
        r = httpx.post(f"{self.addr}/v1/acl/bootstrap", timeout=10)
        assert r.status_code == 200, r.text
        self.management = str(r.json()["secret_id"])

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(
            method,
            f"{self.addr}{path}",
            headers={"X-Podium-Token": self.management},
            timeout=10,
            **kw,
        )
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def token(self, name: str, rules: str) -> str:
        self.admin("PUT", f"/v1/acl/policy/{name}", json={"rules": rules})
        return str(
            self.admin("POST", "/v1/acl/token", json={"name": name, "policies": [name]})[
                "secret_id"
            ]
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        kill_recorded_tasks(self.tmp / "data")


@pytest.fixture
def acl_agent(tmp_path: Path) -> Iterator[AclAgent]:
    agent = AclAgent(tmp_path)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()
