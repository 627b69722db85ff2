"""Both cgroup layouts, against temporary directories that fake the control files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from podium.drivers import cgroups
from podium.drivers.cgroups import CgroupUnavailable, CgroupV1, CgroupV2

from .helpers import alive, until

MOUNTINFO_HYBRID = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
"""


def fake_v2(tmp_path: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    return root


def test_parse_mountinfo() -> None:
    v1, v2 = cgroups.parse_mountinfo(MOUNTINFO_HYBRID)
    assert v2 == "/sys/fs/cgroup/unified"
    assert v1["memory"] == "/sys/fs/cgroup/memory"
    assert v1["cpu"] == v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert "rw" in v1  # mount options are harmless extra keys


def test_detect_v2_and_create(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    layout = cgroups.detect(str(root), "/nonexistent", root="/podium/tasks/")
    assert isinstance(layout, CgroupV2) and layout.version == 2
    (leaf,) = layout.create("alloc-web", memory_mb=50, cpu_mhz=1000)
    assert leaf == str(root / "podium" / "tasks" / "alloc-web")
    for parent in (root, root / "podium", root / "podium" / "tasks"):
        assert (parent / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert Path(leaf, "memory.max").read_text() == str(50 * 1024 * 1024)
    assert Path(leaf, "memory.swap.max").read_text() == "0"
    assert Path(leaf, "cpu.weight").read_text() == str(cgroups.cpu_weight(1000))
    assert not Path(leaf, "cpu.max").exists()  # no CPU limit unless one is asked for


def test_cpu_limit_is_a_cfs_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "core_mhz", lambda: 2000)
    assert cgroups.cpu_quota_us(1000, 2000) == 50_000  # half a core of every 100 ms
    assert cgroups.cpu_quota_us(4000, 2000) == 200_000  # two cores
    assert cgroups.cpu_quota_us(1, 2000) == 1000  # the kernel's minimum quota
    (leaf,) = CgroupV2(mount=str(fake_v2(tmp_path))).create("t", 64, 100, cpu_max_mhz=3000)
    assert Path(leaf, "cpu.max").read_text() == "150000 100000"
    v1 = tmp_path / "v1"
    dirs = CgroupV1(mounts={"memory": str(v1), "cpu": str(v1)}).create("t", 64, 100, 1000)
    assert Path(dirs[0], "cpu.cfs_period_us").read_text() == "100000"
    assert Path(dirs[0], "cpu.cfs_quota_us").read_text() == "50000"


def test_detect_v2_without_memory(tmp_path: Path) -> None:
    root = fake_v2(tmp_path, controllers="cpu pids")
    with pytest.raises(CgroupUnavailable, match="memory"):
        cgroups.detect(str(root), "/nonexistent")


def test_detect_v1_and_create(tmp_path: Path) -> None:
    mem, cpu = tmp_path / "memory", tmp_path / "cpu,cpuacct"
    mem.mkdir()
    cpu.mkdir()
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO_HYBRID.replace("/sys/fs/cgroup/", f"{tmp_path}/"))
    layout = cgroups.detect(str(tmp_path), str(info))
    assert isinstance(layout, CgroupV1) and layout.version == 1
    assert layout.mounts == {"memory": str(mem), "cpu": str(cpu)}
    dirs = layout.create("a/b", memory_mb=64, cpu_mhz=1)
    assert dirs == [str(mem / "podium" / "a_b"), str(cpu / "podium" / "a_b")]
    assert Path(dirs[0], "memory.limit_in_bytes").read_text() == str(64 * 1024 * 1024)
    assert Path(dirs[0], "memory.memsw.limit_in_bytes").read_text() == str(64 * 1024 * 1024)
    assert Path(dirs[1], "cpu.shares").read_text() == "2"  # the kernel's minimum
    assert [Path(d, "cgroup.procs") for d in dirs]


def test_v1_single_mount_for_both(tmp_path: Path) -> None:
    layout = CgroupV1(mounts={"memory": str(tmp_path), "cpu": str(tmp_path)}, root="r")
    assert layout.create("t", 10, 100) == [str(tmp_path / "r" / "t")]


def test_detect_v1_missing_controller(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("28 25 0:25 / /x/memory rw - cgroup cgroup rw,memory\n")
    with pytest.raises(CgroupUnavailable, match="cpu"):
        cgroups.detect(str(tmp_path), str(info))


def test_cpu_weight_mapping() -> None:
    assert cgroups.cpu_weight(1) == 1
    assert cgroups.cpu_weight(262144) == 10000
    assert cgroups.cpu_weight(10**9) == 10000
    weights = [cgroups.cpu_weight(m) for m in (100, 500, 1000, 2000, 4000)]
    assert weights == sorted(weights) and len(set(weights)) == len(weights)
    assert cgroups.cpu_shares(2000) == 2000


def test_oom_kills_from_either_version(tmp_path: Path) -> None:
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    for d in (v2, v1, none):
        d.mkdir()
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cgroups.oom_kills([str(v2)]) == 1
    assert cgroups.oom_kills([str(none), str(v1)]) == 3
    assert cgroups.oom_kills([str(none)]) is None
    (none / "memory.failcnt").write_text("7\n")
    assert cgroups.memory_failcnt([str(none)]) == 7


async def test_kill_signals_every_listed_process(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "cgroup.procs").write_text(f"{victim.pid}\n")
        assert cgroups.pids([str(tmp_path)]) == {victim.pid}
        cgroups.kill([str(tmp_path)])
        await until(lambda: victim.poll() is not None or not alive(victim.pid))
    finally:
        victim.kill()
        victim.wait()


def test_cgroup_kill_file_is_preferred(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").write_text("")
    (tmp_path / "cgroup.kill").write_text("")
    cgroups.kill([str(tmp_path)])
    assert (tmp_path / "cgroup.kill").read_text() == "1"


def test_create_resets_a_leftover_cgroup(tmp_path: Path) -> None:
    layout = CgroupV1(mounts={"memory": str(tmp_path), "cpu": str(tmp_path)})
    (leaf,) = layout.create("t", 10, 100)
    assert cgroups.remove([str(tmp_path / "missing")])
    # A real cgroupfs allows rmdir with control files inside; tmpfs does not.
    assert not cgroups.remove([leaf])
    assert layout.create("t", 20, 100) == [leaf]
    assert Path(leaf, "memory.limit_in_bytes").read_text() == str(20 * 1024 * 1024)
