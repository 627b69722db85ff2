"""``raw_exec``: a plain process as the agent's own user, with no isolation.

Everything but *what to run* is the shared shim supervision in
:mod:`podium.drivers.process`.  Whether the driver may be used at all is the
agent's configuration (``raw_exec_enabled``), so the fingerprint is always
healthy and :func:`podium.drivers.builtin_drivers` leaves it out when disabled.
"""

from __future__ import annotations

from podium.drivers.base import TaskContext
from podium.drivers.commands import exec_config, resolve_command, task_cwd
from podium.drivers.process import LaunchPlan, ProcessDriver
from podium.models import DriverInfo


class RawExecDriver(ProcessDriver):
    name = "raw_exec"

    def fingerprint(self) -> DriverInfo:
        return DriverInfo(detected=True, healthy=True, description="runs tasks as the agent's user")

    def _plan(self, ctx: TaskContext) -> LaunchPlan:
        cfg = exec_config(ctx)
        cwd = task_cwd(cfg, ctx)
        command = resolve_command(cfg.command, ctx.env, cwd)
        return LaunchPlan(argv=[command, *cfg.args], cwd=cwd, env=dict(ctx.env))
