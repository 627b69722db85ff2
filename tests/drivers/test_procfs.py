"""The /proc readers and small process helpers the drivers trust."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from podium.drivers import builtin_drivers, procfs
from podium.drivers.process import read_exit


def test_read_stat_of_self() -> None:
    st = procfs.read_stat(os.getpid())
    assert st is not None
    assert st.ppid == os.getppid() and st.pgrp == os.getpgrp() and st.state in "RS"
    assert procfs.read_stat(2**22 + 12345) is None


def test_read_stat_with_a_hostile_command_name(tmp_path: Path) -> None:
    weird = tmp_path / "a) (b c"
    shutil.copy("/bin/sleep", weird)
    proc = subprocess.Popen([str(weird), "5"])
    try:
        st = procfs.read_stat(proc.pid)
        assert st is not None and st.ppid == os.getpid()
        assert st.start_time == procfs.start_time(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_boottime_tick_is_the_start_time() -> None:
    for _ in range(20):
        before = procfs.now_boottime_ns()
        proc = subprocess.Popen(["true"])
        after = procfs.now_boottime_ns()
        tick = procfs.boottime_ticks(before)
        try:
            if tick == procfs.boottime_ticks(after):
                assert procfs.start_time(proc.pid) == tick
                return
        finally:
            proc.wait()
    pytest.fail("no spawn fell within one clock tick")


def test_parse_signal() -> None:
    assert procfs.parse_signal("SIGTERM") == 15
    assert procfs.parse_signal("int") == 2
    assert procfs.parse_signal(" 9 ") == 9
    with pytest.raises(ValueError, match="unknown signal"):
        procfs.parse_signal("SIGWHAT")


def test_nofile_limit_raised_once() -> None:
    original = procfs.raise_nofile_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert procfs.raise_nofile_limit() == original
    builtin_drivers(raw_exec_enabled=False)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


def test_builtin_drivers() -> None:
    assert set(builtin_drivers(raw_exec_enabled=False)) == {"docker", "exec", "mock"}
    drivers = builtin_drivers(raw_exec_enabled=True, cgroup_root="custom")
    assert set(drivers) == {"docker", "exec", "mock", "raw_exec"}
    assert all(d.name == name for name, d in drivers.items())


def test_read_exit(tmp_path: Path) -> None:
    state = {"status_file": str(tmp_path / "status"), "pid_file": str(tmp_path / "pid")}
    assert read_exit(state, lost="gone").error == "gone"
    (tmp_path / "status").write_text("")  # the shim died mid-write
    assert read_exit(state, lost="gone").error == "gone"
    (tmp_path / "status").write_text("137\n")
    r = read_exit(state)
    assert (r.exit_code, r.signal) == (137, 9)
    (tmp_path / "status").write_text("128\n")
    assert read_exit(state).signal is None
    (tmp_path / "status").write_text("125\n")
    assert "could not set the task up" in (read_exit(state).error or "")
    (tmp_path / "pid").write_text("1\n")
    assert read_exit(state).error is None  # the task itself exited 125
