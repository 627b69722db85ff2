"""End to end: host volumes and (simulated) GPUs on a real `podium agent --dev`.

* A host volume outlives its allocations: one allocation writes into it, its
  replacement (``job restart --reschedule``: a new allocation) reads what it wrote,
  through raw_exec (a link in the task dir, ``PODIUM_VOLUME_<NAME>`` the host path) and
  exec (a bind mount in its own root); a group asking for a volume the node lacks is
  not placed, and the status says why.  The docker variant is in test_docker.py's
  style, skipped where no engine answers.
* A node with fake GPUs (``--device-file``) gives each instance to one task at a time:
  the ``CUDA_VISIBLE_DEVICES`` of the running tasks are exactly the node's GPUs, none
  twice; a request for more than are free is not placed and says why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import DevAgent, free_port, wait_until, write_job

pytestmark = pytest.mark.e2e

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="exec needs root")


def _agent(tmp_path: Path, *flags: str) -> Iterator[DevAgent]:
    agent = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "agent.log",
        extra_args=list(flags),
    )
    try:
        agent.start()
        yield agent
    finally:
        agent.cleanup()


@pytest.fixture
def volume_dir(tmp_path: Path) -> Path:
    path = tmp_path / "vol"
    path.mkdir()
    path.chmod(0o1777)  # exec tasks run as a uid of their allocation's own
    return path


@pytest.fixture
def volume_agent(tmp_path: Path, volume_dir: Path) -> Iterator[DevAgent]:
    yield from _agent(tmp_path, "--host-volume", f"data={volume_dir}")


def volume_job(driver: str, source: str = "data", image: str = "") -> str:
    config = (
        f"image: {image}\n          command: /bin/sh" if driver == "docker" else "command: /bin/sh"
    )
    return f"""
job: keeper
groups:
  g:
    volumes:
      data: {{type: host, source: {source}}}
    tasks:
      t:
        driver: {driver}
        volume_mounts:
          - {{volume: data, destination: /data}}
        resources: {{cpu: 100, memory: 64}}
        config:
          {config}
          args:
            - -c
            - |
              echo "$PODIUM_ALLOC_ID" > "$PODIUM_VOLUME_DATA/$PODIUM_ALLOC_ID"
              for f in "$PODIUM_VOLUME_DATA"/*; do echo "saw $(cat "$f")"; done
              exec sleep 3600
"""


def replace_and_check(agent: DevAgent, volume_dir: Path) -> None:
    """The job's one allocation wrote its id; its replacement sees that file."""
    (first,) = agent.wait_running("keeper", 1, timeout=60)
    wait_until(
        lambda: (volume_dir / first["id"]).read_text().strip() == first["id"],
        timeout=30,
        what="the first allocation's file in the host volume",
    )
    agent.cli("job", "restart", "keeper", "--reschedule", "--yes", timeout=120, check=True)
    second = wait_until(
        lambda: [a for a in agent.running("keeper") if a["id"] != first["id"]],
        timeout=60,
        what="the replacement allocation",
    )[0]
    assert second["previous_allocation"] == first["id"]
    logs = wait_until(
        lambda: (
            (
                (out := agent.cli("alloc", "logs", second["id"]).stdout)
                and f"saw {first['id']}" in out
            )
            and out
        ),
        timeout=30,
        what="the replacement to read the first allocation's file",
    )
    assert f"saw {second['id']}" in logs
    assert sorted(p.name for p in volume_dir.iterdir()) == sorted([first["id"], second["id"]])


def test_raw_exec_host_volume_outlives_its_allocation(
    volume_agent: DevAgent, volume_dir: Path, tmp_path: Path
) -> None:
    node = volume_agent.get("/v1/nodes")[0]
    node = volume_agent.get(f"/v1/node/{node['id']}")
    assert node["host_volumes"] == {"data": {"path": str(volume_dir), "read_only": False}}
    volume_agent.cli("job", "run", write_job(tmp_path, volume_job("raw_exec")), check=True)
    replace_and_check(volume_agent, volume_dir)
    # raw_exec's view of the mount: a link in the task dir to the host path
    (alloc,) = volume_agent.running("keeper")
    links = list(volume_agent.data_dir.glob(f"**/allocs/{alloc['id']}/t/data"))
    assert [os.readlink(p) for p in links] == [str(volume_dir)]


@root_only
def test_exec_host_volume_outlives_its_allocation(
    volume_agent: DevAgent, volume_dir: Path, tmp_path: Path
) -> None:
    volume_agent.cli("job", "run", write_job(tmp_path, volume_job("exec")), check=True)
    replace_and_check(volume_agent, volume_dir)


@root_only
def test_exec_read_only_mount_refuses_writes(
    volume_agent: DevAgent, volume_dir: Path, tmp_path: Path
) -> None:
    text = volume_job("exec").replace(
        "{volume: data, destination: /data}", "{volume: data, destination: /data, read_only: true}"
    )
    (volume_dir / "seed").write_text("seeded\n")
    volume_agent.cli("job", "run", write_job(tmp_path, text), check=True)
    (alloc,) = volume_agent.wait_running("keeper", 1, timeout=60)
    out = wait_until(
        lambda: (o := volume_agent.cli("alloc", "logs", alloc["id"]).stdout) and "saw" in o and o,
        timeout=30,
        what="the task's output",
    )
    assert "saw seeded" in out
    err = volume_agent.cli("alloc", "logs", "--stderr", alloc["id"]).stdout
    assert "Read-only file system" in err
    assert sorted(p.name for p in volume_dir.iterdir()) == ["seed"]


