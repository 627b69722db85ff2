"""``Driver.signal``: what a template's ``change_mode: signal`` sends, for each driver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.drivers.base import TaskContext
from podium.drivers.docker import LABEL_ALLOC, DockerDriver
from podium.drivers.mock import MockDriver
from podium.drivers.raw_exec import RawExecDriver
from podium.errors import DriverError
from podium.models import MockConfig, Resources
from podium.models.taskconfig import DockerConfig

from .conftest import MakeCtx
from .helpers import has_text, until
from .test_docker import CLIENT, IMAGE
from .test_docker import SKIP as DOCKER_SKIP

TRAP = 'trap "echo got HUP" HUP; echo ready; while true; do sleep 0.05; done'


async def test_raw_exec_signals_the_task_group(make_ctx: MakeCtx) -> None:
    driver = RawExecDriver()
    ctx = make_ctx("sh", ["-c", TRAP])
    handle = await driver.start(ctx)
    try:
        await until(has_text(ctx.stdout_path, "ready"))
        await driver.signal(handle, "SIGHUP")
        await until(has_text(ctx.stdout_path, "got HUP"))
        await driver.signal(handle, "hup")  # names as job files write them
        await until(lambda: Path(ctx.stdout_path).read_text().count("got HUP") == 2)
        with pytest.raises(DriverError, match="SIGNOPE"):
            await driver.signal(handle, "SIGNOPE")
    finally:
        await driver.stop(handle, "SIGKILL", 1)
        await driver.destroy(handle)
    with pytest.raises(DriverError, match="not running"):
        await driver.signal(handle, "SIGHUP")


async def test_mock_records_signals(tmp_path: Path) -> None:
    driver = MockDriver()
    ctx = TaskContext(
        alloc_id="a",
        task_name="t",
        job_id="j",
        group="g",
        alloc_index=0,
        node_id="n",
        config=MockConfig.model_validate({"run_for": "1h"}),
        env={},
        resources=Resources(),
        alloc_dir=str(tmp_path),
        task_dir=str(tmp_path),
        stdout_path=str(tmp_path / "out"),
        stderr_path=str(tmp_path / "err"),
    )
    handle = await driver.start(ctx)
    await driver.signal(handle, "SIGUSR1")
    assert driver.signals == [("a/t", "SIGUSR1")]
    await driver.stop(handle, "SIGTERM", 0)
    with pytest.raises(DriverError, match="not running"):
        await driver.signal(handle, "SIGUSR1")


@pytest.fixture
def docker_alloc() -> Iterator[str]:
    aid = f"test-signal-{int(time.time() * 1000) % 10**9}"
    yield aid
    if CLIENT is not None:
        for c in CLIENT.containers.list(all=True, filters={"label": f"{LABEL_ALLOC}={aid}"}):
            c.remove(force=True)


@pytest.mark.skipif(DOCKER_SKIP is not None, reason=DOCKER_SKIP or "")
async def test_docker_signals_the_container(tmp_path: Path, docker_alloc: str) -> None:
    driver = DockerDriver()
    task_dir = tmp_path / "t"
    task_dir.mkdir()
    (tmp_path / "alloc").mkdir()
    ctx = TaskContext(
        alloc_id=docker_alloc,
        task_name="t",
        job_id="j",
        group="g",
        alloc_index=0,
        node_id="n",
        config=DockerConfig.model_validate(
            {"image": IMAGE, "command": "/bin/sh", "args": ["-c", TRAP]}
        ),
        env={"PODIUM_ALLOC_ID": docker_alloc},
        resources=Resources(cpu=100, memory=64),
        alloc_dir=str(tmp_path / "alloc"),
        task_dir=str(task_dir),
        stdout_path=str(task_dir / "stdout.log"),
        stderr_path=str(task_dir / "stderr.log"),
    )
    handle = await driver.start(ctx)
    try:
        await until(has_text(ctx.stdout_path, "ready"), timeout=20)
        await driver.signal(handle, "SIGHUP")
        await until(has_text(ctx.stdout_path, "got HUP"), timeout=10)
    finally:
        await driver.stop(handle, "SIGKILL", 1)
        await asyncio.wait_for(driver.wait(handle), 10)
        await driver.destroy(handle)
    with pytest.raises(DriverError, match="not running"):
        await driver.signal(handle, "SIGHUP")
