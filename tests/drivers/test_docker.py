"""The docker driver against a real Docker Engine (skipped, with the reason, when none answers).

The image is ``podium-test/busybox:1``, built locally (no registry needed) by
``scripts/test-image``, which ``scripts/test`` and ``.ci/run`` run first: a static busybox in
an empty root filesystem, each applet a relative symlink to it (so ``sh`` runs inside).

Each test is its own node (``node_id``): cleanup_orphans() in one test never touches the
containers and networks of another running at the same time on another pytest-xdist worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.drivers import docker as docker_driver
from podium.drivers.base import TaskContext, TaskHandle
from podium.drivers.cgroups import core_mhz
from podium.drivers.docker import (
    LABEL_ALLOC,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PROJECT,
    DockerDriver,
    cleanup_orphans,
    container_health,
    container_name,
    nano_cpus,
    new_client,
    parse_timestamp,
)
from podium.drivers.docker_oom import child_limit
from podium.errors import DriverError
from podium.models import AllocatedPort, Resources
from podium.models.dockerpolicy import DockerPolicy
from podium.models.taskconfig import DockerConfig
from tests.drivers.conftest import read
from tests.drivers.helpers import has_text, until

IMAGE = "podium-test/busybox:1"
LOOP = 'trap "echo got TERM; exit 0" TERM; echo ready; while true; do sleep 0.1; done'
IGNORE = "trap '' TERM; echo ready; while true; do sleep 0.1; done"


def _engine() -> tuple[Any, str | None]:
    try:
        client = new_client(timeout=5)
        client.version()
    except Exception as exc:
        return None, f"no Docker Engine answers: {exc}"
    try:
        client.images.get(IMAGE)
    except Exception as exc:
        return None, f"test image {IMAGE} is missing (run scripts/test-image): {exc}"
    return client, None


CLIENT, SKIP = _engine()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.fixture(autouse=True)
def logs_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    """``wait`` gives the log followers LOG_DRAIN (5 s) to deliver a container's last lines;
    a busy engine can take longer, and the tests read the files right after ``wait``: here
    it waits for them (they end once every line is in the file)."""
    monkeypatch.setattr(docker_driver, "LOG_DRAIN", 120.0)


@pytest.fixture
def alloc_id() -> Iterator[str]:
    """A fresh allocation id per test; every container labelled with it is removed afterwards."""
    aid = f"test-{uuid.uuid4().hex[:12]}"
    yield aid
    for c in CLIENT.containers.list(all=True, filters={"label": f"{LABEL_ALLOC}={aid}"}):
        c.remove(force=True)
    for parent in Path("/sys/fs/cgroup").glob(f"*/podium-docker/podium-*-{aid}"):
        with contextlib.suppress(OSError):  # OOM parents of tests that did not destroy
            parent.rmdir()


@pytest.fixture
def node_id(alloc_id: str) -> str:
    """The node the test's containers and networks belong to: its own."""
    return f"node-{alloc_id}"


@pytest.fixture
def ctx_for(tmp_path: Path, alloc_id: str, node_id: str) -> Any:
    counter = iter(range(1000))

    def make(
        script: str | None = None,
        *,
        memory: int = 64,
        memory_max: int | None = None,
        cpu_max: int | None = None,
        alloc_ports: dict[str, AllocatedPort] | None = None,
        kill_signal: str = "SIGTERM",
        **config: Any,
    ) -> TaskContext:
        name = f"t{next(counter)}"
        task_dir = tmp_path / name
        task_dir.mkdir()
        (tmp_path / "alloc").mkdir(exist_ok=True)
        config.setdefault("image", IMAGE)
        if script is not None:
            config.setdefault("command", "/bin/sh")
            config.setdefault("args", ["-c", script])
        return TaskContext(
            alloc_id=alloc_id,
            task_name=name,
            job_id="job1",
            group="web",
            alloc_index=0,
            node_id=node_id,
            config=DockerConfig.model_validate(config),
            env={"PATH": "/host/only", "PODIUM_ALLOC_ID": alloc_id, "PODIUM_TASK_NAME": name},
            resources=Resources(cpu=100, memory=memory, memory_max=memory_max, cpu_max=cpu_max),
            alloc_dir=str(tmp_path / "alloc"),
            task_dir=str(task_dir),
            stdout_path=str(task_dir / "stdout.log"),
            stderr_path=str(task_dir / "stderr.log"),
            kill_signal=kill_signal,
            ports=alloc_ports or {},
        )

    return make


def _container_ids() -> set[str]:
    """Every container's id, in one listing (containers.list() inspects each one, and fails
    when another test removes one meanwhile)."""
    return {str(c["Id"]) for c in CLIENT.api.containers(all=True)}


def _container(handle: TaskHandle) -> Any:
    return CLIENT.containers.get(handle.state["container_id"])


async def test_fingerprint_reports_the_engine_version() -> None:
    info = DockerDriver().fingerprint()
    assert info.detected and info.healthy
    assert info.attributes["version"] == CLIENT.version()["Version"]


def test_fingerprint_without_an_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    info = DockerDriver().fingerprint()
    assert not info.detected and not info.healthy
    assert "Docker Engine" in info.description


@pytest.mark.parametrize("code", [0, 3])
async def test_exit_code(ctx_for: Any, code: int) -> None:
    driver = DockerDriver()
    handle = await driver.start(ctx_for(f"exit {code}"))
    result = await asyncio.wait_for(driver.wait(handle), 20)
    assert result.exit_code == code
    assert result.successful == (code == 0)
    assert not result.oom_killed and result.signal is None
    await driver.destroy(handle)


