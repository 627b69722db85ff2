"""``raw_exec``: a plain process as the agent's own user, with no isolation.

Everything but *what to run* is the shared shim supervision in
:mod:`podium.drivers.process`.  Whether the driver may be used at all is the
agent's configuration (``raw_exec_enabled``), so the fingerprint is always
healthy and :func:`podium.drivers.builtin_drivers` leaves it out when disabled.

Host volumes (docs/volumes.md) appear as symlinks in the task dir, since there is no
root of the task's own to mount them in: ``volume_mounts: [{destination: /data}]`` is
``$PODIUM_TASK_DIR/data``, and ``PODIUM_VOLUME_<NAME>`` is the host path.

A task's ``memory`` and ``cpu`` are only reserved: nothing holds it to them.
A task that names hard limits (``memory_max``, ``cpu_max``) gets them, in a
cgroup of its own as an ``exec`` task does (OOM kills reported the same way);
where the agent cannot make one (not root, no memory and cpu controllers) such
a task fails to start with the reason, rather than run without the limit it
asked for.
"""

from __future__ import annotations

import os

from podium.drivers import cgroups
from podium.drivers.base import TaskContext
from podium.drivers.commands import exec_config, resolve_command, task_cwd
from podium.drivers.process import LaunchPlan, ProcessDriver
from podium.errors import DriverError
from podium.models import DriverInfo


class RawExecDriver(ProcessDriver):
    name = "raw_exec"

    def __init__(
        self,
        cgroup_root: str | None = None,
        *,
        fs_root: str = "/sys/fs/cgroup",
        mountinfo: str = "/proc/self/mountinfo",
    ) -> None:
        super().__init__()
        self._cgroup_args = (fs_root, mountinfo, cgroups.tree_root(cgroup_root, fs_root))
        self._cgroups: cgroups.Cgroups | None = None

    def fingerprint(self) -> DriverInfo:
        return DriverInfo(detected=True, healthy=True, description="runs tasks as the agent's user")

    def _plan(self, ctx: TaskContext) -> LaunchPlan:
        link_volumes(ctx)
        cfg = exec_config(ctx)
        cwd = task_cwd(cfg, ctx)
        command = resolve_command(cfg.command, ctx.env, cwd)
        plan = LaunchPlan(argv=[command, *cfg.args], cwd=cwd, env=dict(ctx.env))
        res = ctx.resources
        if res.memory_max is None and res.cpu_max is None:
            return plan
        self._limit(plan, self._layout(), ctx, res.memory_max)
        return plan

    def _layout(self) -> cgroups.Cgroups:
        """The node's cgroups, for a task with hard limits; DriverError when unusable."""
        if self._cgroups is None:
            why = "it needs the agent to run as root" if os.geteuid() != 0 else None
            if why is None:
                try:
                    self._cgroups = cgroups.detect(*self._cgroup_args)
                except cgroups.CgroupUnavailable as exc:
                    why = str(exc)
            if why is not None:
                raise DriverError(
                    f"raw_exec cannot enforce memory_max or cpu_max on this node ({why}): "
                    "leave them out, or run the task with exec or docker"
                )
        assert self._cgroups is not None
        return self._cgroups


def link_volumes(ctx: TaskContext) -> None:
    """raw_exec has no root of its own to mount a host volume into: each mount is a
    symlink at ``<task dir>/<destination>`` to the host path (``PODIUM_VOLUME_<NAME>``
    holds the host path too).  ``read_only`` cannot be enforced on a process that runs as
    the agent's user; it is documented so (docs/volumes.md)."""
    task_dir = os.path.realpath(ctx.task_dir)
    for mount in ctx.mounts:
        link = os.path.normpath(os.path.join(task_dir, mount.destination.lstrip("/")))
        if not link.startswith(task_dir + "/"):
            raise DriverError(f"volume destination {mount.destination!r} leaves the task dir")
        try:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.islink(link):
                os.unlink(link)  # a restart: the host path may have changed
            os.symlink(mount.source, link)
        except OSError as exc:
            raise DriverError(
                f"volume {mount.volume!r}: cannot link {link} to {mount.source}: {exc}",
                recoverable=False,
            ) from exc
