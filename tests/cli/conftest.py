from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from typer.testing import CliRunner, Result

from podium.cli import common
from podium.cli.main import app
from podium.client import Client

from .fakes import FakeServer

Invoke = Callable[..., Result]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """Point every command's client at a fresh fake server; make watch loops instant."""
    server = FakeServer()
    sleeps: list[float] = []
    monkeypatch.setattr(
        common,
        "client_factory",
        lambda address: Client(address, transport=httpx.MockTransport(server)),
    )
    monkeypatch.setattr(common, "poll_interval", 0.0)
    monkeypatch.setattr(common, "sleep", sleeps.append)
    return server


@pytest.fixture
def cli() -> Invoke:
    runner = CliRunner()

    def invoke(*args: str, **env: str) -> Result:
        # A wide terminal so rich never truncates the cells the tests look for (only a
        # terminal, TTY_INTERACTIVE=1, is held to it: without one, lines are never cut).
        return runner.invoke(
            app,
            list(args),
            env={"COLUMNS": "200", "PODIUM_ADDR": None, "TTY_INTERACTIVE": None, **env},
        )

    return invoke
