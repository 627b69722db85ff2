"""``podium compose up`` builds ``build:`` services with the real local Docker Engine.

The server is the fake one (what ``up`` registers is read from its requests);
the builds are real, from ``FROM podium-test/busybox:1`` (no registry needed).
The one push that succeeds uses a fake engine: no registry is reachable here.
Skipped, with the reason, where no engine answers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.cli import compose_build
from tests.drivers.test_docker import CLIENT, IMAGE, SKIP

from .conftest import Invoke
from .fakes import EVAL_ID, FakeServer, node_info

pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

REGISTERED = {"eval_id": EVAL_ID, "job_modify_index": 7, "version": 0, "index": 7, "changed": True}

DOCKERFILE = f"""\
FROM {IMAGE} AS base
ARG GREETING=unset
RUN echo "$GREETING" > /greeting
FROM base AS final
RUN echo final > /stage
"""


@pytest.fixture
def project() -> Iterator[str]:
    """A project name of this test's own; its images are removed afterwards."""
    name = f"bt{uuid.uuid4().hex[:8]}"
    yield name
    for image in CLIENT.images.list(filters={"label": f"podium.compose.project={name}"}):
        for tag in image.tags or [image.id]:
            CLIENT.images.remove(tag, force=True)


def write_project(tmp_path: Path, name: str, dockerfile: str = DOCKERFILE) -> Path:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Dockerfile").write_text(dockerfile)
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        f"name: {name}\n"
        "services:\n"
        "  web:\n"
        "    build:\n"
        "      context: ./web\n"
        "      target: base\n"
        "      args: {GREETING: hello-from-args}\n"
        "    command: [sleep, '3600']\n"
    )
    return compose


def this_engine(fake: FakeServer, engine_id: str | None = None) -> None:
    attrs = {"driver.docker": "1", "driver.docker.engine_id": engine_id or CLIENT.info()["ID"]}
    fake.on("GET", "/v1/nodes", [node_info(attributes=attrs)])


def run_in(image: str, *command: str) -> str:
    out = CLIENT.containers.run(image, list(command), remove=True)
    return bytes(out).decode()


def sent_web(fake: FakeServer) -> dict[str, Any]:
    job = json.loads(fake.calls("POST", "/v1/jobs")[0].content)["job"]
    return dict(job["groups"]["web"]["tasks"]["web"]["config"])


def test_up_build_builds_tags_and_runs_the_built_image(
    cli: Invoke, fake: FakeServer, tmp_path: Path, project: str
) -> None:
    compose = write_project(tmp_path, project)
    this_engine(fake)
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("compose", "up", "-f", str(compose), "--build", "--detach")
    assert result.exit_code == 0, result.output
    image = CLIENT.images.get(f"{project}-web")
    # the build's args and target were honoured: /greeting from ARG, no /stage
    assert run_in(image.id, "cat", "/greeting") == "hello-from-args\n"
    assert run_in(image.id, "sh", "-c", "test -e /stage && echo yes || echo no") == "no\n"
    assert image.labels["podium.compose.service"] == "web"
    config = sent_web(fake)
    assert config["image"] == f"{project}-web"
    assert config["image_pull"] == "never"
    assert config["labels"]["podium.compose.image"] == image.id
    assert f"Building web ({project}-web)" in result.stderr
    assert "Step 1/" in result.stderr  # the builder's own output


def test_up_builds_a_missing_image_and_reuses_a_built_one(
    cli: Invoke, fake: FakeServer, tmp_path: Path, project: str
) -> None:
    """As ``docker compose up``: a missing image is built, an existing one is used."""
    compose = write_project(tmp_path, project)
    this_engine(fake)
    fake.on("POST", "/v1/jobs", REGISTERED)
    first = cli("compose", "up", "-f", str(compose), "-d")
    assert first.exit_code == 0, first.output
    assert "(not built yet)" in first.stderr
    built = CLIENT.images.get(f"{project}-web").id

    (tmp_path / "web" / "Dockerfile").write_text(DOCKERFILE.replace("$GREETING", "changed"))
    again = cli("compose", "up", "-f", str(compose), "-d")
    assert again.exit_code == 0, again.output
    assert "Building" not in again.stderr
    assert CLIENT.images.get(f"{project}-web").id == built

    rebuilt = cli("compose", "up", "-f", str(compose), "-d", "--build")
    assert rebuilt.exit_code == 0, rebuilt.output
    new_id = CLIENT.images.get(f"{project}-web").id
    assert new_id != built
    # a new image id is a new label: the task changes, so its containers are replaced
    assert sent_web(fake)["labels"]["podium.compose.image"] == built
    last = json.loads(fake.calls("POST", "/v1/jobs")[-1].content)["job"]
    assert (
        last["groups"]["web"]["tasks"]["web"]["config"]["labels"]["podium.compose.image"] == new_id
    )


