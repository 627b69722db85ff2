"""Compose files → Podium jobs: what each field becomes, and how bad files are refused.

Inline documents are dedented before parsing, so their line numbers count from
the first line after the opening quotes.
"""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from podium.errors import SpecError, SpecIssue
from podium.models.job import JobSpec, JobType
from podium.spec import convert_compose, convert_compose_project, load_compose_file
from podium.spec.compose import topological_order

DATA = Path(__file__).parent / "data" / "compose"
SHOP = DATA / "shop" / "compose.yaml"


def convert(text: str, env: dict[str, str] | None = None, **kw: Any) -> list[JobSpec]:
    return convert_compose(
        dedent(text), kw.pop("project", "proj"), env or {}, base_dir="/srv/app", **kw
    )


def one(text: str, env: dict[str, str] | None = None) -> JobSpec:
    jobs = convert(text, env)
    assert len(jobs) == 1
    return jobs[0]


def task_of(job: JobSpec, service: str) -> Any:
    return job.groups[service].tasks[service]


def issues_of(text: str, env: dict[str, str] | None = None, **kw: Any) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        convert_compose(
            dedent(text),
            kw.pop("project", "proj"),
            env or {},
            base_dir="/srv/app",
            source="compose.yaml",
            **kw,
        )
    assert info.value.source == "compose.yaml"
    return info.value.issues


def only(text: str, env: dict[str, str] | None = None, **kw: Any) -> SpecIssue:
    issues = issues_of(text, env, **kw)
    assert len(issues) == 1, issues
    return issues[0]


# -- the example project -----------------------------------------------------------------


@pytest.fixture
def shop() -> list[JobSpec]:
    return load_compose_file(SHOP, env={"FROM_SHELL": "shell"})


def test_shop_is_one_service_job_plus_one_system_job_per_global_service(
    shop: list[JobSpec],
) -> None:
    assert [j.id for j in shop] == ["shop", "shop-node-exporter"]
    main, exporter = shop
    assert main.type == JobType.SERVICE
    assert list(main.groups) == ["db", "api", "web"]  # start order: dependencies first
    assert exporter.type == JobType.SYSTEM
    assert list(exporter.groups) == ["node-exporter"]
    assert exporter.meta["compose.project"] == "shop"
    assert exporter.meta["compose.service"] == "node-exporter"
    assert main.meta["compose.project"] == "shop"
    assert json.loads(main.meta["compose.start_order"]) == ["db", "api", "web", "node-exporter"]


def test_shop_web_service(shop: list[JobSpec]) -> None:
    web = shop[0].groups["web"]
    t = web.tasks["web"]
    base = SHOP.parent
    assert t.driver == "docker"
    assert t.config["image"] == "nginx:1.27"  # NGINX_TAG from .env
    assert t.config["command"] == "nginx"
    assert t.config["args"] == ["-g", "daemon off;"]
    assert t.config["entrypoint"] == ["/docker-entrypoint.sh"]
    # env_file first, environment over it; the shell's FROM_SHELL beats .env's
    assert t.env == {"WEB_ONLY": "yes", "MODE": "from-dotenv", "FROM_SHELL": "shell"}
    assert web.count == 2
    assert {k: p.static for k, p in web.network.ports.items()} == {
        "p80": 8080,
        "p443": 8443,
        "p9000": None,
    }
    # every interface unless an address is written, as `docker compose` publishes
    assert t.config["ports"] == {
        "p80": {"target": 80, "host_ip": "", "protocol": "tcp"},
        "p443": {"target": 443, "host_ip": "127.0.0.1", "protocol": "tcp"},
        "p9000": {"target": 9000, "host_ip": "", "protocol": "udp"},
    }
    recorded = json.loads(web.meta["compose.ports"])
    assert recorded[1] == {
        "label": "p443",
        "target": 443,
        "protocol": "tcp",
        "published": 8443,
        "host_ip": "127.0.0.1",
    }
    assert recorded[2]["protocol"] == "udp"
    assert json.loads(web.meta["compose.expose"]) == ["3000"]
    assert t.config["mounts"] == [
        {
            "type": "bind",
            "target": "/usr/share/nginx/html",
            "readonly": True,
            "source": str(base / "html"),
            "create_host_path": True,
        },
        {"type": "volume", "target": "/var/cache/nginx", "source": "shop_cache"},
        {"type": "tmpfs", "target": "/tmp"},
    ]
    assert json.loads(web.meta["compose.depends_on"]) == {
        "db": "service_healthy",
        "api": "service_started",
    }
    assert t.config["labels"] == {
        "tier": "front",
        "podium.compose.project": "shop",
        "podium.compose.service": "web",
    }
    assert t.config["networks"] == [{"name": "shop_front", "aliases": ["web"]}]
    # depends_on: the group waits for db healthy and api started when first placed
    assert web.depends_on == {"db": "healthy", "api": "started"}
    # published: in the service catalog (and its DNS) as shop-web, on the first port
    assert [(v.name, v.port, v.tags) for v in web.services] == [("shop-web", "p80", ["compose"])]
    assert shop[0].groups["db"].services == []  # no published port: only on its network
    assert web.restart.mode == "delay" and web.restart.delay == 5.0 and web.restart.attempts >= 100
    # reservations are reserved, limits are the hard limits
    res = t.resources
    assert (res.cpu, res.memory, res.cpu_max, res.memory_max) == (250, 256, 500, 512)
    assert "compose.reservations" not in web.meta
    assert t.kill_timeout == 10.0  # Compose's stop grace period
    assert [(c.attribute, c.operator, c.value) for c in web.constraints] == [
        ("${meta.rack}", "!=", "r1")
    ]
    assert [s.attribute for s in web.spread] == ["${meta.zone}"]
    assert web.max_per_node == 1
    assert json.loads(web.meta["compose.update_config"]) == {"parallelism": 1, "delay": "10s"}
    assert json.loads(web.meta["compose.networks"]) == {"front": {}}
    assert (t.logs.max_file_size, t.logs.max_files) == (10, 3)  # from the x- anchor, merged
    assert not any(k.startswith("x-") for k in t.config)


