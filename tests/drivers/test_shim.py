"""``shim.sh`` on its own: what it must never do whatever happens to it while it waits."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from podium.drivers.process import SH, SHIM_PATH

# The driver runs the shim with dash where there is one; /bin/sh is bash on some systems,
# and bash reads a script line by line as it runs it.
SHELLS = sorted({SH, *(s for s in (shutil.which("dash"), shutil.which("bash")) if s)})


def _start(sh: str, shim: str, state: Path, *args: str) -> tuple[subprocess.Popen[bytes], bytes]:
    """Start the shim as the driver does; returns it once it reported its task."""
    report_r, report_w = os.pipe()
    proc = subprocess.Popen(
        [sh, shim, "-", "-", *args], stdin=report_w, stdout=subprocess.DEVNULL, close_fds=True
    )
    os.close(report_w)
    with os.fdopen(report_r, "rb") as report:
        line = report.readline()  # the task's /proc stat line: it has started
    return proc, line


@pytest.mark.parametrize("sh", SHELLS)
def test_a_shim_replaced_in_place_while_it_waits_runs_its_own_text(sh: str, tmp_path: Path) -> None:
    """A long-lived shim keeps executing the script it started with: a shell reads a
    script as it goes, so without the whole-script block an in-place rewrite made the
    shim resume in the new text with its own arguments."""
    shim = tmp_path / "shim.sh"
    shutil.copy(SHIM_PATH, shim)
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    marker = tmp_path / "pwned"
    state = tmp_path / "state"
    state.mkdir()
    proc, line = _start(sh, str(shim), state, "--", str(state), "/bin/sh", "-c", f"read x < {fifo}")
    assert line
    size = shim.stat().st_size
    evil = f"echo pwned > {marker}\n"
    with open(shim, "r+") as f:  # the same inode, rewritten: what an in-place edit does
        f.write((evil * (size // len(evil) + 1))[:size])
    with open(fifo, "w") as f:
        f.write("go\n")  # the task exits; the shim records its status
    assert proc.wait(timeout=30) == 0
    assert (state / "status").read_text() == "0\n"
    assert not marker.exists()


def test_only_cgroup_procs_files_are_written(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    proc = subprocess.run(
        [SH, SHIM_PATH, "-", "-", str(victim), "--", str(state), "/bin/true"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert (state / "status").read_text() == "125\n"  # a setup failure, before the task
    assert not (state / "pid").exists()
    assert victim.read_text() == "precious\n"
    assert proc.returncode == 0
