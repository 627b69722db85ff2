"""``podium agent``: gathers options into podium.runtime.AgentConfig and runs it."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import Invoke


@dataclass
class FakeConfig:
    dev: bool
    data_dir: str | None
    http_addr: str
    servers: list[str]
    name: str | None
    log_level: str
    server: bool = False
    client: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> list[FakeConfig]:
    """A stand-in podium.runtime that records the configs it is asked to run."""
    ran: list[FakeConfig] = []
    mod = types.ModuleType("podium.runtime")

    def run_agent(config: FakeConfig) -> int:
        ran.append(config)
        return 0

    mod.run_agent = run_agent  # type: ignore[attr-defined]
    mod.AgentConfig = FakeConfig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "podium.runtime", mod)
    return ran


def test_dev_defaults(cli: Invoke, runtime: list[FakeConfig]) -> None:
    result = cli("agent", "--dev")
    assert result.exit_code == 0, result.output
    assert runtime == [
        FakeConfig(
            dev=True,
            data_dir=None,
            http_addr="127.0.0.1:7634",
            servers=[],
            name=None,
            log_level="info",
        )
    ]


def test_every_option(cli: Invoke, runtime: list[FakeConfig]) -> None:
    result = cli(
        "agent",
        "--data-dir",
        "/var/lib/podium",
        "--http-addr",
        "0.0.0.0:8000",
        "--servers",
        "a:7634,b:7634",
        "--servers",
        "c:7634",
        "--name",
        "n1",
        "--log-level",
        "debug",
        "--server",
        "--no-client",
    )
    assert result.exit_code == 0, result.output
    (config,) = runtime
    assert config.servers == ["a:7634", "b:7634", "c:7634"]
    assert (config.data_dir, config.http_addr, config.name, config.log_level) == (
        "/var/lib/podium",
        "0.0.0.0:8000",
        "n1",
        "debug",
    )
    assert (config.dev, config.server, config.client) == (False, True, False)


def test_a_data_dir_is_needed_outside_dev(cli: Invoke, runtime: list[FakeConfig]) -> None:
    result = cli("agent")
    assert result.exit_code == 2  # a usage error
    assert "--data-dir" in result.stderr
    assert runtime == []


def test_the_exit_status_of_the_runtime_is_ours(
    cli: Invoke, runtime: list[FakeConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules["podium.runtime"], "run_agent", lambda config: 3)
    assert cli("agent", "--dev").exit_code == 3


def test_the_real_agent_config_takes_these_fields() -> None:
    runtime = pytest.importorskip("podium.runtime")
    config = runtime.AgentConfig(
        dev=True, data_dir=None, http_addr="127.0.0.1:7634", servers=[], name=None, log_level="info"
    )
    assert config.dev is True
    assert hasattr(config, "server") and hasattr(config, "client")
