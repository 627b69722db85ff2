"""Device plugins (podium.agent.devices) and what a task is given (podium.agent.taskextras).

The NVIDIA parser is tested on output captured from ``nvidia-smi`` (an H100 node, and
a node with a GPU fallen off the bus); the plugin runs a real stand-in ``nvidia-smi``
script, and finds nothing where there is none.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from podium.agent.devices import fingerprint_devices
from podium.agent.devices.file import FilePlugin, load_device_file
from podium.agent.devices.nvidia import NvidiaPlugin, parse_query
from podium.agent.taskextras import extra_env, task_mounts
from podium.errors import DriverError
from podium.models import Allocation, Group, Resources
from podium.models.devices import AllocatedDevices, DeviceGroup
from podium.models.volumes import HostVolume, parse_host_volume, parse_host_volumes

H100_NODE = """\
0, GPU-5c3e8f3c-1d2b-7a4e-9f01-2b3c4d5e6f70, NVIDIA H100 80GB HBM3, 81559, 00000000:19:00.0, 550.54.15
1, GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d, NVIDIA H100 80GB HBM3, 81559, 00000000:3B:00.0, 550.54.15
"""

MIXED_WITH_A_LOST_GPU = """\
0, GPU-11111111-2222-3333-4444-555555555555, Tesla T4, 15360, 00000000:00:04.0, 535.104.05
1, GPU-66666666-7777-8888-9999-000000000000, [GPU is lost], [GPU is lost], 00000000:00:05.0, 535.104.05
2, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, NVIDIA A100-SXM4-40GB, 40960, 00000000:00:06.0, 535.104.05
"""


def test_the_parser_groups_gpus_by_model_with_memory_and_uuids() -> None:
    (group,) = parse_query(H100_NODE)
    assert (group.vendor, group.type, group.name) == ("nvidia", "gpu", "NVIDIA H100 80GB HBM3")
    assert group.attributes == {"memory": "81559", "driver_version": "550.54.15"}
    assert [(i.id, i.index, i.healthy) for i in group.instances] == [
        ("GPU-5c3e8f3c-1d2b-7a4e-9f01-2b3c4d5e6f70", "0", True),
        ("GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "1", True),
    ]


def test_a_lost_gpu_is_reported_unhealthy() -> None:
    groups = {g.name: g for g in parse_query(MIXED_WITH_A_LOST_GPU)}
    assert set(groups) == {"Tesla T4", "[GPU is lost]", "NVIDIA A100-SXM4-40GB"}
    (lost,) = groups["[GPU is lost]"].instances
    assert not lost.healthy and lost.health_description == "GPU is lost"
    assert all(i.healthy for i in groups["Tesla T4"].instances)
    assert groups["NVIDIA A100-SXM4-40GB"].attributes["memory"] == "40960"
    assert parse_query("") == [] and parse_query("garbage\n") == []


def test_the_plugin_runs_nvidia_smi_and_finds_none_without_it(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = "--query-gpu=index,uuid,name,memory.total,pci.bus_id,driver_version" ] || exit 9\n'
        f"cat <<'EOF'\n{H100_NODE}EOF\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (group,) = NvidiaPlugin(str(fake)).fingerprint()
    assert len(group.instances) == 2
    assert NvidiaPlugin(str(tmp_path / "absent")).fingerprint() == []
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2; exit 9\n")
    failing.chmod(0o755)
    assert NvidiaPlugin(str(failing)).fingerprint() == []


def fake_file(path: Path, healthy: bool = True) -> Path:
    path.write_text(
        json.dumps(
            {
                "devices": [
                    {
                        "vendor": "nvidia",
                        "type": "gpu",
                        "name": "Fake T4",
                        "attributes": {"memory": "15360"},
                        "instances": [
                            {"id": "GPU-f0", "index": "0"},
                            {"id": "GPU-f1", "index": "1", "healthy": healthy},
                        ],
                    }
                ]
            }
        )
    )
    return path


def test_the_file_plugin_reads_its_file_each_time(tmp_path: Path) -> None:
    path = fake_file(tmp_path / "gpus.json")
    plugin = FilePlugin(str(path))
    (group,) = fingerprint_devices([plugin])
    assert group.plugin == "file" and [i.healthy for i in group.instances] == [True, True]
    fake_file(path, healthy=False)
    (group,) = fingerprint_devices([plugin])
    assert [i.healthy for i in group.instances] == [True, False]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ('{"devices": [{"vendor": "nvidia", "type": "gpu"}]}', "devices.0.name"),
        ('{"gpus": []}', "gpus"),
        (
            '{"devices": [{"vendor": "n/v", "type": "gpu", "name": "x", "instances": []}]}',
            "vendor 'n/v'",
        ),
        (
            '{"devices": [{"vendor": "n", "type": "gpu", "name": "x", '
            '"instances": [{"id": "a"}, {"id": "a"}]}]}',
            "listed twice",
        ),
    ],
)
def test_a_bad_device_file_says_what_and_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="device file") as err:
        load_device_file(str(path))
    assert message in str(err.value)


def test_a_failing_plugin_does_not_hide_the_others(tmp_path: Path) -> None:
    good = FilePlugin(str(fake_file(tmp_path / "gpus.json")))
    broken = FilePlugin(str(tmp_path / "absent.json"))
    groups = fingerprint_devices([broken, good])
    assert [g.name for g in groups] == ["Fake T4"]


# -- flags ------------------------------------------------------------------------------


def test_host_volume_flags_parse_and_refuse_clearly() -> None:
    assert parse_host_volume("data=/srv/data") == ("data", HostVolume(path="/srv/data"))
    assert parse_host_volume("ro=/srv/x/,read_only")[1] == HostVolume(path="/srv/x", read_only=True)
    for spec, message in [
        ("data", "write NAME=PATH"),
        ("=/srv", "write NAME=PATH"),
        ("data=", "missing path"),
        ("data=relative", "must be absolute"),
        ("data=/srv/../etc", "must be absolute"),
        ("data=/srv,fast", "unknown option 'fast'"),
        ("bad name=/srv", "must start with a letter or digit"),
    ]:
        with pytest.raises(ValueError, match="host volume") as err:
            parse_host_volume(spec)
        assert message in str(err.value), spec
    with pytest.raises(ValueError, match="declared twice"):
        parse_host_volumes(["a=/x", "a=/y"])


# -- what a task gets ----------------------------------------------------------------------


def group_with_mounts() -> Group:
    return Group.model_validate(
        {
            "volumes": {
                "data": {"source": "pg"},
                "conf": {"source": "etc", "read_only": True},
            },
            "tasks": {
                "t": {
                    "driver": "exec",
                    "volume_mounts": [
                        {"volume": "data", "destination": "/data"},
                        {"volume": "conf", "destination": "/conf"},
                    ],
                },
                "other": {"driver": "raw_exec"},
            },
        }
    )


def test_mounts_resolve_through_the_node_and_take_every_read_only() -> None:
    host = {"pg": HostVolume(path="/srv/pg"), "etc": HostVolume(path="/srv/etc")}
    mounts = task_mounts(group_with_mounts(), "t", host)
    assert [(m.volume, m.source, m.destination, m.read_only) for m in mounts] == [
        ("data", "/srv/pg", "/data", False),
        ("conf", "/srv/etc", "/conf", True),
    ]
    host["pg"] = HostVolume(path="/srv/pg", read_only=True)
    assert task_mounts(group_with_mounts(), "t", host)[0].read_only
    with pytest.raises(DriverError, match="declares no host volume 'etc'"):
        task_mounts(group_with_mounts(), "t", {"pg": HostVolume(path="/srv/pg")})


def alloc_with(devices: list[AllocatedDevices]) -> Allocation:
    return Allocation(
        id="a1",
        eval_id="e",
        name="j.g[0]",
        job_id="j",
        job_version=0,
        group="g",
        index=0,
        node_id="n",
        resources=Resources(),
        devices=devices,
    )


def test_the_environment_names_volumes_and_devices() -> None:
    host = {"pg": HostVolume(path="/srv/pg"), "etc": HostVolume(path="/srv/etc")}
    given = [
        AllocatedDevices(
            task="t",
            vendor="nvidia",
            type="gpu",
            name="T4",
            device_ids=["GPU-a", "GPU-b"],
            indexes=["0", "1"],
        ),
        AllocatedDevices(task="t", vendor="xilinx", type="fpga", name="U50", device_ids=["f0"]),
        AllocatedDevices(task="other", vendor="nvidia", type="gpu", name="T4", device_ids=["c"]),
    ]
    env = extra_env(group_with_mounts(), "t", "exec", alloc_with(given), host)
    assert env["PODIUM_VOLUME_DATA"] == "/data" and env["PODIUM_VOLUME_CONF"] == "/conf"
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
    assert json.loads(env["PODIUM_DEVICES"]) == [
        {"device": "nvidia/gpu/T4", "ids": ["GPU-a", "GPU-b"], "indexes": ["0", "1"]},
        {"device": "xilinx/fpga/U50", "ids": ["f0"], "indexes": []},
    ]
    raw = extra_env(group_with_mounts(), "t", "raw_exec", alloc_with([]), host)
    assert raw == {"PODIUM_VOLUME_DATA": "/srv/pg", "PODIUM_VOLUME_CONF": "/srv/etc"}
    assert extra_env(group_with_mounts(), "other", "raw_exec", alloc_with(given), host) == {
        "NVIDIA_VISIBLE_DEVICES": "c",
        "CUDA_VISIBLE_DEVICES": "c",
        "PODIUM_DEVICES": '[{"device":"nvidia/gpu/T4","ids":["c"],"indexes":[]}]',
    }


def test_device_groups_match_names_as_nomad_does() -> None:
    g = DeviceGroup(vendor="nvidia", type="gpu", name="Tesla T4")
    assert [g.matches(n) for n in ("gpu", "nvidia/gpu", "nvidia/gpu/Tesla T4")] == [True] * 3
    assert [g.matches(n) for n in ("fpga", "amd/gpu", "nvidia/gpu/T4", "nvidia")] == [False] * 4
