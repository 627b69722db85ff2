"""A real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) against
real Podium processes: ``podium agent --dev`` (server and agent in one process, from
tests.e2e.conftest), with or without ACLs.

Playwright never downloads a browser here: it launches the system's.  Without
``/usr/bin/chromium`` (or Playwright) every test that needs the browser is skipped, saying
why (and fails under ``PODIUM_TESTS_NO_SKIP=1``, as CI runs them).
Waits are Playwright's ``expect``/``wait_for`` with deadlines, never sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acl.devagent import AclAgent
from tests.e2e.conftest import (
    DevAgent,
    free_port,
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


@pytest.fixture
def acl_agent(tmp_path: Path) -> Iterator[AclAgent]:
    agent = AclAgent(tmp_path)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()