def test_shop_api_service(shop: list[JobSpec]) -> None:
    api = shop[0].groups["api"]
    t = api.tasks["api"]
    assert (t.config["command"], t.config["args"]) == ("serve", ["--port", "8000"])
    assert t.config["work_dir"] == "/srv"
    assert t.config["user"] == "1000:1000"
    assert t.config["hostname"] == "api"
    assert (t.config["cap_add"], t.config["cap_drop"]) == (["NET_ADMIN"], ["ALL"])
    assert (t.kill_signal, t.kill_timeout) == ("SIGINT", 90.0)
    assert (api.restart.attempts, api.restart.delay, api.restart.mode) == (3, 2.0, "fail")
    assert api.meta["compose.restart_window"] == "60.0"
    assert t.config["mounts"] == [
        {
            "type": "bind",
            "source": str(SHOP.parent / "secrets/db_password.txt"),
            "target": "/run/secrets/db_password",
            "readonly": True,
        },
        {
            "type": "bind",
            "source": str(SHOP.parent / "api.toml"),
            "target": "/etc/api.toml",
            "readonly": True,
        },
    ]
    assert json.loads(api.meta["compose.networks"]) == {
        "front": {"aliases": ["backend"]},
        "back": {},
    }
    assert t.config["networks"] == [
        {"name": "shop_front", "aliases": ["api", "backend"]},
        {"name": "shop_back", "aliases": ["api"]},
    ]
    assert api.depends_on == {"db": "started"}


def test_shop_db_and_global_service(shop: list[JobSpec]) -> None:
    db = shop[0].groups["db"]
    t = db.tasks["db"]
    assert json.loads(db.meta["compose.healthcheck"]) == {
        "test": ["CMD-SHELL", "pg_isready -U postgres"],
        "interval": 10.0,
        "timeout": 5.0,
        "start_period": 30.0,
        "retries": 5,
    }
    assert t.config["healthcheck"] == {
        "test": ["CMD-SHELL", "pg_isready -U postgres"],
        "interval": "10s",
        "timeout": "5s",
        "start_period": "30s",
        "retries": 5,
    }
    assert db.depends_on == {}
    assert (db.restart.attempts, db.restart.mode) == (0, "fail")
    assert (db.reschedule.attempts, db.reschedule.unlimited) == (0, False)
    assert {
        "type": "volume",
        "target": "/var/lib/postgresql/data",
        "source": "shop-db-data",
    } in t.config["mounts"]
    assert {
        "type": "bind",
        "source": str(SHOP.parent / "secrets/db_password.txt"),
        "target": "/run/secrets/pw",
        "readonly": True,
    } in t.config["mounts"]
    exporter = shop[1].groups["node-exporter"].tasks["node-exporter"]
    assert exporter.config["privileged"] is True
    assert exporter.config["network_mode"] == "host"
    assert "networks" not in exporter.config  # host networking: no project network
    assert (exporter.resources.cpu, exporter.resources.memory) == (100, 64)


def test_shop_job_meta_records_networks_and_volumes(shop: list[JobSpec]) -> None:
    meta = shop[0].meta
    assert json.loads(meta["compose.networks"]) == {"front": {}, "back": {"driver": "overlay"}}
    assert json.loads(meta["compose.volumes"]) == {
        "cache": {"name": "shop_cache"},
        "db-data": {"name": "shop-db-data"},
    }


def test_converted_jobs_round_trip_through_the_job_model(shop: list[JobSpec]) -> None:
    for job in shop:
        again = JobSpec.model_validate(
            job.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        )
        assert again == job


