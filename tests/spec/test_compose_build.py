"""``build:`` in the conversion: the image a built service's job expects, and the
build itself, read and checked (the CLI builds it: tests/cli/test_compose_build.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.errors import SpecError
from podium.spec import ComposeProject, load_compose_project
from podium.spec.compose_build import BuildSpec


def write(tmp_path: Path, compose: str, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {"web/Dockerfile": "FROM podium-test/busybox:1\n"}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    path = tmp_path / "compose.yaml"
    path.write_text(compose)
    return path


def load(path: Path, env: dict[str, str] | None = None) -> ComposeProject:
    return load_compose_project(path, "shop", env or {})


def test_a_built_service_expects_the_image_compose_would_tag(tmp_path: Path) -> None:
    p = load(write(tmp_path, "services:\n  web: {build: ./web}\n  Api: {build: ./web}\n"))
    config = p.jobs[0].groups["web"].tasks["web"].config
    assert (config["image"], config["image_pull"]) == ("shop-web", "never")
    assert p.jobs[0].groups["Api"].tasks["Api"].config["image"] == "shop-api"  # lower case
    assert p.builds["web"] == BuildSpec(
        service="web", image="shop-web", context=str(tmp_path / "web")
    )
    assert p.warnings == []


def test_image_names_the_built_image_and_pull_policy_decides_how_nodes_get_it(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """\
services:
  web: {build: ./web, image: "registry.example.com/shop/web:2"}
  always: {build: ./web, pull_policy: build}
  pulled: {build: ./web, image: me/x, pull_policy: missing}
""",
    )
    p = load(path)
    groups = p.jobs[0].groups
    assert groups["web"].tasks["web"].config["image"] == "registry.example.com/shop/web:2"
    assert p.builds["web"].image == "registry.example.com/shop/web:2"
    assert p.builds["always"].always and not p.builds["web"].always
    assert groups["always"].tasks["always"].config["image_pull"] == "never"
    assert groups["pulled"].tasks["pulled"].config["image_pull"] == "if_not_present"


def test_the_long_form_is_read_whole(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
services:
  web:
    build:
      context: web
      dockerfile: Dockerfile.prod
      args: {VERSION: "1.2", FROM_SHELL: null, FLAG: true}
      target: runtime
      labels: [team=shop]
      network: host
      no_cache: true
      pull: false
      cache_from: [shop-web:cache]
      shm_size: 64m
      extra_hosts: ["db:10.0.0.5"]
      platforms: [linux/amd64]
      tags: ["shop-web:${TAG:-dev}"]
  list:
    build:
      context: ./web
      dockerfile: Dockerfile.prod
      args: [A=1, FROM_SHELL, UNSET]
""",
        {"web/Dockerfile.prod": "FROM podium-test/busybox:1\n"},
    )
    p = load(path, {"FROM_SHELL": "shell"})
    assert p.builds["web"] == BuildSpec(
        service="web",
        image="shop-web",
        context=str(tmp_path / "web"),
        dockerfile="Dockerfile.prod",
        args={"VERSION": "1.2", "FROM_SHELL": "shell", "FLAG": "true"},
        target="runtime",
        labels={"team": "shop"},
        network="host",
        no_cache=True,
        cache_from=["shop-web:cache"],
        shm_size=64 * 1024 * 1024,
        extra_hosts={"db": "10.0.0.5"},
        platform="linux/amd64",
        tags=["shop-web:dev"],
    )
    assert p.builds["list"].args == {"A": "1", "FROM_SHELL": "shell"}


def test_inline_dockerfile(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  w:\n    build:\n      context: .\n      dockerfile_inline: |\n"
        "        FROM podium-test/busybox:1\n",
        {},
    )
    assert load(path).builds["w"].dockerfile_inline == "FROM podium-test/busybox:1\n"


def test_buildkit_only_keys_are_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  w:\n    build:\n      context: web\n      ssh: [default]\n"
        "      secrets: [npm]\n",
    )
    p = load(path)
    assert [w for w in p.warnings if "build.ssh was ignored" in w]
    assert [w for w in p.warnings if "build.secrets was ignored" in w]


@pytest.mark.parametrize(
    ("build", "path", "message"),
    [
        ("./nowhere", "services.w.build", "the build context './nowhere' is not a directory"),
        ("{context: ., dockerfile: Nope}", "services.w.build.dockerfile", "no Dockerfile at"),
        ("{context: web, dockerfil: x}", "services.w.build.dockerfil", "unknown build key"),
        (
            "https://github.com/me/app.git",
            "services.w.build",
            "remote build contexts ('https://github.com/me/app.git') are not supported yet",
        ),
        (
            "{context: web, dockerfile: Dockerfile, dockerfile_inline: 'FROM x'}",
            "services.w.build.dockerfile_inline",
            "dockerfile or dockerfile_inline, not both",
        ),
    ],
)
def test_bad_builds_are_errors_at_their_line(
    tmp_path: Path, build: str, path: str, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        load(write(tmp_path, f"services:\n  w:\n    build: {build}\n"))
    (issue,) = info.value.issues
    assert issue.path == path and issue.line == 3
    assert message in issue.message


def test_pull_policy_build_needs_a_build_and_a_disabled_service_is_not_built(
    tmp_path: Path,
) -> None:
    with pytest.raises(SpecError) as info:
        load(write(tmp_path, "services:\n  w: {image: x, pull_policy: build}\n"))
    assert "pull_policy: build needs a build: section" in info.value.issues[0].message
    p = load(write(tmp_path, "services:\n  w: {image: x}\n  t: {build: web, profiles: [t]}\n"))
    assert p.builds == {} and p.disabled == {"t": ["t"]}
