"""Compose files as their authors meant them: profiles, resources, defaults, mounts,
empty values, depends_on fields, platforms.

Each test pins one point of issue 12's "Compose files as their authors meant
them"; docs/compose.md says the same in prose.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from podium.errors import SpecError, SpecIssue
from podium.spec import ComposeProject, convert_compose_project, load_compose_project


def project(text: str, env: dict[str, str] | None = None, **kw: Any) -> ComposeProject:
    return convert_compose_project(
        dedent(text), kw.pop("name", "proj"), env or {}, base_dir="/srv/app", **kw
    )


def issues(text: str, env: dict[str, str] | None = None, **kw: Any) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        project(text, env, **kw)
    return info.value.issues


def task(p: ComposeProject, service: str) -> Any:
    return p.jobs[0].groups[service].tasks[service]


# -- profiles ----------------------------------------------------------------------------

PROFILED = """\
services:
  web: {image: web}
  db: {image: db}
  adminer: {image: adminer, profiles: [debug], depends_on: [db]}
  coverage: {image: cov, profiles: [test, ci]}
"""


@pytest.mark.parametrize(
    ("profiles", "env", "enabled"),
    [
        ((), {}, ["web", "db"]),
        (("debug",), {}, ["web", "db", "adminer"]),
        (("ci",), {}, ["web", "db", "coverage"]),
        (("debug", "test"), {}, ["web", "db", "adminer", "coverage"]),
        ((), {"COMPOSE_PROFILES": "debug, ci"}, ["web", "db", "adminer", "coverage"]),
        (("test",), {"COMPOSE_PROFILES": "debug"}, ["web", "db", "coverage"]),  # flag wins
        (("*",), {}, ["web", "db", "adminer", "coverage"]),
    ],
)
def test_profiles_select_services_as_compose_does(
    profiles: tuple[str, ...], env: dict[str, str], enabled: list[str]
) -> None:
    p = project(PROFILED, env, profiles=profiles)
    assert sorted(p.jobs[0].groups) == sorted(enabled)
    assert sorted(p.disabled) == sorted({"adminer", "coverage"} - set(enabled))


def test_compose_profiles_may_come_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(PROFILED)
    (tmp_path / ".env").write_text("COMPOSE_PROFILES=debug\n")
    p = load_compose_project(tmp_path / "compose.yaml", "proj", env={})
    assert p.profiles == ["debug"]
    assert "adminer" in p.jobs[0].groups
    assert p.jobs[0].groups["adminer"].meta["compose.profiles"] == '["debug"]'
    shell_wins = load_compose_project(
        tmp_path / "compose.yaml", "proj", env={"COMPOSE_PROFILES": ""}
    )
    assert "adminer" not in shell_wins.jobs[0].groups


def test_depending_on_a_disabled_service_is_an_error() -> None:
    text = """\
    services:
      web: {image: web, depends_on: [db]}
      db: {image: db, profiles: [data]}
    """
    (issue,) = issues(text)
    assert (issue.path, issue.line) == ("services.web.depends_on[0]", 2)
    assert "depends on 'db', which is not enabled" in issue.message
    assert "--profile data" in (issue.hint or "")
    assert sorted(project(text, profiles=["data"]).jobs[0].groups) == ["db", "web"]


def test_an_optional_dependency_may_be_disabled() -> None:
    p = project(
        """\
        services:
          web: {image: web, depends_on: {db: {condition: service_started, required: false}}}
          db: {image: db, profiles: [data]}
        """
    )
    assert list(p.jobs[0].groups) == ["web"]
    assert p.jobs[0].groups["web"].depends_on == {}
    assert any("(required: false), which is not enabled" in w for w in p.warnings)


def test_no_enabled_service_and_bad_profile_names() -> None:
    (issue,) = issues("services:\n  a: {image: a, profiles: [x]}\n")
    assert "no service is enabled" in issue.message and "--profile" in (issue.hint or "")
    (issue,) = issues("services:\n  a: {image: a, profiles: [-x]}\n")
    assert issue.path == "services.a.profiles[0]"
    p = project("services:\n  a: {image: a}\n", profiles=["typo"])
    assert p.warnings == ["profile 'typo' is not used by any service"]


# -- resources ---------------------------------------------------------------------------


def test_no_hard_limit_the_author_did_not_write() -> None:
    p = project(
        """\
        services:
          es: {image: es}
          kafka: {image: kafka, mem_reservation: 1g}
          ch: {image: ch, deploy: {resources: {reservations: {cpus: "2", memory: 4g}}}}
        """
    )
    for name in ("es", "kafka", "ch"):
        r = task(p, name).resources
        assert (r.memory_max, r.cpu_max) == (None, None), name
    assert task(p, "kafka").resources.memory == 1024
    assert (task(p, "ch").resources.cpu, task(p, "ch").resources.memory) == (2000, 4096)


def test_limits_and_reservations_map_onto_both_figures() -> None:
    p = project(
        """\
        services:
          a:
            image: a
            deploy:
              resources:
                limits: {cpus: "1.5", memory: 2g}
                reservations: {cpus: "0.5", memory: 512m}
          b: {image: b, mem_limit: 1g, mem_reservation: 256m, cpus: 0.25}
          c: {image: c, mem_limit: 1g, deploy: {resources: {limits: {memory: 1024m}}}}
        """
    )
    ra, rb, rc = (task(p, n).resources for n in "abc")
    assert (ra.cpu, ra.cpu_max, ra.memory, ra.memory_max) == (500, 1500, 512, 2048)
    assert (rb.cpu, rb.cpu_max, rb.memory, rb.memory_max) == (250, 250, 256, 1024)
    assert (rc.memory, rc.memory_max) == (1024, 1024)  # the same figure twice is fine


def test_distinct_figures_and_a_reservation_above_its_limit_are_errors() -> None:
    found = issues(
        """\
        services:
          a: {image: a, mem_limit: 1g, deploy: {resources: {limits: {memory: 2g}}}}
          b: {image: b, cpus: 1, deploy: {resources: {limits: {cpus: 2}}}}
          c: {image: c, mem_limit: 256m, mem_reservation: 1g}
          d: {image: d, deploy: {resources: {limits: {memroy: 1g}}}}
        """
    )
    by_path = {i.path: i for i in found}
    assert set(by_path) == {
        "services.a.deploy.resources.limits.memory",
        "services.b.deploy.resources.limits.cpus",
        "services.c.mem_reservation",
        "services.d.deploy.resources.limits.memroy",
    }
    assert "mem_limit (1024 MB) and deploy.resources.limits.memory (2048 MB) differ" in (
        by_path["services.a.deploy.resources.limits.memory"].message
    )
    assert "reservation (1024 MB) is above the limit (256 MB)" in (
        by_path["services.c.mem_reservation"].message
    )
    assert by_path["services.d.deploy.resources.limits.memroy"].hint == "did you mean 'memory'?"


# -- defaults ----------------------------------------------------------------------------


def test_restart_and_stop_grace_defaults_are_composes() -> None:
    p = project(
        """\
        services:
          plain: {image: a}
          always: {image: a, restart: always, stop_grace_period: 1m}
          swarm: {image: a, deploy: {restart_policy: {condition: any}}}
        """
    )
    groups = p.jobs[0].groups
    plain = groups["plain"]
    assert (plain.restart.attempts, plain.restart.mode, plain.reschedule.attempts) == (
        0,
        "fail",
        0,
    )
    assert groups["always"].restart.mode == "delay"
    assert groups["swarm"].restart.mode == "delay"
    assert task(p, "plain").kill_timeout == 10.0
    assert task(p, "always").kill_timeout == 60.0


# -- depends_on fields -------------------------------------------------------------------


def test_unknown_depends_on_fields_are_errors_with_a_suggestion() -> None:
    (issue,) = issues(
        """\
        services:
          web: {image: w, depends_on: {db: {condtion: service_healthy}}}
          db: {image: d}
        """
    )
    assert (issue.path, issue.line) == ("services.web.depends_on.db.condtion", 2)
    assert issue.hint == "did you mean 'condition'?"


def test_depends_on_restart_true_is_named_in_a_warning() -> None:
    p = project(
        """\
        services:
          web: {image: w, depends_on: {db: {condition: service_started, restart: true}}}
          db: {image: d}
        """
    )
    assert p.jobs[0].groups["web"].depends_on == {"db": "started"}
    assert any("depends_on.db.restart: true is not honoured" in w for w in p.warnings)


# -- empty values ------------------------------------------------------------------------


def test_empty_interpolated_values_are_unset() -> None:
    p = project(
        """\
        services:
          w:
            image: w
            platform: ${DOCKER_PLATFORM:-}
            user: ${RUN_AS:-}
            restart: ${RESTART:-}
            mem_limit: ${MEM:-}
            cpus: ${CPUS:-}
            stop_grace_period: ${GRACE:-}
            hostname: ${HOST:-}
            pull_policy: ${PULL:-}
            healthcheck: {test: "true", interval: "${HC_INTERVAL:-}"}
            deploy: {replicas: "${REPLICAS:-}", resources: {limits: {memory: "${LIMIT:-}"}}}
            logging: {driver: "${LOG_DRIVER:-}", options: {max-size: "${MAX:-}"}}
        """
    )
    g = p.jobs[0].groups["w"]
    t = task(p, "w")
    assert g.constraints == []
    assert {"user", "hostname", "image_pull"} & set(t.config) == set()
    assert t.resources.memory_max is None and t.kill_timeout == 10.0
    assert g.count == 1 and g.restart.attempts == 0
    assert t.config["healthcheck"] == {"test": ["CMD-SHELL", "true"]}
    assert p.warnings == []


# -- platform ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "constraints", "warned"),
    [
        ("linux", [("${attr.kernel.name}", "linux")], False),
        ("linux/amd64", [("${attr.kernel.name}", "linux"), ("${attr.cpu.arch}", "amd64")], False),
        ("linux/x86_64", [("${attr.kernel.name}", "linux"), ("${attr.cpu.arch}", "amd64")], False),
        (
            "linux/arm64/v8",
            [("${attr.kernel.name}", "linux"), ("${attr.cpu.arch}", "arm64")],
            True,
        ),
        ("fast", [], True),
        ("linux/z80", [], True),
    ],
)
def test_platform_names_an_os_and_architecture_or_warns(
    platform: str, constraints: list[tuple[str, str]], warned: bool
) -> None:
    p = project(f"services:\n  w: {{image: w, platform: {platform}}}\n")
    g = p.jobs[0].groups["w"]
    assert [(c.attribute, c.value) for c in g.constraints] == constraints
    assert bool(p.warnings) == warned


# -- mounts ------------------------------------------------------------------------------


def test_bind_create_host_path_and_volume_and_tmpfs_options() -> None:
    p = project(
        """\
        services:
          w:
            image: w
            volumes:
              - ./short:/s
              - {type: bind, source: ./long, target: /l}
              - {type: bind, source: ./strict, target: /x, bind: {create_host_path: false}}
              - {type: volume, source: data, target: /d, volume: {nocopy: true}}
              - data:/d2:nocopy
              - {type: tmpfs, target: /t, tmpfs: {size: 64m, mode: "1770"}}
            tmpfs: ["/run:size=16m,mode=0700", /cache]
        volumes: {data: {}}
        """
    )
    mounts = task(p, "w").config["mounts"]
    assert mounts == [
        {"type": "bind", "target": "/s", "source": "/srv/app/short", "create_host_path": True},
        {"type": "bind", "target": "/l", "source": "/srv/app/long", "create_host_path": True},
        {"type": "bind", "target": "/x", "source": "/srv/app/strict"},
        {"type": "volume", "target": "/d", "source": "proj_data", "nocopy": True},
        {"type": "volume", "target": "/d2", "source": "proj_data", "nocopy": True},
        {"type": "tmpfs", "target": "/t", "size": 64, "mode": 0o1770},
        {"type": "tmpfs", "target": "/run", "size": 16, "mode": 0o700},
        {"type": "tmpfs", "target": "/cache"},
    ]
    assert p.warnings == []


def test_mount_options_podium_cannot_honour_are_warnings() -> None:
    p = project(
        """\
        services:
          w:
            image: w
            volumes:
              - ./a:/a:z
              - {type: bind, source: ./b, target: /b, bind: {propagation: rshared}}
              - {type: volume, source: data, target: /c, volume: {subpath: sub}}
            tmpfs: ["/run:noexec,uid=1000"]
            secrets: [{source: token, mode: 0400}]
        volumes: {data: {}}
        secrets: {token: {file: ./token.txt}}
        """
    )
    text = "\n".join(p.warnings)
    for fragment in (
        "SELinux label flag 'z'",
        "bind.propagation 'rshared'",
        "volume.subpath",
        "noexec, uid=1000 ignored",
        "secret 'token': mode ignored",
    ):
        assert fragment in text, fragment


def test_bad_long_volume_fields_are_errors() -> None:
    found = issues(
        """\
        services:
          w:
            image: w
            volumes:
              - {type: bind, source: ./a, target: /a, bind: {create_host_pth: true}}
              - {type: volume, source: data, target: /b, read_olny: true}
              - {type: volume, source: data, target: /c, bind: {create_host_path: true}}
              - {type: tmpfs, target: /t, tmpfs: {mode: "9x"}}
        volumes: {data: {}}
        """
    )
    assert [(i.path, i.hint) for i in found] == [
        ("services.w.volumes[0].bind.create_host_pth", "did you mean 'create_host_path'?"),
        ("services.w.volumes[1].read_olny", "did you mean 'read_only'?"),
        ("services.w.volumes[2].bind", None),
        ("services.w.volumes[3].tmpfs.mode", None),
    ]


def test_an_optional_dependency_may_be_missing_and_an_empty_image_is_an_error() -> None:
    p = project(
        "services:\n  web: {image: w, depends_on: {cache: {condition: service_started, "
        "required: false}}}\n"
    )
    assert p.jobs[0].groups["web"].depends_on == {}
    assert any("(required: false), which is not a service" in w for w in p.warnings)
    (issue,) = issues("services:\n  web: {image: '${IMAGE:-}'}\n")
    assert (issue.path, issue.message) == ("services.web.image", "image: is empty")