# -- project name ------------------------------------------------------------------------


def test_project_name_flag_then_env_then_name_then_directory(tmp_path: Path) -> None:
    directory = tmp_path / "My App!"
    directory.mkdir()
    f = directory / "compose.yaml"
    f.write_text("services: {a: {image: x}}\n")
    assert convert_compose_project(f).name == "myapp"
    assert convert_compose_project(f, env={"COMPOSE_PROJECT_NAME": "fromenv"}).name == "fromenv"
    f.write_text("name: named\nservices: {a: {image: x}}\n")
    assert convert_compose_project(f).name == "named"
    assert convert_compose_project(f, "flag", {"COMPOSE_PROJECT_NAME": "e"}).name == "flag"
    assert [j.id for j in convert_compose(f, "flag")] == ["flag"]


def test_bad_project_name_is_an_error_with_a_suggestion() -> None:
    issue = only("name: My_Shop\nservices: {a: {image: x}}\n", project=None)
    assert (issue.path, issue.line) == ("name", 1)
    assert "must be lower-case" in issue.message and issue.hint == "try 'my_shop'"


# -- fields ------------------------------------------------------------------------------


def test_minimal_service_gets_composes_defaults() -> None:
    job = one("services:\n  web:\n    image: nginx\n")
    assert job.id == "proj"
    g = job.groups["web"]
    assert g.count == 1
    assert task_of(job, "web").config == {
        "image": "nginx",
        "labels": {"podium.compose.project": "proj", "podium.compose.service": "web"},
        # the project's default network, as Compose gives every service
        "networks": [{"name": "proj_default", "aliases": ["web"]}],
    }
    # Compose's defaults, not Podium's: no restart (here or elsewhere), a 10 s stop grace
    # period, no hard limit and Podium's default reservation
    assert (g.restart.attempts, g.restart.mode) == (0, "fail")
    assert (g.reschedule.attempts, g.reschedule.unlimited) == (0, False)
    t = task_of(job, "web")
    assert t.kill_timeout == 10.0
    assert (t.resources.memory_max, t.resources.cpu_max) == (None, None)
    assert (t.resources.memory, t.resources.cpu) == (300, 100)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo 'a b' c", {"command": "echo", "args": ["a b", "c"]}),
        (["sh", "-c", "echo $$HOME"], {"command": "sh", "args": ["-c", "echo $HOME"]}),
        ("run", {"command": "run"}),
        ([], {}),
    ],
)
def test_command_is_shell_split_or_taken_as_a_list(
    command: object, expected: dict[str, Any]
) -> None:
    job = one(f"services:\n  w:\n    image: x\n    command: {json.dumps(command)}\n")
    config = task_of(job, "w").config
    assert {k: v for k, v in config.items() if k in ("command", "args")} == expected


def test_entrypoint_string_is_split() -> None:
    job = one("services:\n  w:\n    image: x\n    entrypoint: /bin/sh -c\n")
    assert task_of(job, "w").config["entrypoint"] == ["/bin/sh", "-c"]


def test_environment_list_and_map_forms() -> None:
    job = one(
        """\
        services:
          a:
            image: x
            environment: [A=1, B=, "C=x=y", FROM_ENV, MISSING]
          b:
            image: x
            environment: {N: 1, T: true, E: "", FROM_ENV: null, MISSING: null}
        """,
        env={"FROM_ENV": "here"},
    )
    assert task_of(job, "a").env == {"A": "1", "B": "", "C": "x=y", "FROM_ENV": "here"}
    assert task_of(job, "b").env == {"N": "1", "T": "true", "E": "", "FROM_ENV": "here"}


