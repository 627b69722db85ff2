"""End to end: a docker job through the real CLI and `podium agent --dev`, on a real engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DevAgent, wait_until, write_job

IMAGE = "podium-test/busybox:1"


def _engine() -> tuple[Any, str | None]:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
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


def test_docker_job_runs_logs_serves_and_stops(dev_agent: DevAgent, tmp_path: Path) -> None:
    node = dev_agent.get("/v1/nodes")[0]
    info = node["drivers"].get("docker", {})
    assert info.get("healthy"), f"docker driver unhealthy: {info.get('description')}"
    path = write_job(
        tmp_path,
        f"""
job: boxes
type: service
groups:
  web:
    network:
      ports:
        http: {{}}
    tasks:
      srv:
        driver: docker
        resources: {{memory: 32, cpu: 100}}
        config:
          image: {IMAGE}
          command: /bin/sh
          args:
            - -c
            - echo "hello from $PODIUM_TASK_NAME"; echo oops >&2;
              echo served > /local/index.html; exec httpd -f -p 8080 -h /local
          ports: {{http: 8080}}
""",
    )
    dev_agent.cli("job", "run", path, check=True, timeout=60)
    alloc = dev_agent.wait_running("boxes", 1, timeout=60)[0]
    alloc_id = alloc["id"]
    containers = CLIENT.containers.list(filters={"label": f"podium.alloc_id={alloc_id}"})
    assert [c.name for c in containers] == [f"podium-srv-{alloc_id}"]

    logs = wait_until(
        lambda: (
            (r := dev_agent.cli("alloc", "logs", alloc_id[:8])).returncode == 0
            and "hello from srv" in r.stdout
            and r
        ),
        timeout=15,
        what="the container's output in alloc logs",
    )
    assert "oops" not in logs.stdout
    errs = dev_agent.cli("alloc", "logs", "--stderr", alloc_id[:8], check=True)
    assert "oops" in errs.stdout

    host_port = wait_until(
        lambda: dev_agent.get(f"/v1/allocation/{alloc_id}")["ports"]["http"]["value"],
        what="the allocation's port",
    )
    body = wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{host_port}/index.html", timeout=2).text,
        timeout=15,
        what="the container's port to answer",
    )
    assert body == "served\n"

    dev_agent.cli("job", "stop", "boxes", check=True, timeout=60)
    wait_until(
        lambda: (
            not CLIENT.containers.list(all=True, filters={"label": f"podium.alloc_id={alloc_id}"})
        ),
        timeout=30,
        what="the container to be removed",
    )
    final = dev_agent.allocs("boxes")
    assert all(a["desired_status"] == "stop" for a in final)


# -- host binds and cap_add: refused at placement unless the agent allows them
class ServerAgent(DevAgent):
    """``podium agent --server`` (not --dev): an agent with the production defaults."""

    def start(self) -> None:
        import subprocess

        from tests.e2e.conftest import PODIUM

        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                *PODIUM,
                "agent",
                "--server",
                "--data-dir",
                str(self.data_dir),
                "--http-addr",
                self.addr.removeprefix("http://"),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_until(self._ready, timeout=30, what="the agent to register its node")


HOST_JOB = f"""
job: hostbind
type: batch
groups:
  g:
    tasks:
      t:
        driver: docker
        resources: {{memory: 32, cpu: 100}}
        config:
          image: {IMAGE}
          command: /bin/sh
          args: ["-c", "test -d /host/proc && echo saw the host; sleep 30"]
          volumes: ["/:/host:ro"]
"""
CAP_JOB = f"""
job: capadd
type: batch
groups:
  g:
    tasks:
      t:
        driver: docker
        resources: {{memory: 32, cpu: 100}}
        config:
          image: {IMAGE}
          command: /bin/sh
          args: ["-c", "echo with caps; sleep 30"]
          cap_add: [SYS_ADMIN]
"""


def _agent(tmp_path: Path, name: str, *flags: str) -> ServerAgent:
    from tests.e2e.conftest import free_port

    agent = ServerAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / name,
        log_path=tmp_path / f"{name}.log",
        extra_args=list(flags),
    )
    agent.start()
    return agent


def test_host_volume_and_cap_add_are_placement_reasons(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "default")
    try:
        node = agent.get("/v1/nodes")[0]
        assert node["drivers"]["docker"]["attributes"]["volumes.enabled"] == "false"
        for text, job, reason in (
            (HOST_JOB, "hostbind", "docker: host volume / is not allowed"),
            (CAP_JOB, "capadd", "docker: cap_add SYS_ADMIN is not allowed"),
        ):
            run = agent.cli("job", "run", write_job(tmp_path, text, f"{job}.yaml"), timeout=60)
            assert run.returncode != 0, run.stdout
            assert reason in run.stdout + run.stderr
            status = agent.cli("job", "status", job, check=True).stdout
            assert reason in status
            assert not agent.allocs(job)
    finally:
        agent.cleanup()

    allowing = _agent(
        tmp_path, "allowing", "--docker-volumes", "--docker-allow-caps", "SYS_ADMIN,CHOWN"
    )
    try:
        for text, job, line in (
            (HOST_JOB, "hostbind", "saw the host"),
            (CAP_JOB, "capadd", "with caps"),
        ):
            allowing.cli("job", "run", write_job(tmp_path, text, f"{job}.yaml"), check=True)
            (alloc,) = allowing.wait_running(job, 1, timeout=60)
            wait_until(
                lambda a=alloc, w=line: w in allowing.cli("alloc", "logs", a["id"]).stdout,
                timeout=20,
                what=f"{job}'s output",
            )
    finally:
        allowing.cleanup()