async def test_exit_future_is_the_containers_own(ctx_for: Any) -> None:
    driver = DockerDriver()
    handle = await driver.start(ctx_for("exit 4"))
    future = driver.exit_future(handle)
    assert not isinstance(future, asyncio.Task)  # the driver's own: callers never cancel it
    assert driver.exit_future(handle) is future
    async with asyncio.timeout(20):
        assert (await asyncio.shield(future)).exit_code == 4
    assert (await driver.wait(handle)).exit_code == 4
    await driver.destroy(handle)


async def test_env_labels_limits_and_name(ctx_for: Any, alloc_id: str, node_id: str) -> None:
    driver = DockerDriver()
    ctx = ctx_for(
        "env",
        memory=32,
        memory_max=64,
        cpu_max=500,
        env={"EXTRA": "yes", "PODIUM_TASK_NAME": "overridden"},
        labels={"a": "b"},
    )
    handle = await driver.start(ctx)
    assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
    out = read(ctx.stdout_path)
    assert f"PODIUM_ALLOC_ID={alloc_id}" in out
    assert "EXTRA=yes" in out
    assert "PODIUM_TASK_NAME=overridden" in out  # config env wins over the task env
    assert "PODIUM_TASK_DIR=/local" in out
    assert "/host/only" not in out  # PATH describes the host: left to the image
    c = _container(handle)
    assert c.name == container_name(ctx.task_name, alloc_id) == f"podium-{ctx.task_name}-{alloc_id}"
    assert c.labels == {
        "a": "b",
        "podium.alloc_id": alloc_id,
        "podium.job_id": "job1",
        "podium.group": "web",
        "podium.task": ctx.task_name,
        "podium.node_id": node_id,
    }
    host = c.attrs["HostConfig"]
    parent = handle.state["oom_parent"]
    if parent is not None:  # cgroup v1 + cgroupfs: the limit is held by Podium's parent cgroup
        assert host["CgroupParent"] == f"/podium-docker/{parent}"
        limits = Path(driver._oom.memory_dir(parent) or "")
        assert read(str(limits / "memory.limit_in_bytes")).strip() == str(64 * 1024 * 1024)
        assert host["Memory"] == host["MemorySwap"] == child_limit(64 * 1024 * 1024)
    else:
        assert host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024
    assert host["MemoryReservation"] == 32 * 1024 * 1024  # the reservation: a soft limit
    assert host["CpuShares"] == 100
    assert host["NanoCpus"] == nano_cpus(500) == 500 * 10**9 // core_mhz()
    await driver.destroy(handle)


async def test_no_hard_limit_unless_the_job_names_one(ctx_for: Any) -> None:
    """A task's ``memory`` is what is reserved for it, not a cap: without ``memory_max`` the
    container gets Docker's soft reservation only (no OOM parent, no Memory, no CPU quota)."""
    driver = DockerDriver()
    handle = await driver.start(ctx_for("true", memory=48))
    assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
    host = _container(handle).attrs["HostConfig"]
    assert handle.state["oom_parent"] is None
    assert host["Memory"] == 0 and host["NanoCpus"] == 0 and not host["CgroupParent"]
    assert host["MemoryReservation"] == 48 * 1024 * 1024
    await driver.destroy(handle)