def test_env_file_list_is_read_relative_to_the_compose_file(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("A=1\nB='literal $X'\n")
    (tmp_path / "b.env").write_text('B="two\\nlines"\n')
    f = tmp_path / "compose.yaml"
    f.write_text(
        "services:\n  w:\n    image: x\n    env_file: [a.env, b.env, {path: c.env, required: false}]\n"
    )
    t = convert_compose(f, "p", {})[0].groups["w"].tasks["w"]
    assert t.env == {"A": "1", "B": "two\nlines"}


def test_missing_env_file_is_an_error_at_its_line(tmp_path: Path) -> None:
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  w:\n    image: x\n    env_file: nope.env\n")
    with pytest.raises(SpecError) as info:
        convert_compose(f, "p", {})
    (issue,) = info.value.issues
    assert (issue.path, issue.line, issue.column) == ("services.w.env_file", 4, 15)
    assert "nope.env" in issue.message


@pytest.mark.parametrize(
    ("port", "static", "target", "host_ip", "protocol"),
    [
        ("80", None, 80, "", "tcp"),
        ("8080:80", 8080, 80, "", "tcp"),
        ("127.0.0.1:8080:80/tcp", 8080, 80, "127.0.0.1", "tcp"),
        ("127.0.0.1::80", None, 80, "127.0.0.1", "tcp"),
        ("[::1]:8080:80", 8080, 80, "::1", "tcp"),
        ("53:53/udp", 53, 53, "", "udp"),
        (8080, None, 8080, "", "tcp"),
    ],
)
def test_port_short_syntax_keeps_the_host_ip_and_protocol(
    port: object, static: int | None, target: int, host_ip: str, protocol: str
) -> None:
    job = one(f"services:\n  w:\n    image: x\n    ports: [{json.dumps(port)}]\n")
    g = job.groups["w"]
    label = f"p{target}"
    assert g.network.ports[label].static == static
    expected = {"target": target, "host_ip": host_ip, "protocol": protocol}
    assert task_of(job, "w").config["ports"] == {label: expected}


def test_same_port_on_tcp_and_udp_is_one_label_and_same_target_twice_is_two() -> None:
    job = one(
        'services:\n  w:\n    image: x\n    ports: ["53:53/tcp", "53:53/udp", "8080:80", "8081:80"]\n'
    )
    assert task_of(job, "w").config["ports"] == {
        "p53": {"target": 53, "host_ip": ""},  # no protocol: both, as written
        "p80": {"target": 80, "host_ip": "", "protocol": "tcp"},
        "p80_2": {"target": 80, "host_ip": "", "protocol": "tcp"},
    }
    assert job.groups["w"].network.ports["p80_2"].static == 8081


def test_long_port_syntax_and_a_bad_host_ip() -> None:
    job = one(
        """\
        services:
          w:
            image: x
            ports:
              - {target: 53, published: "5353", host_ip: 127.0.0.1, protocol: udp}
              - {target: 80, host_ip: "", published: ""}
        """
    )
    assert task_of(job, "w").config["ports"] == {
        "p53": {"target": 53, "host_ip": "127.0.0.1", "protocol": "udp"},
        "p80": {"target": 80, "host_ip": "", "protocol": "tcp"},
    }
    issue = only('services:\n  w:\n    image: x\n    ports: ["localhost:8080:80"]\n')
    assert issue.path == "services.w.ports[0]"
    assert "host IP 'localhost' is not an IP address" in issue.message


def test_a_loopback_port_is_not_registered_in_the_catalog() -> None:
    job = one('services:\n  w:\n    image: x\n    ports: ["127.0.0.1:8080:80", "9090:90"]\n')
    assert [(s.name, s.port) for s in job.groups["w"].services] == [("proj-w", "p90")]
    only_loop = one('services:\n  w:\n    image: x\n    ports: ["127.0.0.1:8080:80"]\n')
    assert only_loop.groups["w"].services == []


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ("8000-8010:8000-8010", "port ranges ('8000-8010') are not supported yet"),
        ("99999", "container port 99999 is out of range"),
        ("80/sctp", "unknown protocol 'sctp'"),
        ("a:80", "published port 'a' is not a port number"),
    ],
)
def test_bad_ports(port: str, message: str) -> None:
    issue = only(f"services:\n  w:\n    image: x\n    ports:\n      - {json.dumps(port)}\n")
    assert (issue.path, issue.line, issue.column) == ("services.w.ports[0]", 5, 9)
    assert message in issue.message


def test_port_published_twice_is_an_error() -> None:
    issue = only('services:\n  w:\n    image: x\n    ports: ["8080:80", "8080:81"]\n')
    assert issue.path == "services.w.ports[1]"
    assert "8080 is published twice" in issue.message


def test_volume_forms() -> None:
    job = one(
        """\
        services:
          w:
            image: x
            volumes:
              - /abs:/a
              - ./rel:/r:ro,z
              - ../up:/u:rw
              - ~/home:/h
              - data:/d:ro
              - /anon
              - {type: bind, source: ./b, target: /b, read_only: true}
              - {type: volume, source: data, target: /d2}
        volumes:
          data: {external: true}
        """
    )
    home = str(Path("~/home").expanduser())
    create = {"create_host_path": True}  # both syntaxes, as `docker compose` does
    assert task_of(job, "w").config["mounts"] == [
        {"type": "bind", "target": "/a", "source": "/abs", **create},
        {"type": "bind", "target": "/r", "readonly": True, "source": "/srv/app/rel", **create},
        {"type": "bind", "target": "/u", "source": "/srv/up", **create},
        {"type": "bind", "target": "/h", "source": home, **create},
        {
            "type": "volume",
            "target": "/d",
            "readonly": True,
            "source": "data",
        },  # external: as named
        {"type": "volume", "target": "/anon"},
        {"type": "bind", "target": "/b", "readonly": True, "source": "/srv/app/b", **create},
        {"type": "volume", "target": "/d2", "source": "data"},
    ]