def test_a_failed_build_shows_the_builders_error_and_registers_nothing(
    cli: Invoke, fake: FakeServer, tmp_path: Path, project: str
) -> None:
    compose = write_project(
        tmp_path, project, f"FROM {IMAGE} AS base\nRUN echo about to fail && exit 3\n"
    )
    this_engine(fake)
    result = cli("compose", "up", "-f", str(compose), "--build")
    assert result.exit_code == 1
    assert "about to fail" in result.stderr  # the build's own output
    assert "service 'web' failed to build: The command '/bin/sh -c echo about to fail" in (
        result.stderr
    )
    assert "returned a non-zero code: 3; nothing was registered" in result.stderr
    assert not fake.calls("POST", "/v1/jobs")


def test_a_cluster_on_other_engines_needs_a_registry(
    cli: Invoke, fake: FakeServer, tmp_path: Path, project: str
) -> None:
    compose = write_project(tmp_path, project)
    this_engine(fake, engine_id="ANOTHER:ENGINE")
    result = cli("compose", "up", "-f", str(compose))
    assert result.exit_code == 1
    assert "web is built here (build:), but the cluster runs containers on other Docker" in (
        result.stderr
    )
    assert f"--push REGISTRY (say --push registry.example.com:5000/{project})" in result.stderr
    assert "--no-build" in result.stderr
    assert not fake.calls("POST", "/v1/jobs")
    assert not CLIENT.images.list(name=f"{project}-web")  # nothing built either


def test_a_push_that_fails_says_so_and_registers_nothing(
    cli: Invoke, fake: FakeServer, tmp_path: Path, project: str
) -> None:
    compose = write_project(tmp_path, project)
    result = cli("compose", "up", "-f", str(compose), "--push", "127.0.0.1:9/podium-test")
    assert result.exit_code == 1
    assert f"cannot push 127.0.0.1:9/podium-test/{project}-web:latest" in result.stderr
    assert not fake.calls("POST", "/v1/jobs")


class FakeEngine:
    """Only for the push that succeeds: there is no registry to push to here."""

    def __init__(self) -> None:
        self.api = self
        self.images = self
        self.tags: list[tuple[str, str, str]] = []

    def ping(self) -> bool:
        return True

    def info(self) -> dict[str, str]:
        return {"ID": "LOCAL"}

    def get(self, name: str) -> Any:
        return type("Image", (), {"id": "sha256:" + "1" * 64})()

    def tag(self, image: str, repo: str, tag: str) -> None:
        self.tags.append((image, repo, tag))

    def push(self, repo: str, tag: str, stream: bool, decode: bool) -> Iterator[dict[str, Any]]:
        yield {"status": "Pushed", "id": "abc"}
        yield {"aux": {"Tag": tag, "Digest": "sha256:" + "2" * 64}}


def test_push_tags_under_the_registry_and_runs_the_pushed_digest(
    cli: Invoke, fake: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    monkeypatch.setattr(compose_build, "make_engine", lambda: engine)
    compose = write_project(tmp_path, "shop")
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("compose", "up", "-f", str(compose), "-d", "--push", "reg.example.com:5000/team")
    assert result.exit_code == 0, result.output
    assert engine.tags == [("shop-web", "reg.example.com:5000/team/shop-web", "latest")]
    config = sent_web(fake)
    assert config["image"] == "reg.example.com:5000/team/shop-web@sha256:" + "2" * 64
    assert config["image_pull"] == "if_not_present"
    assert not fake.calls("GET", "/v1/nodes")  # pushed: any node can pull it


@pytest.mark.parametrize(
    ("image", "registry", "expected"),
    [
        ("shop-web", "reg:5000", "reg:5000/shop-web"),
        ("me/web:2", "reg.io/team/", "reg.io/team/me/web:2"),
        ("old.registry.io/me/web:2", "reg.io", "reg.io/me/web:2"),
        ("localhost/web", "reg.io", "reg.io/web"),
    ],
)
def test_pushed_name(image: str, registry: str, expected: str) -> None:
    assert compose_build.pushed_name(image, registry) == expected