async def test_logs_go_to_the_task_files(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for("echo out1; echo err1 >&2; printf 'no newline'; echo out2; echo err2 >&2")
    handle = await driver.start(ctx)
    assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
    assert read(ctx.stdout_path) == "out1\nno newlineout2\n"
    assert read(ctx.stderr_path) == "err1\nerr2\n"
    await driver.destroy(handle)


async def test_logs_stream_while_running(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for(LOOP)
    handle = await driver.start(ctx)
    await until(has_text(ctx.stdout_path, "ready"), timeout=30)
    await driver.stop(handle, "SIGTERM", 5)
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert result.exit_code == 0
    assert "got TERM" in read(ctx.stdout_path)
    await driver.destroy(handle)


async def test_stop_after_kill_timeout_is_sigkill(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for(IGNORE)
    handle = await driver.start(ctx)
    await until(has_text(ctx.stdout_path, "ready"), timeout=30)
    t0 = time.monotonic()
    await driver.stop(handle, "SIGTERM", 1.0)
    took = time.monotonic() - t0
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert result.exit_code == 137 and result.signal == 9
    assert 0.9 <= took < 8
    await driver.stop(handle, "SIGTERM", 1.0)  # idempotent
    await driver.destroy(handle)
    await driver.destroy(handle)


async def test_stop_honours_kill_signal(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for("trap 'echo got USR1; exit 7' USR1; echo ready; while true; do sleep 0.1; done")
    handle = await driver.start(ctx)
    await until(has_text(ctx.stdout_path, "ready"), timeout=30)
    await driver.stop(handle, "SIGUSR1", 5)
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert result.exit_code == 7
    assert "got USR1" in read(ctx.stdout_path)
    await driver.destroy(handle)


@pytest.mark.parametrize(
    ("image", "pull"),
    [
        ("podium-test/not-here:1", "never"),
        ("127.0.0.1:9/podium-test/not-pullable:1", "if_not_present"),
    ],
)
async def test_missing_image_fails_at_once(ctx_for: Any, image: str, pull: str) -> None:
    driver = DockerDriver()
    t0 = time.monotonic()
    with pytest.raises(DriverError) as err:
        await driver.start(ctx_for("true", image=image, image_pull=pull))
    assert time.monotonic() - t0 < 15
    assert not err.value.recoverable
    assert image in str(err.value)


async def test_bad_command_is_a_non_recoverable_start_error(ctx_for: Any) -> None:
    driver = DockerDriver()
    with pytest.raises(DriverError) as err:
        await driver.start(ctx_for(image=IMAGE, command="/no/such/binary"))
    assert not err.value.recoverable
    assert "/no/such/binary" in str(err.value)


async def test_privileged_is_refused_unless_allowed(ctx_for: Any) -> None:
    with pytest.raises(DriverError, match="privileged containers are not allowed on this node"):
        await DockerDriver().start(ctx_for("true", privileged=True))
    driver = DockerDriver(allow_privileged=True)
    ctx = ctx_for("true", privileged=True)
    assert isinstance(ctx.config, DockerConfig)
    assert driver._create_args(ctx, ctx.config)["privileged"] is True
    try:
        handle = await driver.start(ctx)
    except DriverError as exc:  # an engine that itself runs unprivileged cannot grant it
        assert "not allowed on this node" not in str(exc)
        assert "caps" in str(exc) or "permitted" in str(exc)
        return
    assert _container(handle).attrs["HostConfig"]["Privileged"] is True
    assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
    await driver.destroy(handle)


OOM_SCRIPT = "x=a; while true; do x=$x$x; done"


async def test_memory_limit_oom_kill_is_reported_every_time(ctx_for: Any) -> None:
    """Six containers OOM-killed at once are all reported as such, and a container killed
    from outside with SIGKILL is not.

    Docker 20.10 on cgroup v1 loses ``State.OOMKilled`` for a good share of parallel OOM
    kills (5-8 of 24 here) and sometimes the ``oom`` event too; the driver's own parent
    cgroup and eventfd (``docker_oom``) must not.  Where that is unavailable (cgroup v2,
    the systemd cgroup driver) the engine's flag and events are all there is, so only one
    container is checked.
    """
    driver = DockerDriver()
    first = await driver.start(ctx_for(OOM_SCRIPT, memory=8, memory_max=8))
    count = 6 if driver._oom.available else 1
    handles = [
        first,
        *await asyncio.gather(
            *(driver.start(ctx_for(OOM_SCRIPT, memory=8, memory_max=8)) for _ in range(count - 1))
        ),
    ]
    control = await driver.start(ctx_for(LOOP, memory=8, memory_max=8))
    results = await asyncio.wait_for(asyncio.gather(*(driver.wait(h) for h in handles)), 60)
    assert all(r.exit_code == 137 and r.signal == 9 for r in results), results
    assert [r.oom_killed for r in results] == [True] * count, results
    assert not any(r.successful for r in results)

    await asyncio.to_thread(CLIENT.api.kill, control.state["container_id"], "SIGKILL")
    killed = await asyncio.wait_for(driver.wait(control), 20)
    assert killed.exit_code == 137 and not killed.oom_killed
    for h in [*handles, control]:
        await driver.destroy(h)
        parent = h.state["oom_parent"]
        assert parent is None or not Path(driver._oom.memory_dir(parent) or "").exists()


async def test_oom_while_the_agent_was_down(ctx_for: Any) -> None:
    """A container OOM-killed while no agent watched it is still reported (from the
    parent cgroup's failure counters) after ``recover``; a plain exit is not."""
    driver = DockerDriver()
    oom = await driver.start(ctx_for("sleep 1; " + OOM_SCRIPT, memory=8, memory_max=8))
    if oom.state["oom_parent"] is None:
        await driver.destroy(oom)
        pytest.skip(f"no OOM parent cgroups here: {driver._oom.disabled_reason}")
    plain = await driver.start(ctx_for("sleep 1; exit 3", memory=8, memory_max=8))
    driver._oom.close()  # the agent dies: its eventfds go with it
    for h in (oom, plain):
        await asyncio.to_thread(CLIENT.api.wait, h.state["container_id"])

    fresh = DockerDriver()
    restored = [TaskHandle.from_dict(h.to_dict()) for h in (oom, plain)]
    assert [await fresh.recover(h) for h in restored] == [False, False]
    oomed, exited = [await asyncio.wait_for(fresh.wait(h), 10) for h in restored]
    assert oomed.oom_killed and oomed.exit_code == 137, oomed
    # the engine often keeps its flag, which would hide a broken fallback: check it alone
    assert fresh._oom.limit_hit(oom.state["oom_parent"])
    assert not fresh._oom.limit_hit(plain.state["oom_parent"])
    assert not exited.oom_killed and exited.exit_code == 3
    for h in restored:
        await fresh.destroy(h)


async def test_ports_volumes_mounts(ctx_for: Any, tmp_path: Path) -> None:
    driver = DockerDriver()
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "f").write_text("from host\n")
    ctx = ctx_for(
        "cat /data/f; echo local > /local/l.txt; echo tmp > /t/x && cat /t/x; "
        "echo hi > /data/x 2>/dev/null || echo read-only",
        alloc_ports={"http": AllocatedPort(value=23456, host_ip="127.0.0.1")},
        volumes=[f"{host_dir}:/data:ro"],
        mounts=[{"type": "tmpfs", "target": "/t"}],
        ports={"http": 8080},
    )
    handle = await driver.start(ctx)
    assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
    assert read(ctx.stdout_path) == "from host\ntmp\nread-only\n"
    assert (Path(ctx.task_dir) / "l.txt").read_text() == "local\n"
    bindings = _container(handle).attrs["HostConfig"]["PortBindings"]
    assert bindings["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "23456"}]
    await driver.destroy(handle)


async def test_unknown_port_label_is_refused(ctx_for: Any) -> None:
    with pytest.raises(DriverError, match="port label 'db'"):
        await DockerDriver().start(ctx_for("true", ports={"db": 5432}))


async def test_leftover_container_with_the_name_is_replaced(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for(LOOP)
    first = await driver.start(ctx)
    second = await DockerDriver().start(ctx)  # as a new agent would, without the handle
    assert first.state["container_id"] != second.state["container_id"]
    result = await asyncio.wait_for(driver.wait(first), 10)
    assert result.error is not None or result.exit_code == 137  # removed (force) under it
    await driver.destroy(second)


async def test_reattach_from_the_handle_dict(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for("echo before; sleep 1; " + LOOP)
    handle = await driver.start(ctx)
    await until(has_text(ctx.stdout_path, "ready"), timeout=30)
    saved = handle.to_dict()
    for f in driver._containers[handle.state["container_id"]].followers:  # the agent dies
        f.close()

    fresh = DockerDriver()
    restored = TaskHandle.from_dict(saved)
    assert await fresh.recover(restored) is True
    await fresh.stop(restored, "SIGTERM", 5)
    result = await asyncio.wait_for(fresh.wait(restored), 10)
    assert result.exit_code == 0
    out = read(ctx.stdout_path)
    assert out.count("before") == 1 and out.count("ready") == 1  # resumed, no duplicates
    assert "got TERM" in out
    await fresh.destroy(restored)


async def test_recover_exited_and_gone(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for("echo done; exit 4")
    handle = await driver.start(ctx)
    await asyncio.wait_for(driver.wait(handle), 20)

    fresh = DockerDriver()
    restored = TaskHandle.from_dict(handle.to_dict())
    assert await fresh.recover(restored) is False
    assert (await asyncio.wait_for(fresh.wait(restored), 10)).exit_code == 4
    assert read(ctx.stdout_path) == "done\n"

    await fresh.destroy(restored)
    gone = DockerDriver()
    again = TaskHandle.from_dict(handle.to_dict())
    assert await gone.recover(again) is False
    result = await asyncio.wait_for(gone.wait(again), 5)
    assert result.error is not None and "vanished" in result.error


async def test_stats(ctx_for: Any) -> None:
    driver = DockerDriver()
    handle = await driver.start(ctx_for("x=0; while true; do x=$((x+1)); done"))
    stats = await driver.stats(handle)
    assert stats.memory_rss_bytes > 0
    assert stats.cpu_percent >= 0
    await driver.stop(handle, "SIGKILL", 1)
    await driver.destroy(handle)


async def test_cleanup_orphans(ctx_for: Any, alloc_id: str, node_id: str) -> None:
    driver = DockerDriver()
    handle = await driver.start(ctx_for(LOOP))
    other = CLIENT.containers.create(
        IMAGE,
        ["/bin/sh", "-c", "sleep 60"],
        labels={LABEL_ALLOC: "not-" + alloc_id, LABEL_NODE: node_id},
    )
    elsewhere = CLIENT.containers.create(  # another agent's on the same engine
        IMAGE, ["/bin/true"], labels={LABEL_ALLOC: "x-" + alloc_id, LABEL_NODE: "other-node"}
    )
    unrelated = CLIENT.containers.create(IMAGE, ["/bin/true"])
    try:
        removed = await asyncio.to_thread(cleanup_orphans, CLIENT, [alloc_id], node_id)
        assert other.name in removed
        assert _container(handle).status == "running"
        live = _container_ids()
        assert unrelated.id in live and elsewhere.id in live and other.id not in live
        name = _container(handle).name
        removed = await asyncio.to_thread(cleanup_orphans, CLIENT, set(), node_id)
        assert name in removed
        result = await asyncio.wait_for(driver.wait(handle), 10)
        assert result.error is not None or result.exit_code == 137
    finally:
        unrelated.remove(force=True)
        elsewhere.remove(force=True)
        if other.id in _container_ids():
            other.remove(force=True)


def test_parse_timestamp() -> None:
    assert parse_timestamp(b"1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_timestamp(b"1970-01-01T00:00:02Z") == 2_000_000_000
    assert parse_timestamp(b"2024-01-01T00:00:00.000000001Z") % 10**9 == 1
    with pytest.raises(ValueError):
        parse_timestamp(b"garbage")


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DockerConfig.model_validate({"image": IMAGE, "bogus": 1})
    with pytest.raises(ValueError):
        DockerConfig.model_validate({"image": IMAGE, "volumes": ["nodest"]})
    with pytest.raises(ValueError):
        DockerConfig.model_validate({"image": IMAGE, "ports": {"http": 0}})
    cfg = DockerConfig.model_validate({"image": IMAGE, "entrypoint": "/bin/sh"})
    assert cfg.image_pull == "if_not_present"


async def test_oom_fallback_reads_the_engines_event(ctx_for: Any) -> None:
    """Without OOM parents (cgroup v2, the systemd driver) the engine's ``oom`` event backs
    up its flag; it is found for an OOM-killed container and not for a killed one."""
    driver = DockerDriver()
    driver._oom.disable("as on an engine without cgroup v1")
    oom = await driver.start(ctx_for(OOM_SCRIPT, memory=8, memory_max=8))
    killed = await driver.start(ctx_for(LOOP, memory=8, memory_max=8))
    assert oom.state["oom_parent"] is None
    assert (await asyncio.wait_for(driver.wait(oom), 30)).oom_killed
    await asyncio.to_thread(CLIENT.api.kill, killed.state["container_id"], "SIGKILL")
    assert not (await asyncio.wait_for(driver.wait(killed), 20)).oom_killed
    watches = [driver._containers[h.state["container_id"]] for h in (oom, killed)]
    assert [await asyncio.to_thread(driver._oom_event, w) for w in watches] == [True, False]
    for h in (oom, killed):
        await driver.destroy(h)


# --------------------------------------------------------------------------- networks
async def test_containers_reach_each_other_by_alias_on_project_networks(
    ctx_for: Any, alloc_id: str, node_id: str
) -> None:
    """Two containers of one project on one node: the backend reaches ``db`` by name.

    The client joins two networks (the first at create time, the second by connect);
    the server joins only the second, under two aliases.  Both networks are created
    (labelled as Podium's, with the project) and removed with the last container.
    """
    project = f"proj{abs(hash(alloc_id)) % 10**8}"
    front, back = f"{project}_front", f"{project}_back"
    driver = DockerDriver()
    server = ctx_for(
        "mkdir -p /tmp/w && echo hello-from-db > /tmp/w/index.html && "
        "exec httpd -f -p 3306 -h /tmp/w",
        networks=[{"name": back, "aliases": ["db", "database"]}],
        labels={"podium.compose.project": project},
    )
    client = ctx_for(
        # (busybox-static's wget crashes with -T, so no timeout option)
        "nslookup database; for i in $(seq 100); do "
        "wget -q -O- http://db:3306/ && exit 0; sleep 0.1; done; exit 1",
        networks=[{"name": front, "aliases": ["backend"]}, {"name": back}],
        labels={"podium.compose.project": project},
    )
    try:
        db = await driver.start(server)
        backend = await driver.start(client)
        result = await asyncio.wait_for(driver.wait(backend), 30)
        out = read(client.stdout_path)
        assert result.exit_code == 0, (out, read(client.stderr_path))
        assert "hello-from-db" in out
        assert "Address" in out  # nslookup answered for the second alias
        for name in (front, back):
            net = CLIENT.api.inspect_network(name)
            assert net["Driver"] == "bridge"
            assert net["Labels"] == {
                LABEL_MANAGED: "true",
                LABEL_PROJECT: project,
                LABEL_NODE: node_id,
            }
        attached = _container(backend).attrs["NetworkSettings"]["Networks"]
        assert set(attached) == {front, back}
        assert "backend" in attached[front]["Aliases"]

        await driver.destroy(backend)  # db still uses the back network
        assert [n["Name"] for n in CLIENT.api.networks(names=[front]) if n["Name"] == front] == []
        assert CLIENT.api.inspect_network(back)["Name"] == back
        await driver.stop(db, "SIGKILL", 1)
        await driver.destroy(db)
        assert [n["Name"] for n in CLIENT.api.networks(names=[back]) if n["Name"] == back] == []
    finally:
        for name in (front, back):
            for n in CLIENT.api.networks(names=[name]):
                if n["Name"] == name:
                    for c in CLIENT.api.containers(all=True, filters={"network": n["Id"]}):
                        with contextlib.suppress(Exception):
                            CLIENT.api.remove_container(c["Id"], force=True)
                    with contextlib.suppress(Exception):
                        CLIENT.api.remove_network(n["Id"])


async def test_networks_of_others_are_kept_and_orphans_removed(
    ctx_for: Any, alloc_id: str, node_id: str
) -> None:
    own = CLIENT.networks.create(f"op{abs(hash(alloc_id)) % 10**8}")  # an operator's network
    stale = CLIENT.networks.create(
        f"stale{abs(hash(alloc_id)) % 10**8}", labels={LABEL_MANAGED: "true", LABEL_NODE: node_id}
    )
    foreign = CLIENT.networks.create(  # another node's (agents sharing an engine)
        f"foreign{abs(hash(alloc_id)) % 10**8}",
        labels={LABEL_MANAGED: "true", LABEL_NODE: "other-node"},
    )
    driver = DockerDriver()
    try:
        handle = await driver.start(ctx_for("true", networks=[{"name": own.name}]))
        assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
        await driver.destroy(handle)
        own.reload()  # not Podium's: stays
        removed = await asyncio.to_thread(cleanup_orphans, CLIENT, [alloc_id], node_id)
        assert f"network {stale.name}" in removed
        assert f"network {own.name}" not in removed
        assert f"network {foreign.name}" not in removed
    finally:
        own.remove()
        foreign.remove()
        if stale.name in {n.name for n in CLIENT.networks.list(names=[stale.name])}:
            stale.remove()


def test_network_config_validation() -> None:
    with pytest.raises(ValueError, match="network_mode 'host'"):
        DockerConfig.model_validate(
            {"image": IMAGE, "network_mode": "host", "networks": [{"name": "a"}]}
        )
    with pytest.raises(ValueError, match="listed twice"):
        DockerConfig.model_validate({"image": IMAGE, "networks": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValueError, match="network name"):
        DockerConfig.model_validate({"image": IMAGE, "networks": [{"name": "-bad"}]})


# --------------------------------------------------------------------------- health
async def test_healthcheck_starting_healthy_unhealthy(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for(
        "mkdir -p /tmp; sleep 1; touch /tmp/ok; sleep 1.5; rm /tmp/ok; " + LOOP,
        healthcheck={
            "test": "test -f /tmp/ok && echo fine || { echo missing; exit 1; }",
            "interval": "200ms",
            "timeout": "2s",
            "retries": 1,
            "start_period": "1s",
        },
    )
    handle = await driver.start(ctx)
    check = _container(handle).attrs["Config"]["Healthcheck"]
    assert check == {
        "Test": ["CMD-SHELL", "test -f /tmp/ok && echo fine || { echo missing; exit 1; }"],
        "Interval": 200_000_000,
        "Timeout": 2_000_000_000,
        "StartPeriod": 1_000_000_000,
        "Retries": 1,
    }
    first = await driver.health(handle)
    assert first is not None and first.healthy is None  # starting
    seen: list[Any] = []

    async def verdict(want: bool) -> None:
        async def poll() -> bool:
            h = await driver.health(handle)
            seen.append(h)
            return h is not None and h.healthy is want

        deadline = time.monotonic() + 10
        while not await poll():
            assert time.monotonic() < deadline, seen[-3:]
            await asyncio.sleep(0.1)

    await verdict(True)
    assert seen[-1].output == "fine"
    await verdict(False)
    assert seen[-1].output == "missing", seen[-1]
    await driver.stop(handle, "SIGTERM", 2)
    await driver.destroy(handle)


async def test_no_healthcheck_means_no_verdict(ctx_for: Any) -> None:
    driver = DockerDriver()
    plain = await driver.start(ctx_for(LOOP))
    disabled = await driver.start(ctx_for(LOOP, healthcheck={"test": ["NONE"]}))
    assert await driver.health(plain) is None
    assert await driver.health(disabled) is None
    for h in (plain, disabled):
        await driver.stop(h, "SIGKILL", 1)
        await driver.destroy(h)
    assert await driver.health(plain) is None  # gone


def test_container_health_from_state() -> None:
    assert container_health({}) is None
    assert container_health({"Health": {"Status": "none"}}) is None
    log = [{"ExitCode": 1, "Output": ""}]
    unhealthy = container_health({"Health": {"Status": "unhealthy", "Log": log}})
    assert unhealthy is not None and unhealthy.healthy is False
    assert unhealthy.output == "exit code 1"
    log = [{"ExitCode": 0, "Output": "ok\n"}, {"ExitCode": 1, "Output": "down\n"}]
    healthy = container_health({"Health": {"Status": "healthy", "Log": log}})
    assert healthy is not None and healthy.healthy is True
    assert healthy.output == "ok"  # the newest probe that agrees with the verdict
    starting = container_health({"Health": {"Status": "starting", "Log": log}})
    assert starting is not None and starting.healthy is None and starting.output == "down"


def test_healthcheck_config_forms() -> None:
    def test_of(value: object) -> list[str]:
        cfg = DockerConfig.model_validate({"image": IMAGE, "healthcheck": {"test": value}})
        assert cfg.healthcheck is not None
        return cfg.healthcheck.test

    assert test_of("curl -f x") == ["CMD-SHELL", "curl -f x"]
    assert test_of("CMD-SHELL curl -f x") == ["CMD-SHELL", "curl -f x"]
    assert test_of(["CMD", "curl", "-f", "x"]) == ["CMD", "curl", "-f", "x"]
    assert test_of("NONE") == ["NONE"]
    assert test_of([]) == []  # the image's own
    for bad in (["curl"], ["CMD"], ["NONE", "x"], ""):
        with pytest.raises(ValueError):
            test_of(bad)
    with pytest.raises(ValueError, match="1ms"):
        DockerConfig.model_validate(
            {"image": IMAGE, "healthcheck": {"test": "true", "interval": "10us"}}
        )


# -- what Compose files need: host addresses and protocols, created binds, mount options


async def test_ports_bind_their_host_address_and_protocol(ctx_for: Any) -> None:
    """A port's ``host_ip`` and ``protocol`` reach the Engine's PortBindings: loopback only,
    every interface (``""``), or the node's address; UDP only, TCP only, or both (a bare
    number, as before)."""
    driver = DockerDriver()
    ctx = ctx_for(
        "true",
        alloc_ports={
            "dns": AllocatedPort(value=23457, host_ip="10.9.9.9"),
            "web": AllocatedPort(value=23458, host_ip="10.9.9.9"),
            "any": AllocatedPort(value=23459, host_ip="127.0.0.1"),
        },
        ports={
            "dns": {"target": 53, "protocol": "udp", "host_ip": "127.0.0.1"},
            "web": {"target": 80, "protocol": "tcp", "host_ip": ""},
            "any": 8080,
        },
    )
    handle = await driver.start(ctx)
    try:
        await asyncio.wait_for(driver.wait(handle), 20)
        bindings = _container(handle).attrs["HostConfig"]["PortBindings"]
        assert bindings == {
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "23457"}],
            "80/tcp": [{"HostIp": "", "HostPort": "23458"}],
            "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "23459"}],
            "8080/udp": [{"HostIp": "127.0.0.1", "HostPort": "23459"}],
        }
    finally:
        await driver.destroy(handle)


async def test_two_labels_may_publish_one_container_port(ctx_for: Any) -> None:
    driver = DockerDriver()
    ctx = ctx_for(
        "true",
        alloc_ports={
            "a": AllocatedPort(value=23461, host_ip="127.0.0.1"),
            "b": AllocatedPort(value=23462, host_ip="127.0.0.1"),
        },
        ports={
            "a": {"target": 80, "protocol": "tcp", "host_ip": "127.0.0.1"},
            "b": {"target": 80, "protocol": "tcp", "host_ip": ""},
        },
    )
    handle = await driver.start(ctx)
    try:
        bindings = _container(handle).attrs["HostConfig"]["PortBindings"]
        assert sorted(b["HostPort"] for b in bindings["80/tcp"]) == ["23461", "23462"]
    finally:
        await driver.destroy(handle)


async def test_a_bind_creates_its_missing_source_only_when_asked(
    ctx_for: Any, tmp_path: Path
) -> None:
    driver = DockerDriver()
    missing = tmp_path / "made" / "by" / "the-driver"
    ctx = ctx_for(
        "echo hi > /data/f && echo wrote",
        mounts=[
            {"type": "bind", "source": str(missing), "target": "/data", "create_host_path": True}
        ],
    )
    handle = await driver.start(ctx)
    try:
        assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
        assert (missing / "f").read_text() == "hi\n"
    finally:
        await driver.destroy(handle)

    absent = tmp_path / "not-there"
    strict = ctx_for("true", mounts=[{"type": "bind", "source": str(absent), "target": "/d"}])
    with pytest.raises(DriverError, match="not-there"):
        await driver.start(strict)
    assert not absent.exists()


async def test_tmpfs_size_and_mode_and_volume_nocopy(ctx_for: Any, alloc_id: str) -> None:
    driver = DockerDriver()
    volume = f"podium-test-nocopy-{alloc_id}"
    ctx = ctx_for(
        "stat -c %a /t; df -k /t | tail -1; test -f /etc/passwd && echo copied || echo empty",
        mounts=[
            {"type": "tmpfs", "target": "/t", "size": 8, "mode": 0o700},
            {"type": "volume", "source": volume, "target": "/etc", "nocopy": True},
        ],
    )
    handle = await driver.start(ctx)
    try:
        assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
        mode, df, copied = read(ctx.stdout_path).splitlines()
        assert mode == "700"
        assert df.split()[1] == str(8 * 1024)  # 1K-blocks
        assert copied == "empty"  # the image's /etc/passwd was not copied in
    finally:
        await driver.destroy(handle)
        with contextlib.suppress(Exception):
            CLIENT.volumes.get(volume).remove(force=True)


def test_port_and_mount_option_validation() -> None:
    def config(**kw: Any) -> DockerConfig:
        return DockerConfig.model_validate({"image": IMAGE, **kw})

    assert config(ports={"p": {"target": 80, "host_ip": "[::1]"}}).port("p").host_ip == "::1"
    assert config(ports={"p": 80}).port("p").protocols == ("tcp", "udp")
    with pytest.raises(ValueError, match="not an IP address"):
        config(ports={"p": {"target": 80, "host_ip": "localhost"}})
    with pytest.raises(ValueError):
        config(ports={"p": {"target": 80, "protocol": "sctp"}})
    with pytest.raises(ValueError, match="nocopy applies to a volume mount, not a bind one"):
        config(mounts=[{"type": "bind", "source": "/x", "target": "/y", "nocopy": True}])
    with pytest.raises(ValueError, match="size applies to a tmpfs mount"):
        config(mounts=[{"type": "volume", "source": "v", "target": "/y", "size": 1}])
    with pytest.raises(ValueError, match="create_host_path applies to a bind mount"):
        config(mounts=[{"type": "tmpfs", "target": "/y", "create_host_path": True}])


def test_fingerprint_names_the_engine_for_compose_builds() -> None:
    """``podium compose up`` builds with its local engine and compares this id to know
    whether a node's engine is that one (and so already has the image)."""
    info = DockerDriver().fingerprint()
    assert info.attributes["engine_id"] == CLIENT.info()["ID"]


async def test_quick_containers_lose_and_repeat_no_line(ctx_for: Any) -> None:
    """A container that exits as its log follower starts still has every line delivered,
    once: the engine's follow can end before it sent them (a whole quick task's output was
    lost about one run in four), so the follower reads what is stored once more."""
    driver = DockerDriver()
    script = "for i in 1 2 3 4 5; do echo line $i; done; echo done"
    handles = await asyncio.gather(*(driver.start(ctx_for(script)) for _ in range(8)))
    for handle in handles:
        assert (await asyncio.wait_for(driver.wait(handle), 60)).exit_code == 0
        path = Path(handle.state["stdout_path"])
        assert path.read_text() == "".join(f"line {i}\n" for i in range(1, 6)) + "done\n"
        await driver.destroy(handle)


async def test_a_follow_that_keeps_breaking_still_delivers_every_line(
    ctx_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's follow stream breaks (here: every time); once the container has
    stopped the follower reads the stored lines, from its checkpoint, once."""
    real = docker_driver.new_client

    def flaky(**kwargs: Any) -> Any:
        client = real(**kwargs)
        logs = client.api.logs

        def broken(*args: Any, **kw: Any) -> Any:
            if kw.get("follow"):
                raise ConnectionError("connection reset (by the test)")
            return logs(*args, **kw)

        client.api.logs = broken
        return client

    monkeypatch.setattr(docker_driver, "new_client", flaky)
    driver = DockerDriver()
    handle = await driver.start(ctx_for("echo one; echo two >&2; echo three"))
    assert (await asyncio.wait_for(driver.wait(handle), 60)).exit_code == 0
    assert Path(handle.state["stdout_path"]).read_text() == "one\nthree\n"
    assert Path(handle.state["stderr_path"]).read_text() == "two\n"
    await driver.destroy(handle)


async def test_the_exit_waits_for_followers_made_before_it(
    ctx_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter reports the exit once the log followers have delivered, so they must
    exist when it starts: made after it, a quick container's exit found none to wait for
    and was reported with its log files still empty (3 runs in 10 under load)."""
    driver = DockerDriver()
    seen: list[int] = []
    real = driver._wait_thread

    def waiter(watch: Any) -> None:
        seen.append(len(watch.followers))
        real(watch)

    monkeypatch.setattr(driver, "_wait_thread", waiter)
    ctx = ctx_for("echo out")
    handle = await driver.start(ctx)
    assert (await asyncio.wait_for(driver.wait(handle), 60)).exit_code == 0
    assert seen == [2]
    assert read(ctx.stdout_path) == "out\n"
    await driver.destroy(handle)


# -- what a node lets containers have: host binds, cap_add (DockerPolicy)
async def test_a_host_bind_is_refused_unless_the_agent_allows_volumes(
    ctx_for: Any, tmp_path: Path
) -> None:
    before = _container_ids()
    with pytest.raises(DriverError, match="docker: host volume / is not allowed") as err:
        await DockerDriver().start(ctx_for("cat /host/etc/hostname", volumes=["/:/host:ro"]))
    assert not err.value.recoverable
    with pytest.raises(DriverError, match="docker: host volume /etc is not allowed"):
        await DockerDriver().start(
            ctx_for("true", mounts=[{"type": "bind", "source": "/etc", "target": "/x"}])
        )
    assert _container_ids() == before  # nothing was created

    driver = DockerDriver(policy=DockerPolicy(volumes=True))
    ctx = ctx_for("test -d /host/proc && echo host", volumes=["/:/host:ro"])
    handle = await driver.start(ctx)
    try:
        assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
        assert read(ctx.stdout_path) == "host\n"
    finally:
        await driver.destroy(handle)


async def test_host_binds_only_under_the_allowed_prefixes(ctx_for: Any, tmp_path: Path) -> None:
    allowed = tmp_path / "srv"
    allowed.mkdir()
    (allowed / "f").write_text("ok\n")
    driver = DockerDriver(policy=DockerPolicy(volumes=True, volume_allow=(str(allowed),)))
    with pytest.raises(DriverError, match="docker: host volume /etc is not allowed"):
        await driver.start(ctx_for("true", volumes=["/etc:/x:ro"]))
    # a symlink under the allowed prefix that points elsewhere is where it points
    (allowed / "esc").symlink_to("/etc")
    with pytest.raises(DriverError, match="docker: host volume /etc is not allowed"):
        await driver.start(ctx_for("true", volumes=[f"{allowed}/esc:/x:ro"]))
    ctx = ctx_for("cat /data/f", volumes=[f"{allowed}:/data:ro"])
    handle = await driver.start(ctx)
    try:
        assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
        assert read(ctx.stdout_path) == "ok\n"
    finally:
        await driver.destroy(handle)


async def test_binds_inside_the_allocation_need_no_permission_but_a_symlink_out_does(
    ctx_for: Any,
) -> None:
    driver = DockerDriver()  # volumes off
    ctx = ctx_for("cat /d/x", volumes=["./data:/d:ro"])
    (Path(ctx.task_dir) / "data").mkdir()
    (Path(ctx.task_dir) / "data" / "x").write_text("inside\n")
    handle = await driver.start(ctx)
    try:
        assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
        assert read(ctx.stdout_path) == "inside\n"
    finally:
        await driver.destroy(handle)
    # a task that planted a symlink to / in its own dir does not get / through it
    escape = ctx_for("true", volumes=["./root:/host:ro"])
    (Path(escape.task_dir) / "root").symlink_to("/")
    with pytest.raises(DriverError, match="docker: host volume / is not allowed"):
        await driver.start(escape)
    climb = ctx_for("true", volumes=["../../../../../../etc:/x:ro"])
    with pytest.raises(DriverError, match="docker: host volume /etc is not allowed"):
        await driver.start(climb)


async def test_cap_add_only_of_allowed_capabilities(ctx_for: Any) -> None:
    with pytest.raises(DriverError, match="docker: cap_add SYS_ADMIN is not allowed"):
        await DockerDriver().start(ctx_for("true", cap_add=["SYS_ADMIN"]))
    with pytest.raises(DriverError, match="docker: cap_add NET_ADMIN is not allowed"):
        await DockerDriver().start(ctx_for("true", cap_add=["CHOWN", "cap_net_admin"]))
    # in Docker's default set: allowed by default
    driver = DockerDriver()
    handle = await driver.start(ctx_for("true", cap_add=["CHOWN"]))
    assert (await asyncio.wait_for(driver.wait(handle), 20)).exit_code == 0
    await driver.destroy(handle)
    allowing = DockerDriver(policy=DockerPolicy(allow_caps=frozenset({"NET_ADMIN"})))
    handle = await allowing.start(ctx_for("true", cap_add=["NET_ADMIN"]))
    try:
        assert (await asyncio.wait_for(allowing.wait(handle), 20)).exit_code == 0
        assert _container(handle).attrs["HostConfig"]["CapAdd"] == ["NET_ADMIN"]
    finally:
        await allowing.destroy(handle)


def test_the_fingerprint_advertises_what_the_driver_allows() -> None:
    info = DockerDriver(
        policy=DockerPolicy(volumes=True, volume_allow=("/srv",), allow_caps=frozenset({"KILL"}))
    ).fingerprint()
    assert info.attributes["volumes.enabled"] == "true"
    assert info.attributes["volumes.allow"] == "/srv"
    assert info.attributes["allow_caps"] == "KILL"
    assert DockerDriver().fingerprint().attributes["volumes.enabled"] == "false"
