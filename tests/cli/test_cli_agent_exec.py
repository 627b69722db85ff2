"""``podium agent --exec-chroot/--exec-user-denylist/--exec-uid-range``: checked as the exec
driver reads them (a bad value is a one-line usage error naming the flag, before anything
runs), then put on the config and from there on the agent's settings and driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Invoke
from .test_cli_agent import FakeConfig
from .test_cli_agent import runtime as fake_runtime

rt = pytest.importorskip("podium.runtime")

__all__ = ["fake_runtime"]


@pytest.fixture
def runtime(fake_runtime: list[FakeConfig]) -> list[FakeConfig]:
    """The stand-in runtime, with the real runtime's check of the exec flags."""
    import sys

    sys.modules["podium.runtime"].check_exec_options = rt.check_exec_options  # type: ignore[attr-defined]
    return fake_runtime


def test_exec_flags_reach_the_config(cli: Invoke, runtime: list[FakeConfig]) -> None:
    result = cli(
        "agent",
        "--dev",
        "--exec-chroot",
        "/usr",
        "--exec-chroot",
        "/srv/tools:/opt/tools",
        "--exec-user-denylist",
        "nobody, 1001,www-data",
        "--exec-uid-range",
        "200000-200099",
    )
    assert result.exit_code == 0, result.output
    (config,) = runtime
    assert config.exec_chroot == ["/usr", "/srv/tools:/opt/tools"]  # type: ignore[attr-defined]
    assert config.exec_user_denylist == ["nobody", "1001", "www-data"]  # type: ignore[attr-defined]
    assert config.exec_uid_range == (200000, 200099)  # type: ignore[attr-defined]


def test_without_exec_flags_the_config_keeps_its_defaults(
    cli: Invoke, runtime: list[FakeConfig]
) -> None:
    result = cli("agent", "--dev")
    assert result.exit_code == 0, result.output
    (config,) = runtime
    for name in ("exec_chroot", "exec_user_denylist", "exec_uid_range"):
        assert not hasattr(config, name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exec-chroot", "usr"], "--exec-chroot: exec chroot entry 'usr': PATH must be"),
        (["--exec-chroot", "/usr:rel"], "DEST must be an absolute path"),
        (["--exec-chroot", "/etc/x:/proc/x"], "/proc is the driver's own"),
        (["--exec-chroot", "/:/"], "DEST must not be /"),
        (["--exec-user-denylist", "no body"], "--exec-user-denylist: 'no body' is not"),
        (["--exec-user-denylist", "a;rm"], "--exec-user-denylist"),
        (["--exec-uid-range", "70000"], "--exec-uid-range: uid range '70000' "),
        (["--exec-uid-range", "9-99"], "--exec-uid-range: uid range '9-99' must be"),
        (["--exec-uid-range", "80000-70000"], "--exec-uid-range"),
        (["--exec-uid-range", "a-b"], "is not FIRST-LAST"),
    ],
)
def test_bad_exec_flags_are_usage_errors(
    cli: Invoke, runtime: list[FakeConfig], args: list[str], message: str
) -> None:
    result = cli("agent", "--dev", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert runtime == []


def test_the_real_config_and_settings_take_the_exec_flags(tmp_path: Path) -> None:
    """What the CLI checked becomes the agent's exec driver's options."""
    from podium.agent.config import AgentSettings
    from podium.drivers import rootfs
    from podium.drivers.exec import DEFAULT_USER_DENYLIST, ExecDriver, refused_users
    from podium.drivers.uids import DEFAULT_RANGE, UidPool

    config = rt.AgentConfig(dev=True)
    assert config.exec_chroot is None and config.exec_user_denylist is None
    assert config.exec_uid_range is None

    default = AgentSettings(data_dir=str(tmp_path), servers=[]).exec_options(UidPool())
    assert default.chroot == tuple(rootfs.parse_bind(p) for p in rootfs.DEFAULT_CHROOT)
    assert default.user_denylist == DEFAULT_USER_DENYLIST
    assert AgentSettings(data_dir=str(tmp_path), servers=[]).exec_uid_range == DEFAULT_RANGE

    settings = AgentSettings(
        data_dir=str(tmp_path),
        servers=[],
        exec_chroot=["/usr", "/srv/tools:/opt/tools"],
        exec_user_denylist=["nobody"],
        exec_uid_range=(200000, 200099),
    )
    pool = UidPool(*settings.exec_uid_range)
    driver = ExecDriver(options=settings.exec_options(pool))
    assert driver.options.chroot == (
        rootfs.Bind("/usr", "/usr"),
        rootfs.Bind("/srv/tools", "/opt/tools"),
    )
    assert driver.refused == refused_users(("nobody",))
    assert {"root", "0", "nobody"} <= driver.refused and "bin" not in driver.refused
    assert driver.options.uids is pool and (pool.first, pool.last) == (200000, 200099)


def test_an_empty_denylist_leaves_only_root_refused(cli: Invoke, runtime: list[FakeConfig]) -> None:
    result = cli("agent", "--dev", "--exec-user-denylist", "")
    assert result.exit_code == 0, result.output
    (config,) = runtime
    assert config.exec_user_denylist == []  # type: ignore[attr-defined]
    from podium.drivers.exec import refused_users

    assert {"root", "0"} <= refused_users(()) and "bin" not in refused_users(())
