"""How each driver shows a host volume and hands devices over (docs/volumes.md,
docs/devices.md), below the agent: the exec root's fstab, raw_exec's links in the task
dir, and the docker container's create arguments (no engine needed for those).
The end-to-end behaviour, on real tasks, is in tests/e2e/test_volumes_devices.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podium.drivers.base import TaskContext, TaskMount
from podium.drivers.docker import DockerDriver
from podium.drivers.raw_exec import link_volumes
from podium.drivers.rootfs import Bind, RootFs, Volume
from podium.errors import DriverError
from podium.models import ExecConfig, Resources
from podium.models.devices import AllocatedDevices
from podium.models.taskconfig import DockerConfig


def test_the_exec_root_binds_volumes_at_their_destinations(tmp_path: Path) -> None:
    usr = tmp_path / "host-usr"
    usr.mkdir()
    root = RootFs((Bind(str(usr), "/usr"),), base=str(tmp_path / "roots"))
    own = [str(tmp_path / "alloc"), str(tmp_path / "alloc/t")]
    text = root.fstab(
        own,
        [Volume("/srv/pg", "/data/pg"), Volume("/srv/conf", "/tmp/conf", read_only=True)],
    )
    lines = text.splitlines()
    top = root.path + "/data"
    assert f"tmpfs {top} tmpfs nosuid,nodev,mode=755,size=1m 0 0" in lines
    assert f"/srv/pg {root.path}/data/pg none bind,nosuid,nodev,X-mount.mkdir 0 0" in lines
    assert f"/srv/conf {root.path}/tmp/conf none bind,nosuid,nodev,X-mount.mkdir,ro 0 0" in lines
    # volumes are bound after the task's own dirs and /tmp, so nothing hides them
    assert lines.index(
        f"/srv/pg {root.path}/data/pg none bind,nosuid,nodev,X-mount.mkdir 0 0"
    ) > max(i for i, line in enumerate(lines) if "rbind" in line)


@pytest.mark.parametrize(
    ("dest", "words"),
    [("/usr/local/data", "shows /usr"), ("/proc/x", "shows /proc"), ("/", "would hide")],
)
def test_an_exec_volume_may_not_cover_the_root_it_is_given(
    tmp_path: Path, dest: str, words: str
) -> None:
    usr = tmp_path / "host-usr"
    usr.mkdir()
    root = RootFs((Bind(str(usr), "/usr"),), base=str(tmp_path / "roots"))
    with pytest.raises(DriverError, match="volume destination") as err:
        root.fstab([str(tmp_path / "alloc")], [Volume("/srv", dest)])
    assert words in str(err.value)


def ctx(tmp_path: Path, config: object, **extra: object) -> TaskContext:
    task_dir = tmp_path / "t"
    task_dir.mkdir(exist_ok=True)
    (tmp_path / "alloc").mkdir(exist_ok=True)
    return TaskContext(
        alloc_id="a1",
        task_name="t",
        job_id="j",
        group="g",
        alloc_index=0,
        node_id="n",
        config=config,  # type: ignore[arg-type]
        env={"PODIUM_VOLUME_DATA": "/data"},
        resources=Resources(),
        alloc_dir=str(tmp_path / "alloc"),
        task_dir=str(task_dir),
        stdout_path=str(task_dir / "out"),
        stderr_path=str(task_dir / "err"),
        **extra,  # type: ignore[arg-type]
    )


def test_raw_exec_links_each_volume_in_the_task_dir(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "hello").write_text("hi")
    mounts = [TaskMount("data", str(vol), "/data"), TaskMount("deep", str(vol), "/x/y/z")]
    c = ctx(tmp_path, ExecConfig(command="/bin/true"), mounts=mounts)
    link_volumes(c)
    link_volumes(c)  # a restart finds its links and makes them again
    assert (tmp_path / "t/data/hello").read_text() == "hi"
    assert os.readlink(tmp_path / "t/x/y/z") == str(vol)
    (tmp_path / "t/blocked").mkdir()
    with pytest.raises(DriverError, match="cannot link"):
        link_volumes(
            ctx(
                tmp_path,
                ExecConfig(command="/bin/true"),
                mounts=[TaskMount("data", str(vol), "/blocked")],
            )
        )


def test_docker_binds_host_volumes_and_asks_the_engine_only_for_real_gpus(tmp_path: Path) -> None:
    cfg = DockerConfig.model_validate({"image": "podium-test/busybox:1"})
    mounts = [TaskMount("data", "/srv/pg", "/data", read_only=True)]
    fake = AllocatedDevices(
        task="t", vendor="nvidia", type="gpu", name="T4", device_ids=["GPU-f"], plugin="file"
    )
    args = DockerDriver()._create_args(ctx(tmp_path, cfg, mounts=mounts, devices=[fake]), cfg)
    bound = [m for m in args["mounts"] if m["Target"] == "/data"]
    assert bound == [{"Target": "/data", "Source": "/srv/pg", "Type": "bind", "ReadOnly": True}]
    assert "device_requests" not in args
    real = fake.model_copy(update={"plugin": "nvidia", "device_ids": ["GPU-1", "GPU-2"]})
    args = DockerDriver()._create_args(ctx(tmp_path, cfg, devices=[real]), cfg)
    (request,) = args["device_requests"]
    assert request["Driver"] == "nvidia"
    assert request["DeviceIDs"] == ["GPU-1", "GPU-2"]
    assert request["Capabilities"] == [["gpu"]]
