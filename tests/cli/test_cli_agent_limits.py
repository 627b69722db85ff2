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


def test_the_servers_limits_reach_a_dev_agents_config(
    cli: Invoke, runtime: list[FakeConfig]
) -> None:
    """``podium agent --dev`` runs a server: it takes ``podium server``'s limits too."""
    result = cli(
        "agent",
        "--dev",
        "--max-count",
        "20000",
        "--max-request-body",
        "16MiB",
        "--request-read-timeout",
        "5",
        "--max-connections",
        "500",
        "--max-log-streams",
        "8",
        "--allowed-hosts",
        "podium.lan, lb.lan",
        "--shed-lag",
        "0.5",
        "--heartbeat-port",
        "4647",
    )
    assert result.exit_code == 0, result.output
    (config,) = runtime
    assert config.shed_lag == 0.5  # type: ignore[attr-defined]
    assert config.heartbeat_port == 4647  # type: ignore[attr-defined]
    assert config.max_count == 20000  # type: ignore[attr-defined]
    assert config.max_request_body == 16 * 2**20  # type: ignore[attr-defined]
    assert config.request_read_timeout == 5.0  # type: ignore[attr-defined]
    assert config.max_connections == 500  # type: ignore[attr-defined]
    assert config.max_log_streams == 8  # type: ignore[attr-defined]
    assert config.allowed_hosts == ["podium.lan", "lb.lan"]  # type: ignore[attr-defined]


def test_limits_left_out_stay_the_runtimes(cli: Invoke, runtime: list[FakeConfig]) -> None:
    assert cli("agent", "--dev").exit_code == 0
    (config,) = runtime
    for name in ("max_count", "max_request_body", "max_connections", "max_log_streams", "shed_lag"):
        assert getattr(config, name, None) is None, name
    assert not hasattr(config, "heartbeat_port")  # the runtime's: a lane on a free port


def test_heartbeat_lane_off(cli: Invoke, runtime: list[FakeConfig]) -> None:
    assert cli("agent", "--dev", "--heartbeat-port", "off").exit_code == 0
    (config,) = runtime
    assert config.heartbeat_port is None  # type: ignore[attr-defined]


def test_the_runtime_runs_a_heartbeat_lane_on_a_free_port_by_default() -> None:
    rt = pytest.importorskip("podium.runtime")
    assert rt.AgentConfig().heartbeat_port == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dev", "--max-count", "0"], "--max-count must be between"),
        (["--dev", "--max-request-body", "lots"], "--max-request-body"),
        (["--dev", "--request-read-timeout", "0"], "--request-read-timeout"),
        (["--data-dir", "/tmp/x", "--servers", "http://s:7634", "--max-count", "5"], "server's"),
        (["--data-dir", "/tmp/x", "--servers", "http://s:7634", "--max-log-streams", "5"], "--dev"),
        (["--dev", "--shed-lag", "-1"], "--shed-lag must be between 0"),
        (["--data-dir", "/tmp/x", "--servers", "http://s:7634", "--shed-lag", "2"], "server's"),
        (["--dev", "--heartbeat-port", "soon"], "--heartbeat-port must be a port"),
        (["--dev", "--heartbeat-port", "70000"], "--heartbeat-port must be a port"),
        (
            ["--data-dir", "/tmp/x", "--servers", "http://s:7634", "--heartbeat-port", "0"],
            "server's",
        ),
    ],
)
def test_bad_server_limits_are_usage_errors(
    cli: Invoke, runtime: list[FakeConfig], args: list[str], message: str
) -> None:
    result = cli("agent", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert runtime == []