def test_undeclared_volume_and_bad_mode() -> None:
    issues = issues_of(
        "services:\n  w:\n    image: x\n    volumes: [dta:/d, './a:/a:xx', 'rel:path']\nvolumes: {data: {}}\n"
    )
    assert [(i.path, i.line) for i in issues] == [
        ("services.w.volumes[0]", 4),
        ("services.w.volumes[1]", 4),
        ("services.w.volumes[2]", 4),
    ]
    assert issues[0].hint == "did you mean 'data'?"
    assert "unknown mode 'xx'" in issues[1].message
    assert "must be absolute" in issues[2].message


def test_volume_driver_options_are_refused() -> None:
    issue = only("services:\n  w:\n    image: x\nvolumes:\n  nfs:\n    driver_opts: {type: nfs}\n")
    assert (issue.path, issue.line) == ("volumes.nfs", 5)
    assert "not supported yet" in issue.message


def test_secrets_and_configs_mount_files_read_only() -> None:
    job = one(
        """\
        services:
          w:
            image: x
            secrets: [s, {source: s, target: /etc/s.pem}]
            configs: [c]
        secrets: {s: {file: ./s.txt}}
        configs: {c: {file: /etc/app.conf}}
        """
    )
    assert task_of(job, "w").config["mounts"] == [
        {"type": "bind", "source": "/srv/app/s.txt", "target": "/run/secrets/s", "readonly": True},
        {"type": "bind", "source": "/srv/app/s.txt", "target": "/etc/s.pem", "readonly": True},
        {"type": "bind", "source": "/etc/app.conf", "target": "/c", "readonly": True},
    ]


def test_external_and_inline_secrets_are_refused() -> None:
    issues = issues_of(
        """\
        services:
          w: {image: x, secrets: [ext, missing]}
        secrets:
          ext: {external: true}
        configs:
          inline: {content: "hello"}
        """
    )
    assert [(i.path, i.line) for i in issues] == [
        ("services.w.secrets[1]", 2),
        ("secrets.ext", 4),
        ("configs.inline", 6),
    ]
    assert "Swarm's store" in issues[1].message
    assert "only file-based configs" in issues[2].message
    assert "not declared" in issues[0].message


def test_healthcheck_forms() -> None:
    job = one(
        """\
        services:
          a: {image: x, healthcheck: {test: curl -f http://localhost/}}
          b: {image: x, healthcheck: {test: [CMD, curl, -f, http://localhost/], interval: 1m30s}}
          c: {image: x, healthcheck: {disable: true}}
        """
    )
    hc = {n: json.loads(job.groups[n].meta["compose.healthcheck"]) for n in "abc"}
    assert hc["a"] == {"test": ["CMD-SHELL", "curl -f http://localhost/"]}
    assert hc["b"] == {"test": ["CMD", "curl", "-f", "http://localhost/"], "interval": 90.0}
    assert hc["c"] == {"test": ["NONE"]}
    config = {n: task_of(job, n).config["healthcheck"] for n in "abc"}
    assert config["a"] == {"test": ["CMD-SHELL", "curl -f http://localhost/"]}
    assert config["b"] == {"test": ["CMD", "curl", "-f", "http://localhost/"], "interval": "1m30s"}
    assert config["c"] == {"test": ["NONE"]}  # disabled, the image's HEALTHCHECK too


def test_healthcheck_without_test_keeps_the_images_command() -> None:
    project = convert_compose_project(
        "services:\n  a: {image: x, healthcheck: {interval: 5s, start_interval: 1s}}\n"
        "  b: {image: x, depends_on: {a: {condition: service_healthy}}}\n",
        "proj",
        {},
    )
    job = project.jobs[0]
    assert task_of(job, "a").config["healthcheck"] == {"test": [], "interval": "5s"}
    assert job.groups["b"].depends_on == {"a": "healthy"}
    assert any("start_interval was ignored" in w for w in project.warnings)


def test_bad_healthcheck_test() -> None:
    issue = only(
        "services:\n  a:\n    image: x\n    healthcheck:\n      test: [curl, x]\n      interval: soon\n".replace(
            "      interval: soon\n", ""
        )
    )
    assert issue.path == "services.a.healthcheck.test"
    assert "starts with CMD, CMD-SHELL or NONE" in issue.message
    issue = only(
        "services:\n  a:\n    image: x\n    healthcheck: {test: [CMD, x], interval: soon}\n"
    )
    assert issue.path == "services.a.healthcheck.interval"


def test_labels_list_form() -> None:
    job = one("services:\n  w:\n    image: x\n    labels: [a=1, b]\n")
    labels = task_of(job, "w").config["labels"]
    assert labels == {
        "a": "1",
        "b": "",
        "podium.compose.project": "proj",
        "podium.compose.service": "w",
    }


