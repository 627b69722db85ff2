"""Start one task from a short-lived process, print its handle as JSON, exit.

The re-attach tests run this as a separate Python process, so the shim it
spawns is *not* a child of the test process, just as after an agent restart.
Usage: python detached_start.py DRIVER TASK_DIR COMMAND [ARG ...]
(``exec`` puts the task's cgroup under $PODIUM_TEST_CGROUP_ROOT.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from podium.drivers import ExecDriver, RawExecDriver
from podium.drivers.base import TaskContext
from podium.drivers.process import ProcessDriver
from podium.models import ExecConfig, Resources


async def main(driver_name: str, task_dir: str, command: str, args: list[str]) -> None:
    driver: ProcessDriver = (
        RawExecDriver()
        if driver_name == "raw_exec"
        else ExecDriver(os.environ.get("PODIUM_TEST_CGROUP_ROOT"))
    )
    ctx = TaskContext(
        alloc_id="detached",
        task_name=os.path.basename(task_dir),
        job_id="job",
        group="g",
        alloc_index=0,
        node_id="node",
        config=ExecConfig(command=command, args=args),
        env={"PATH": "/usr/bin:/bin"},
        resources=Resources(cpu=100, memory=64),
        alloc_dir=os.path.dirname(task_dir),
        task_dir=task_dir,
        stdout_path=os.path.join(task_dir, "stdout.log"),
        stderr_path=os.path.join(task_dir, "stderr.log"),
    )
    handle = await driver.start(ctx)
    await driver.task_pid(handle)
    print(json.dumps(handle.to_dict()))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
