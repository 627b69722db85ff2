"""Fixtures for the driver tests: task contexts backed by real directories."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.drivers import cgroups
from podium.drivers.base import TaskContext
from podium.models import ExecConfig, MockConfig, Resources

PATH = "/usr/local/bin:/usr/bin:/bin"
"""A task PATH without pyenv shims (whose home nobody cannot read)."""

MakeCtx = Callable[..., TaskContext]


def _exec_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "exec tests need root (cgroups, namespaces, setpriv)"
    try:
        cgroups.detect()
    except cgroups.CgroupUnavailable as exc:
        return f"no usable cgroups: {exc}"
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool, path=os.defpath) is None:
            return f"{tool} (util-linux) is not installed"
    return None


EXEC_SKIP = _exec_unavailable()
needs_exec = pytest.mark.skipif(EXEC_SKIP is not None, reason=EXEC_SKIP or "")


def kill_leftovers(base: Path) -> None:
    """SIGKILL tasks a failed test left running: shims name their state dir under ``base``."""
    shims = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(args) > 1 and args[1].endswith(b"shim.sh") and str(base).encode() in b" ".join(args):
            shims.append(int(entry))
            state_dir = next(a for a in args if a.startswith(str(base).encode())).decode()
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(Path(state_dir, "pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 1
    while shims and time.monotonic() < deadline:
        shims = [p for p in shims if os.path.exists(f"/proc/{p}")]
        time.sleep(0.01)
    for pid in shims:  # never reported its task: take the shim's whole session down
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def _task_base(parent: str | None) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="podium-drv-", dir=parent))
    d.chmod(0o755)
    yield d
    kill_leftovers(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A world-traversable directory: exec tasks run as nobody and must reach their dirs."""
    yield from _task_base(None)


@pytest.fixture
def memory_dir() -> Iterator[Path]:
    """Like ``base_dir`` but on tmpfs where there is one: timings measure the driver, not the disk."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    yield from _task_base(shm)


def context_factory(base_dir: Path) -> MakeCtx:
    counter = iter(range(1_000_000))

    def make(
        command: str = "true",
        args: list[str] | None = None,
        *,
        task: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        memory: int = 64,
        cpu: int = 100,
        memory_max: int | None = None,
        cpu_max: int | None = None,
        user: str | None = None,
        alloc_id: str = "0f3c2a1e-alloc",
        mock: dict[str, Any] | None = None,
    ) -> TaskContext:
        name = task or f"t{next(counter)}"
        task_dir = base_dir / name
        task_dir.mkdir(exist_ok=True)
        config: Any = (
            MockConfig.model_validate(mock)
            if mock is not None
            else ExecConfig(command=command, args=args or [], cwd=cwd)
        )
        return TaskContext(
            alloc_id=alloc_id,
            task_name=name,
            job_id="job",
            group="g",
            alloc_index=0,
            node_id="node",
            config=config,
            env={"PATH": PATH, **(env or {})},
            resources=Resources(cpu=cpu, memory=memory, memory_max=memory_max, cpu_max=cpu_max),
            alloc_dir=str(base_dir),
            task_dir=str(task_dir),
            stdout_path=str(task_dir / "stdout.log"),
            stderr_path=str(task_dir / "stderr.log"),
            user=user,
        )

    return make


@pytest.fixture
def make_ctx(base_dir: Path) -> MakeCtx:
    return context_factory(base_dir)


@pytest.fixture
def make_fast_ctx(memory_dir: Path) -> MakeCtx:
    return context_factory(memory_dir)


def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""