@pytest.mark.parametrize(
    ("restart", "attempts", "mode"),
    [
        ("no", 0, "fail"),
        ('"no"', 0, "fail"),
        ("always", 1000, "delay"),
        ("unless-stopped", 1000, "delay"),
        ("on-failure", 1000, "delay"),
        ("on-failure:4", 4, "fail"),
    ],
)
def test_restart_policies(restart: str, attempts: int, mode: str) -> None:
    g = one(f"services:\n  w:\n    image: x\n    restart: {restart}\n").groups["w"]
    assert (g.restart.attempts, g.restart.mode) == (attempts, mode)
    if attempts == 0:
        assert (g.reschedule.attempts, g.reschedule.unlimited) == (0, False)


def test_unknown_restart_policy() -> None:
    issue = only("services:\n  w:\n    image: x\n    restart: sometimes\n")
    assert (issue.path, issue.line, issue.column) == ("services.w.restart", 4, 14)


def test_deploy_restart_policy_wins_over_restart() -> None:
    g = one(
        "services:\n  w:\n    image: x\n    restart: always\n    deploy: {restart_policy: {condition: none}}\n"
    ).groups["w"]
    assert g.restart.attempts == 0


def test_resources_from_limits_and_compose_keys() -> None:
    job = one(
        """\
        services:
          a: {image: x, deploy: {resources: {limits: {cpus: "2", memory: 1g}}}}
          b: {image: x, cpus: 1.5, mem_limit: 1073741824}
          c: {image: x, mem_reservation: 100m, mem_limit: 1g}
          d: {image: x, deploy: {resources: {reservations: {memory: 1.5GB}}}}
        """
    )

    def res(n: str) -> tuple[int, int, int | None, int | None]:
        r = task_of(job, n).resources
        return (r.cpu, r.memory, r.cpu_max, r.memory_max)

    # a limit alone is also what is reserved; a reservation alone sets no limit
    assert res("a") == (2000, 1024, 2000, 1024)
    assert res("b") == (1500, 1024, 1500, 1024)
    assert res("c") == (100, 100, None, 1024)
    assert res("d") == (100, 1536, None, None)


def test_bad_sizes_and_cpus() -> None:
    issues = issues_of(
        "services:\n  a:\n    image: x\n    deploy: {resources: {limits: {cpus: lots, memory: 12 parsecs}}}\n"
    )
    assert {i.path for i in issues} == {
        "services.a.deploy.resources.limits.cpus",
        "services.a.deploy.resources.limits.memory",
    }


def test_replicas_and_scale() -> None:
    job = one(
        "services:\n  a: {image: x, deploy: {replicas: 4}}\n  b: {image: x, scale: 2}\n  c: {image: x, scale: 2, deploy: {replicas: 0}}\n"
    )
    assert [job.groups[n].count for n in "abc"] == [4, 2, 0]


def test_global_with_replicas_is_an_error() -> None:
    issue = only("services:\n  a: {image: x, deploy: {mode: global, replicas: 2}}\n")
    assert issue.path == "services.a.deploy.replicas"


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ("node.hostname == web-1", ("${node.name}", "=", "web-1")),
        ("node.id!=abc", ("${node.id}", "!=", "abc")),
        ("node.labels.disk == ssd", ("${meta.disk}", "=", "ssd")),
        ("node.platform.os == linux", ("${attr.kernel.name}", "=", "linux")),
        ("node.platform.arch == x86_64", ("${attr.cpu.arch}", "=", "amd64")),
        ("node.role != manager", None),
    ],
)
def test_placement_constraints(constraint: str, expected: tuple[str, str, str] | None) -> None:
    g = one(
        f"services:\n  w:\n    image: x\n    deploy: {{placement: {{constraints: [{json.dumps(constraint)}]}}}}\n"
    ).groups["w"]
    got = [(c.attribute, c.operator, c.value) for c in g.constraints]
    assert got == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("node.role == manager", "no manager nodes"),
        ("engine.labels.a == b", "has no Podium equivalent"),
        ("node.hostname ~ x", "is not a placement constraint"),
    ],
)
def test_bad_placement_constraints(constraint: str, message: str) -> None:
    issue = only(
        f"services:\n  w:\n    image: x\n    deploy:\n      placement:\n        constraints:\n          - {json.dumps(constraint)}\n"
    )
    assert (issue.path, issue.line) == ("services.w.deploy.placement.constraints[0]", 7)
    assert message in issue.message


def test_platform_becomes_constraints() -> None:
    g = one("services:\n  w: {image: x, platform: linux/arm64}\n").groups["w"]
    # kernel.name is "linux"; os.name is the distribution (debian), as in Nomad
    assert [(c.attribute, c.value) for c in g.constraints] == [
        ("${attr.kernel.name}", "linux"),
        ("${attr.cpu.arch}", "arm64"),
    ]


