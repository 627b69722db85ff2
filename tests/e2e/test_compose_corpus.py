"""End to end: a sample of the Compose corpus (tests/spec/compose_corpus/busybox-*),
as written, through ``podium compose`` onto a real dev agent and the real Docker Engine.

Each project is copied to a temporary directory first: its bind mounts are
relative to the file, and the driver creates them there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from podium.drivers.docker_oom import child_limit
from tests.e2e.conftest import DevAgent, wait_until
from tests.e2e.test_docker import CLIENT, SKIP

pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

CORPUS = Path(__file__).parents[1] / "spec" / "compose_corpus"
MIB = 1024 * 1024


def copy_project(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(CORPUS / name, target)
    return target / "compose.yaml"


def containers(project: str, service: str) -> list[object]:
    labels = [f"podium.compose.project={project}", f"podium.compose.service={service}"]
    return list(CLIENT.containers.list(filters={"label": labels}))


def test_a_web_server_on_loopback_with_workers_that_wait_for_its_health(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    compose = copy_project("busybox-web", tmp_path)
    dev_agent.cli("compose", "up", "-f", str(compose), check=True, timeout=180)
    running = dev_agent.wait_running("bbweb", 3, timeout=90)
    web = next(a for a in running if a["group"] == "web")

    # the short-syntax bind's missing host directory was created, as Compose does
    assert (compose.parent / "www" / "index.html").read_text() == "hello from web\n"
    # published on loopback only, TCP only; the tmpfs has its size
    (container,) = containers("bbweb", "web")
    host = container.attrs["HostConfig"]  # type: ignore[attr-defined]
    port = web["ports"]["p8080"]["value"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    (scratch,) = [m for m in host["Mounts"] if m["Target"] == "/scratch"]
    assert scratch["TmpfsOptions"]["SizeBytes"] == 8 * 1024 * 1024
    # the limit written (the driver's OOM parent cgroup may hold it, a little above)
    assert host["Memory"] in (32 * MIB, child_limit(32 * MIB))
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "hello from web\n"

    out = wait_until(
        lambda: (
            (o := dev_agent.cli("compose", "logs", "-p", "bbweb", "worker").stdout)
            and "worker-2 | hello from web" in o
            and o
        ),
        timeout=30,
        what="both workers to fetch the page by the service's name",
    )
    assert "worker-1 | hello from web" in out
    ps = dev_agent.cli("compose", "ps", "-p", "bbweb", check=True).stdout
    assert f"127.0.0.1:{port}->8080/tcp" in ps
    dev_agent.cli("compose", "down", "-p", "bbweb", check=True, timeout=120)


def test_a_built_service_is_built_then_run(dev_agent: DevAgent, tmp_path: Path) -> None:
    """No --build: the image is missing, so ``up`` builds it, as ``docker compose up`` does."""
    compose = copy_project("busybox-built", tmp_path)
    try:
        up = dev_agent.cli("compose", "up", "-f", str(compose), check=True, timeout=240)
        assert "Building app (bbbuilt-app)" in up.stderr
        (alloc,) = dev_agent.wait_running("bbbuilt", 1, timeout=60)
        wait_until(
            lambda: "built by podium" in dev_agent.cli("alloc", "logs", alloc["id"]).stdout,
            what="the built image's message",
        )
        image = CLIENT.images.get("bbbuilt-app")
        (container,) = containers("bbbuilt", "app")
        attrs = container.attrs  # type: ignore[attr-defined]
        assert attrs["Config"]["Labels"]["podium.compose.image"] == image.id
        assert attrs["HostConfig"]["Memory"] == 0  # no limit written: none set
        dev_agent.cli("compose", "down", "-p", "bbbuilt", check=True, timeout=120)
    finally:
        for image in CLIENT.images.list(name="bbbuilt-app"):
            CLIENT.images.remove(image.id, force=True)


def test_up_again_restarts_what_failed_and_profiles_come_from_dotenv(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    """``app`` has no ``restart:``: it fails once (no ./state/ready) and stays failed, as
    under Compose; ``up`` again, with the file unchanged, starts it again."""
    compose = copy_project("busybox-profiles", tmp_path)
    # Exits 0 or 1, depending on whether it saw app running before it exited.
    dev_agent.cli("compose", "up", "-f", str(compose), timeout=120)
    wait_until(
        lambda: [
            a
            for a in dev_agent.allocs("bbprof")
            if a["group"] == "app" and a["client_status"] == "failed"
        ],
        what="app to fail (and stay failed: no restart: means none)",
    )
    assert "tools" not in {a["group"] for a in dev_agent.allocs("bbprof")}  # not active
    wait_until(
        lambda: [a for a in dev_agent.running("bbprof") if a["group"] == "debug"],
        what="the debug service (COMPOSE_PROFILES=debug in .env)",
    )

    ready = compose.parent / "state" / "ready"  # the bind's directory, made by the driver
    ready.write_text("")
    again = dev_agent.cli("compose", "up", "-f", str(compose), check=True, timeout=120)
    assert "unchanged" in again.stdout
    running = dev_agent.wait_running("bbprof", 2, timeout=60)
    assert sorted(a["group"] for a in running) == ["app", "debug"]
    out = wait_until(
        lambda: (
            (o := dev_agent.cli("compose", "logs", "-p", "bbprof", "app").stdout)
            and "app up" in o
            and o
        ),
        what="the restarted app's output",
    )
    assert out.splitlines()[-1] == "app-1 | app up"
    dev_agent.cli("compose", "down", "-p", "bbprof", check=True, timeout=120)