def test_a_group_asking_for_a_missing_volume_is_not_placed(
    volume_agent: DevAgent, tmp_path: Path
) -> None:
    result = volume_agent.cli(
        "job", "run", write_job(tmp_path, volume_job("raw_exec", source="nope")), timeout=60
    )
    assert "missing host volume nope" in result.stdout + result.stderr
    status = volume_agent.cli("job", "status", "keeper", check=True).stdout
    assert "1 missing host volume nope" in status
    assert volume_agent.allocs("keeper") == []


def test_host_volume_flag_errors_are_clear(tmp_path: Path) -> None:
    import subprocess

    from tests.e2e.conftest import PODIUM

    cases = [
        (["--host-volume", "data"], "write NAME=PATH"),
        (["--host-volume", "data="], "missing path"),
        (["--host-volume", f"data={tmp_path}", "--host-volume", f"data={tmp_path}"], "twice"),
        (["--host-volume", f"data={tmp_path},rw,fast"], "unknown option 'fast'"),
        (["--host-volume", f"data={tmp_path}/absent"], "is no directory"),
        (["--device-file", str(tmp_path / "absent.json")], "No such file"),
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"devices": [{"vendor": "nvidia", "type": "gpu"}]}))
    cases.append((["--device-file", str(bad)], "devices.0.name"))
    for flags, message in cases:
        done = subprocess.run(
            [*PODIUM, "agent", "--dev", "--data-dir", str(tmp_path / "d"), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, flags
        assert message in done.stdout + done.stderr, (flags, done.stdout + done.stderr)


# -- devices ---------------------------------------------------------------------------

FAKE_GPUS = ["GPU-fake-a", "GPU-fake-b", "GPU-fake-c"]


@pytest.fixture
def gpu_agent(tmp_path: Path) -> Iterator[DevAgent]:
    path = tmp_path / "gpus.json"
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
                            {"id": gpu, "index": str(i)} for i, gpu in enumerate(FAKE_GPUS)
                        ]
                        + [{"id": "GPU-fake-sick", "index": "3", "healthy": False}],
                    }
                ]
            }
        )
    )
    yield from _agent(tmp_path, "--device-file", str(path))


def gpu_job(job: str, count: int, gpus: int = 1) -> str:
    return f"""
job: {job}
groups:
  g:
    count: {count}
    tasks:
      t:
        driver: raw_exec
        resources:
          cpu: 50
          memory: 32
          devices: [{{name: nvidia/gpu, count: {gpus}}}]
        config:
          command: /bin/sh
          args: ["-c", "echo \\"cuda=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES\\"; exec sleep 3600"]
"""


def visible(agent: DevAgent, alloc_id: str) -> str:
    out = agent.cli("alloc", "logs", alloc_id).stdout
    line = next(x for x in out.splitlines() if x.startswith("cuda="))
    cuda, nvidia = line.split()
    assert cuda.removeprefix("cuda=") == nvidia.removeprefix("nvidia=")
    return cuda.removeprefix("cuda=")


def test_fake_gpus_are_each_given_once(gpu_agent: DevAgent, tmp_path: Path) -> None:
    gpu_agent.cli("job", "run", write_job(tmp_path, gpu_job("pair", 2), "pair.yaml"), check=True)
    gpu_agent.cli("job", "run", write_job(tmp_path, gpu_job("solo", 1), "solo.yaml"), check=True)
    running = gpu_agent.wait_running("pair", 2, timeout=60) + gpu_agent.wait_running(
        "solo", 1, timeout=60
    )
    seen = [
        wait_until(lambda a=a: visible(gpu_agent, a["id"]), timeout=30, what="the task's output")
        for a in running
    ]
    assert sorted(seen) == sorted(FAKE_GPUS)  # every healthy GPU once, the sick one never
    for alloc in running:
        full = gpu_agent.get(f"/v1/allocation/{alloc['id']}")
        (given,) = full["devices"]
        gpu = visible(gpu_agent, alloc["id"])
        assert given["device_ids"] == [gpu]
        status = gpu_agent.cli("alloc", "status", alloc["id"], check=True).stdout
        assert f"Devices = t: nvidia/gpu/Fake T4 {gpu}" in " ".join(status.split())
    node = gpu_agent.get("/v1/nodes")[0]
    shown = gpu_agent.cli("node", "status", node["id"], check=True).stdout
    assert "nvidia/gpu/Fake T4" in shown and "3/4" in shown

    # no GPU is free: a fourth task is not placed, and the status says why in numbers
    more = gpu_agent.cli(
        "job", "run", write_job(tmp_path, gpu_job("more", 1), "more.yaml"), timeout=60
    )
    assert "exhausted devices nvidia/gpu" in more.stdout + more.stderr
    assert gpu_agent.allocs("more") == []
    # more GPUs in one task than the node has healthy: never placeable
    big = gpu_agent.cli("job", "run", write_job(tmp_path, gpu_job("big", 1, 4), "big.yaml"))
    assert "fewer than 4 healthy device nvidia/gpu" in big.stdout + big.stderr

    # stopping one frees its GPU for the blocked job
    gpu_agent.cli("job", "stop", "solo", check=True)
    (placed,) = gpu_agent.wait_running("more", 1, timeout=60)
    freed = wait_until(lambda: visible(gpu_agent, placed["id"]), timeout=30, what="output")
    assert freed in FAKE_GPUS
    now = [visible(gpu_agent, a["id"]) for a in gpu_agent.running("pair")] + [freed]
    assert len(set(now)) == 3