def test_networks_must_be_declared_and_exclude_network_mode() -> None:
    issues = issues_of(
        "services:\n  w:\n    image: x\n    networks: [front, default]\n  h:\n    image: x\n    network_mode: service:w\n"
    )
    assert [(i.path, i.line) for i in issues] == [
        ("services.w.networks[0]", 4),
        ("services.h.network_mode", 7),
    ]
    assert "not declared" in issues[0].message
    assert "not supported yet" in issues[1].message


def test_networks_become_docker_networks_with_the_service_name_as_alias() -> None:
    project = convert_compose_project(
        dedent(
            """\
            services:
              web:
                image: x
                networks:
                  front: {aliases: [www, web], priority: 1}
                  back: {priority: 10, ipv4_address: 10.0.0.5}
              db: {image: x, networks: [back, ext]}
              plain: {image: x}
              bridged: {image: x, network_mode: bridge}
            networks:
              front: {}
              back: {name: shared-back, driver: overlay, internal: true}
              ext: {external: true}
              default: {name: my-default}
            """
        ),
        "shop",
        {},
    )
    job = project.jobs[0]
    assert task_of(job, "web").config["networks"] == [  # highest priority first
        {"name": "shared-back", "aliases": ["web"]},
        {"name": "shop_front", "aliases": ["web", "www"]},
    ]
    assert task_of(job, "db").config["networks"] == [
        {"name": "shared-back", "aliases": ["db"]},
        {"name": "ext", "aliases": ["db"]},
    ]
    assert task_of(job, "plain").config["networks"] == [
        {"name": "my-default", "aliases": ["plain"]}
    ]
    assert "networks" not in task_of(job, "bridged").config
    assert any("networks.back.ipv4_address is not supported" in w for w in project.warnings)
    assert any("network 'back': internal not supported" in w for w in project.warnings)
    assert any(
        "driver overlay becomes a bridge network on each node" in w for w in project.warnings
    )


def test_catalog_names_are_dns_labels() -> None:
    project = convert_compose_project(
        "services:\n  My_Api: {image: x, ports: ['80']}\n"
        f"  {'s' * 60}: {{image: x, ports: ['81']}}\n",
        "proj",
        {},
    )
    groups = project.jobs[0].groups
    assert [v.name for v in groups["My_Api"].services] == ["proj-my-api"]
    assert groups["s" * 60].services == []
    assert any("cannot be a DNS name" in w for w in project.warnings)


def test_bad_network_keys() -> None:
    issues = issues_of(
        """\
        services:
          w:
            image: x
            networks:
              front: {alias: [x]}
        networks:
          front: {drvier: bridge}
        """
    )
    assert [(i.path, i.line, i.hint) for i in issues] == [
        ("services.w.networks.front.alias", 5, "did you mean 'aliases'?"),
        ("networks.front.drvier", 7, "did you mean 'driver'?"),
    ]


def test_misc_fields() -> None:
    job = one(
        """\
        services:
          w:
            image: x
            pull_policy: always
            stop_grace_period: 20s
            tmpfs: /run
            logging: {driver: json-file, options: {max-size: 1500k}}
        """
    )
    t = task_of(job, "w")
    assert t.config["image_pull"] == "always"
    assert t.kill_timeout == 20.0
    assert t.config["mounts"] == [{"type": "tmpfs", "target": "/run"}]
    assert t.logs.max_file_size == 2  # rounded up to whole MB


# -- depends_on --------------------------------------------------------------------------


def test_depends_on_orders_groups_and_keeps_file_order_otherwise() -> None:
    job = one(
        """\
        services:
          web: {image: x, depends_on: [api, cache]}
          cache: {image: x}
          api: {image: x, depends_on: {db: {condition: service_completed_successfully}}}
          db: {image: x}
          other: {image: x}
        """
    )
    assert list(job.groups) == ["cache", "db", "api", "web", "other"]
    assert json.loads(job.groups["api"].meta["compose.depends_on"]) == {
        "db": "service_completed_successfully"
    }
    # a service job restarts what exits: the wait becomes "started", with a warning
    assert job.groups["api"].depends_on == {"db": "started"}
    assert job.groups["web"].depends_on == {"api": "started", "cache": "started"}
    assert job.groups["other"].depends_on == {}


def test_service_healthy_needs_a_healthcheck() -> None:
    issue = only(
        """\
        services:
          web:
            image: x
            depends_on:
              db: {condition: service_healthy}
          db: {image: x}
          cache: {image: x, healthcheck: {disable: true}}
        """
    )
    assert (issue.path, issue.line) == ("services.web.depends_on.db", 5)
    assert (
        issue.message == "service 'web' waits for 'db' to be healthy, but 'db' has no healthcheck"
    )
    issue = only(
        "services:\n  web: {image: x, depends_on: {c: {condition: service_healthy}}}\n"
        "  c: {image: x, healthcheck: {test: [NONE]}}\n"
    )
    assert issue.path == "services.web.depends_on.c"


