"""``podium agent --max-kill-timeout`` and ``--docker-*``: checked, then put on the config."""

from __future__ import annotations

import pytest

from .conftest import Invoke
from .test_cli_agent import FakeConfig, runtime

__all__ = ["runtime"]


def test_limits_reach_the_config(cli: Invoke, runtime: list[FakeConfig]) -> None:
    result = cli(
        "agent",
        "--dev",
        "--max-kill-timeout",
        "2m",
        "--docker-volume-allow",
        "/srv/data/",
        "--docker-volume-allow",
        "/opt",
        "--docker-allow-caps",
        "NET_ADMIN, cap_sys_time",
    )
    assert result.exit_code == 0, result.output
    (config,) = runtime
    assert config.max_kill_timeout == 120.0  # type: ignore[attr-defined]
    assert config.docker_volumes is True  # type: ignore[attr-defined]
    assert config.docker_volume_allow == ["/srv/data", "/opt"]  # type: ignore[attr-defined]
    assert config.docker_allow_caps == ["NET_ADMIN", "cap_sys_time"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-kill-timeout", "soon"], "--max-kill-timeout"),
        (["--docker-volume-allow", "srv"], "must be an absolute host path"),
        (["--no-docker-volumes", "--docker-volume-allow", "/srv"], "contradicts"),
        (["--docker-allow-caps", "SYS ADMIN"], "is not a capability name"),
    ],
)
def test_bad_limits_are_usage_errors(
    cli: Invoke, runtime: list[FakeConfig], args: list[str], message: str
) -> None:
    result = cli("agent", "--dev", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert runtime == []


def test_the_real_agent_config_takes_the_limits() -> None:
    rt = pytest.importorskip("podium.runtime")
    config = rt.AgentConfig(dev=True)
    assert config.max_kill_timeout == 30.0
    assert config.docker_volumes is None  # the runtime's choice: on with --dev only
