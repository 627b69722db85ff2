"""What a task runs: its resolved command, working directory and helper tools.

Done in the agent, before anything is spawned, so that a typo in a job file is
an immediate, clear start error instead of a task that exits 127 a moment
later (and is restarted, and exits 127 again).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from podium.drivers.base import TaskContext
from podium.drivers.procfs import ignored_signals
from podium.errors import DriverError
from podium.models import ExecConfig


def exec_config(ctx: TaskContext) -> ExecConfig:
    if isinstance(ctx.config, ExecConfig):
        return ctx.config
    try:
        return ExecConfig.model_validate(ctx.config.model_dump())
    except Exception as exc:
        raise DriverError(f"invalid config for an exec-style driver: {exc}") from exc


def task_cwd(cfg: ExecConfig, ctx: TaskContext) -> str:
    """``config.cwd`` (relative to the task dir) or the task dir itself."""
    cwd = os.path.join(ctx.task_dir, cfg.cwd) if cfg.cwd else ctx.task_dir
    if not os.path.isdir(cwd):
        raise DriverError(f"working directory {cwd!r} does not exist")
    return cwd


def resolve_command(command: str, env: dict[str, str], cwd: str) -> str:
    """The absolute path ``command`` names, looked up in the *task's* PATH."""
    if "/" in command:
        path = os.path.normpath(os.path.join(cwd, command))
        if not os.path.exists(path):
            raise DriverError(f"command {command!r} does not exist")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise DriverError(f"command {command!r} is not an executable file")
        return path
    search = env.get("PATH", os.defpath)
    # Relative PATH entries (and the empty one, meaning ".") are relative to the task's cwd.
    dirs = [os.path.join(cwd, d) for d in search.split(os.pathsep)]
    found = shutil.which(command, path=os.pathsep.join(dirs))
    if found is None:
        raise DriverError(f"command {command!r} not found in PATH ({search})")
    return os.path.normpath(found)


def helper_path(name: str) -> str:
    """A system tool by absolute path: the task's PATH need not contain it."""
    return shutil.which(name, path=f"{os.defpath}:/usr/sbin:/sbin") or f"/usr/bin/{name}"


def pwd_arg(env: dict[str, str]) -> str:
    """How the shim (and exec's pid-1 sh) must leave PWD, which dash sets on its own."""
    return "=" + env["PWD"] if "PWD" in env else "-"


_env_resets: bool | None = None


def signal_reset_prefix() -> list[str]:
    """``env --default-signal`` while the agent ignores signals (coreutils 8.31+).

    A task inherits ignored signals (``nohup`` ignores SIGHUP, a shell's ``&``
    SIGINT and SIGQUIT) and could then not be stopped with them.  The prefix
    costs an exec per task, so it is only added when needed.
    """
    global _env_resets
    if not ignored_signals():
        return []
    env = helper_path("env")
    if _env_resets is None:
        try:
            done = subprocess.run(
                [env, "--default-signal", "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=5,
                check=False,
            )
            _env_resets = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _env_resets = False
    return [env, "--default-signal"] if _env_resets else []