def test_depends_on_across_jobs_is_a_warning() -> None:
    project = convert_compose_project(
        dedent(
            """\
            services:
              web: {image: x, depends_on: [agent]}
              agent: {image: x, deploy: {mode: global}}
            """
        ),
        "proj",
        {},
    )
    web = project.jobs[0].groups["web"]
    assert web.depends_on == {}
    assert json.loads(web.meta["compose.depends_on"]) == {"agent": "service_started"}
    assert any(
        "service 'web' depends on 'agent'" in w and "not enforced" in w for w in project.warnings
    )


def test_topological_order_is_stable() -> None:
    assert topological_order({"a": ["c"], "b": [], "c": []}) == ["b", "c", "a"]


def test_depends_on_cycle_is_an_error_naming_the_cycle() -> None:
    issue = only(
        """\
        services:
          a: {image: x, depends_on: [b]}
          b: {image: x, depends_on: [c]}
          c: {image: x, depends_on: [a]}
        """
    )
    assert issue.message == "depends_on forms a cycle: a -> b -> c -> a"
    assert (issue.path, issue.line) == ("services.a.depends_on", 2)


def test_depends_on_errors() -> None:
    issues = issues_of(
        """\
        services:
          a:
            image: x
            depends_on:
              b: {condition: service_healty}
              a: {}
              nope: {}
          b: {image: x}
        """
    )
    messages = {i.path: i for i in issues}
    assert messages["services.a.depends_on.b.condition"].hint == "did you mean 'service_healthy'?"
    assert "depends on itself" in messages["services.a.depends_on.a"].message
    assert messages["services.a.depends_on.nope"].line == 7


# -- refusals ----------------------------------------------------------------------------


def test_missing_image() -> None:
    issue = only("services:\n  web:\n    command: x\n")
    assert (issue.path, issue.line) == ("services.web", 2)
    assert "has no image" in issue.message


def test_unknown_keys_error_with_hints_and_extensions_are_ignored() -> None:
    issues = issues_of(
        """\
        x-anything: {whatever: "${UNSET:?never evaluated}"}
        servics: {}
        services:
          w:
            image: x
            enviroment: [A=1]
            x-custom: 1
            deploy: {replica: 2}
            extends: {service: base}
        """
    )
    assert [(i.path, i.line, i.hint) for i in issues] == [
        ("servics", 2, "did you mean 'services'?"),
        ("services.w.enviroment", 6, "did you mean 'environment'?"),
        ("services.w.deploy.replica", 8, "did you mean 'replicas'?"),
        ("services.w.extends", 9, None),
    ]


def test_known_but_unsupported_keys_are_warnings() -> None:
    project = convert_compose_project(
        "services:\n  w: {image: x, tty: true, container_name: web, ulimits: {}}\n", "p", {}
    )
    assert len(project.warnings) == 3
    assert any("tty: is not supported yet" in w for w in project.warnings)


def test_bad_service_name_and_empty_services() -> None:
    issue = only("services:\n  -bad: {image: x}\n")
    assert (issue.path, issue.line, issue.column) == ("services.-bad", 2, 3)
    issue = only("services: {}\n")
    assert "at least one service" in issue.message
    issue = only("name: x\n")
    assert "no services" in issue.message


def test_yaml_errors_and_duplicates_carry_lines() -> None:
    issue = only("services:\n  w: {image: x}\n  w: {image: y}\n")
    assert (issue.path, issue.line, issue.message) == ("services.w", 3, "duplicate key 'w'")
    issue = only("services:\n  w: [\n")
    assert issue.message.startswith("invalid YAML")
    with pytest.raises(SpecError, match="empty"):
        convert_compose("", "p", {})
    with pytest.raises(SpecError, match="a compose file is a mapping"):
        convert_compose("- a\n", "p", {})


def test_unreadable_file() -> None:
    with pytest.raises(SpecError) as info:
        load_compose_file(DATA / "missing.yaml")
    assert "cannot read compose file" in str(info.value)


def test_bad_file_reports_every_issue_with_lines() -> None:
    with pytest.raises(SpecError) as info:
        load_compose_file(DATA / "bad" / "compose.yaml", env={})
    err = info.value
    assert err.source == str(DATA / "bad" / "compose.yaml")
    assert [(i.path, i.line) for i in err.issues] == [
        ("services.web.build", 3),
        ("services.web.ports[0]", 5),
        ("services.web.depends_on[0]", 6),
        ("services.api.comand", 9),
        ("services.api.volumes[0]", 10),
        ("services.api.deploy.placement.constraints[0]", 13),
        ("wat", 14),
    ]
    assert (
        str(err)
        .splitlines()[0]
        .startswith(f"{err.source}:3:12: services.web.build: no Dockerfile at ")
    )
