"""``podium compose convert|up|down|ps`` against the fake server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from podium.models import JobSpec

from .conftest import Invoke
from .fakes import ALLOC_A, ALLOC_B, EVAL_ID, FakeServer, alloc, evaluation, job_info

COMPOSE = """\
name: shop
services:
  web:
    image: nginx
    ports: ["8080:80"]
    depends_on: [db]
    deploy: {replicas: 2}
  db:
    image: postgres
  agent:
    image: agent
    deploy: {mode: global}
"""

ALLOC_C = "cccc3333-0000-4000-8000-000000000003"
REGISTERED = {"eval_id": EVAL_ID, "job_modify_index": 7, "version": 0, "index": 7, "changed": True}


@pytest.fixture
def compose_file(tmp_path: Path) -> Path:
    path = tmp_path / "compose.yaml"
    path.write_text(COMPOSE)
    return path


def shop_info(job_id: str = "shop", project: str = "shop") -> dict[str, object]:
    spec = JobSpec.model_validate(
        {
            "job": job_id,
            "meta": {"compose.project": project},
            "groups": {
                "web": {
                    "network": {"ports": {"p80": {"static": 8080}}},
                    "tasks": {
                        "web": {
                            "driver": "docker",
                            "config": {"image": "nginx", "ports": {"p80": 80}},
                        }
                    },
                }
            },
        }
    )
    return job_info(id=job_id, spec=spec.model_dump(mode="json"))


def test_convert_prints_yaml_documents(cli: Invoke, compose_file: Path) -> None:
    result = cli("compose", "convert", "-f", str(compose_file))
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["job"] for d in docs] == ["shop", "shop-agent"]
    assert list(docs[0]["groups"]) == ["db", "web"]
    assert docs[1]["type"] == "system"
    # the YAML is a job file: it validates as one
    assert JobSpec.model_validate(docs[0]).groups["web"].count == 2


def test_convert_json_and_project_flag(cli: Invoke, compose_file: Path) -> None:
    result = cli("compose", "convert", "-f", str(compose_file), "--project", "other", "-o", "json")
    assert result.exit_code == 0, result.output
    docs = json.loads(result.stdout)
    assert [d["job"] for d in docs] == ["other", "other-agent"]
    assert docs[0]["groups"]["web"]["tasks"]["web"]["config"]["ports"] == {
        "p80": {"target": 80, "host_ip": "", "protocol": "tcp"}
    }


def test_convert_finds_the_file_in_the_current_directory(
    cli: Invoke, compose_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(compose_file.parent)
    result = cli("compose", "convert")
    assert result.exit_code == 0, result.output
    assert "job: shop" in result.stdout


def test_convert_without_a_file_fails(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("compose", "convert")
    assert result.exit_code == 1
    assert "no compose file here" in result.output


def test_convert_reports_errors_with_lines(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web:\n    build: .\n")
    result = cli("compose", "convert", "-f", str(path))
    assert result.exit_code == 1
    assert "invalid compose file (1 issue)" in result.output
    assert f"{path}:3:12: services.web.build: no Dockerfile at {tmp_path}/Dockerfile" in (
        result.output
    )


def test_file_text_is_printed_as_written_never_as_emoji(cli: Invoke, tmp_path: Path) -> None:
    """rich would turn ``:100:`` into an emoji and ``[bold]`` into style: neither happens."""
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web: {image: x, ':100:[bold]': 1, labels: {a: '${NO:+}'}}\n")
    result = cli("compose", "convert", "-f", str(path))
    assert result.exit_code == 1
    assert "unknown service key ':100:[bold]'" in result.output
    assert "\U0001f4af" not in result.output  # the 100 emoji
    warned = tmp_path / "warned.yaml"
    warned.write_text("services:\n  web: {image: 'x:${TAG_100:-}', platform: ':100:'}\n")
    result = cli("compose", "convert", "-f", str(warned))
    assert result.exit_code == 0, result.output
    assert "platform ':100:' names no known OS" in result.stderr


def test_convert_names_the_image_a_built_service_expects(cli: Invoke, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM podium-test/busybox:1\n")
    path = tmp_path / "compose.yaml"
    path.write_text("name: shop\nservices:\n  web: {build: .}\n")
    result = cli("compose", "convert", "-f", str(path))
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert doc["groups"]["web"]["tasks"]["web"]["config"]["image"] == "shop-web"
    assert "Service web is built from" in result.stderr
    assert "expects image shop-web, which `podium compose up` builds" in result.stderr


def test_convert_with_profiles(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        "name: p\nservices:\n  a: {image: a}\n  b: {image: b, profiles: [x]}\n"
        "  c: {image: c, profiles: [y]}\n"
    )
    result = cli("compose", "convert", "-f", str(path), "--profile", "x", "--profile", "y")
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load(result.stdout)["groups"]) == ["a", "b", "c"]
    plain = cli("compose", "convert", "-f", str(path))
    assert list(yaml.safe_load(plain.stdout)["groups"]) == ["a"]


def test_convert_prints_warnings(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web: {image: 'x:${TAG}', tty: true}\n")
    result = cli("compose", "convert", "-f", str(path))
    assert result.exit_code == 0, result.output
    assert "Warning: variable TAG is not set" in result.output
    assert "tty: is not supported yet" in result.output


def test_up_registers_every_job_and_follows_them(
    cli: Invoke, fake: FakeServer, compose_file: Path
) -> None:
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation("complete", plan_summary={"place": 3}))
    fake.on(
        "GET",
        "/v1/job/shop/allocations",
        [
            alloc(ALLOC_A, "running", job_id="shop", group="web"),
            alloc(ALLOC_B, "running", index=1, job_id="shop", group="web"),
            alloc(ALLOC_C, "running", job_id="shop", group="db"),
        ],
    )
    fake.on(
        "GET",
        "/v1/job/shop-agent/allocations",
        [alloc(ALLOC_A, "pending", job_id="shop-agent", group="agent")],
        [alloc(ALLOC_A, "running", job_id="shop-agent", group="agent")],
    )
    result = cli("compose", "up", "-f", str(compose_file), "--timeout", "20s")
    assert result.exit_code == 0, result.output
    sent = [json.loads(r.content)["job"] for r in fake.calls("POST", "/v1/jobs")]
    assert [j["job"] for j in sent] == ["shop", "shop-agent"]
    assert sent[0]["groups"]["web"]["tasks"]["web"]["driver"] == "docker"
    assert "All 3 allocations running" in result.output
    assert "All 1 allocation running" in result.output


def test_up_detach_only_registers(cli: Invoke, fake: FakeServer, compose_file: Path) -> None:
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("compose", "up", "-f", str(compose_file), "--detach")
    assert result.exit_code == 0, result.output
    assert "Job shop registered" in result.output and "Job shop-agent registered" in result.output
    assert not fake.calls("GET", f"/v1/evaluation/{EVAL_ID}")


def test_up_json_prints_the_registrations(
    cli: Invoke, fake: FakeServer, compose_file: Path
) -> None:
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("compose", "up", "-f", str(compose_file), "-d", "-o", "json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"shop", "shop-agent"}


def test_up_exits_3_when_placement_fails(cli: Invoke, fake: FakeServer, compose_file: Path) -> None:
    fake.on("POST", "/v1/jobs", REGISTERED)
    fake.on(
        "GET",
        f"/v1/evaluation/{EVAL_ID}",
        evaluation(
            "complete", failed_tg_allocs={"web": {"nodes_evaluated": 1, "nodes_exhausted": 1}}
        ),
    )
    result = cli("compose", "up", "-f", str(compose_file), "--timeout", "20s")
    assert result.exit_code == 3, result.output
    assert "Placement failed" in result.output


def test_up_errors_as_a_document_with_o_json(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web: {image: x, ports: ['x']}\n")
    result = cli("compose", "up", "-f", str(path), "-o", "json")
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "invalid_spec" and error["message"].startswith("invalid compose file")
    assert error["issues"][0]["line"] == 2
    assert not fake.calls("POST", "/v1/jobs")
    both = cli("compose", "up", "-f", str(path), "--build", "--no-build", "-o", "json")
    assert both.exit_code == 2 and json.loads(both.stderr)["error"]["kind"] == "usage"


def test_up_with_a_bad_file_sends_nothing(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web: {image: x, ports: ['x']}\n")
    result = cli("compose", "up", "-f", str(path))
    assert result.exit_code == 1
    assert not fake.requests


JOB_ROWS = [
    {"id": "shop", "type": "service", "summary": {}},
    {"id": "shop-agent", "type": "system", "summary": {}},
    {"id": "shop-other", "type": "service", "summary": {}},  # not the project's (meta differs)
    {"id": "shopping", "type": "service", "summary": {}},  # prefix match only
]


def _project_on_server(fake: FakeServer) -> None:
    fake.on("GET", "/v1/jobs", JOB_ROWS)
    fake.on("GET", "/v1/job/shop", shop_info("shop"))
    fake.on("GET", "/v1/job/shop-agent", shop_info("shop-agent"))
    fake.on("GET", "/v1/job/shop-other", shop_info("shop-other", project="other"))


def test_down_stops_and_purges_the_project_jobs(cli: Invoke, fake: FakeServer) -> None:
    _project_on_server(fake)
    fake.on("DELETE", "/v1/job/shop", {"eval_id": EVAL_ID, "index": 9})
    fake.on("DELETE", "/v1/job/shop-agent", {"eval_id": EVAL_ID, "index": 10})
    fake.on(
        "GET",
        "/v1/allocations",
        [alloc(ALLOC_A, "running", job_id="shop")],
        [alloc(ALLOC_A, "complete", job_id="shop")],
    )
    result = cli("compose", "down", "--project", "shop")
    assert result.exit_code == 0, result.output
    deletes = fake.calls("DELETE", "/v1/job/shop") + fake.calls("DELETE", "/v1/job/shop-agent")
    assert len(deletes) == 2
    assert all(r.url.params.get("purge") == "true" for r in deletes)
    assert not fake.calls("DELETE", "/v1/job/shop-other")
    assert not fake.calls("GET", "/v1/job/shopping")
    assert "Project shop stopped (2 job(s))" in result.output


def test_down_takes_the_project_from_the_file(
    cli: Invoke, fake: FakeServer, compose_file: Path
) -> None:
    _project_on_server(fake)
    fake.on("DELETE", "/v1/job/shop", {"eval_id": EVAL_ID, "index": 9})
    fake.on("DELETE", "/v1/job/shop-agent", {"eval_id": EVAL_ID, "index": 10})
    result = cli("compose", "down", "-f", str(compose_file), "--no-purge", "--detach", "-o", "json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"shop", "shop-agent"}
    assert fake.calls("DELETE", "/v1/job/shop")[0].url.params.get("purge") in (None, "false")


def test_down_with_nothing_running(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/jobs", [])
    result = cli("compose", "down", "-p", "shop")
    assert result.exit_code == 0, result.output
    assert "Project shop has no jobs." in result.output


def test_ps_lists_the_allocations(cli: Invoke, fake: FakeServer) -> None:
    _project_on_server(fake)
    fake.on(
        "GET",
        "/v1/job/shop/allocations",
        [
            alloc(
                ALLOC_A,
                "running",
                job_id="shop",
                group="web",
                ports={"p80": {"value": 8080, "host_ip": "10.0.0.5"}},
            )
        ],
    )
    fake.on(
        "GET",
        "/v1/job/shop-agent/allocations",
        [alloc(ALLOC_B, "pending", job_id="shop-agent", group="agent")],
    )
    result = cli("compose", "ps", "-p", "shop")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    web = next(line for line in lines if "aaaa1111" in line)
    assert "web" in web and "running" in web and "laptop" in web and "10.0.0.5:8080->80" in web
    assert any("bbbb2222" in line and "agent" in line and "pending" in line for line in lines)


def test_ps_json(cli: Invoke, fake: FakeServer) -> None:
    _project_on_server(fake)
    fake.on("GET", "/v1/job/shop/allocations", [alloc(ALLOC_A, "running", job_id="shop")])
    fake.on("GET", "/v1/job/shop-agent/allocations", [])
    result = cli("compose", "ps", "-p", "shop", "-o", "json")
    assert result.exit_code == 0, result.output
    assert [a["id"] for a in json.loads(result.stdout)] == [ALLOC_A]


def test_job_file_errors_are_not_emoji_either(
    cli: Invoke, fake: FakeServer, tmp_path: Path
) -> None:
    """The same holds for job files (common.render_spec_error's console)."""
    path = tmp_path / "job.yaml"
    path.write_text("job: x\n':100:': 1\ngroups: {}\n")
    result = cli("job", "run", str(path))
    assert result.exit_code == 1
    assert "':100:'" in result.output and "\U0001f4af" not in result.output
    assert not fake.requests


# -- up converges; profiles left alone ---------------------------------------------------


def test_up_asks_the_server_to_restart_what_failed(
    cli: Invoke, fake: FakeServer, compose_file: Path
) -> None:
    """A re-run of ``up`` after a failure must start the failed services again (as
    ``docker compose up`` does), even when the file did not change."""
    fake.on("POST", "/v1/jobs", {**REGISTERED, "changed": False})
    result = cli("compose", "up", "-f", str(compose_file), "--detach")
    assert result.exit_code == 0, result.output
    bodies = [json.loads(r.content) for r in fake.calls("POST", "/v1/jobs")]
    assert [b.get("force_reschedule") for b in bodies] == [True, True]
    assert "Job shop unchanged" in result.output


def test_up_leaves_a_service_of_an_inactive_profile_running(
    cli: Invoke, fake: FakeServer, tmp_path: Path
) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        "name: shop\nservices:\n  web: {image: nginx}\n  adminer: {image: a, profiles: [debug]}\n"
    )
    running = JobSpec.model_validate(
        {
            "job": "shop",
            "meta": {"compose.project": "shop"},
            "groups": {
                name: {"tasks": {name: {"driver": "docker", "config": {"image": image}}}}
                for name, image in (("web", "nginx"), ("adminer", "a"))
            },
        }
    )
    fake.on("GET", "/v1/job/shop", job_info(id="shop", spec=running.model_dump(mode="json")))
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("compose", "up", "-f", str(path), "--detach")
    assert result.exit_code == 0, result.output
    sent = json.loads(fake.calls("POST", "/v1/jobs")[0].content)["job"]
    assert sorted(sent["groups"]) == ["adminer", "web"]
    assert "Service adminer (profiles: debug) is not enabled and is left as it runs" in (
        result.stderr
    )


def test_ps_shows_each_port_as_docker_compose_does(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/jobs", [{"id": "shop", "type": "service", "summary": {}}])
    spec = JobSpec.model_validate(
        {
            "job": "shop",
            "meta": {"compose.project": "shop"},
            "groups": {
                "web": {
                    "network": {"ports": {"p80": {"static": 8080}, "p53": {}}},
                    "tasks": {
                        "web": {
                            "driver": "docker",
                            "config": {
                                "image": "nginx",
                                "ports": {
                                    "p80": {"target": 80, "host_ip": "", "protocol": "tcp"},
                                    "p53": {"target": 53, "host_ip": "127.0.0.1"},
                                },
                            },
                        }
                    },
                }
            },
        }
    )
    fake.on("GET", "/v1/job/shop", job_info(id="shop", spec=spec.model_dump(mode="json")))
    ports = {"p80": {"value": 8080, "host_ip": "10.0.0.5"}, "p53": {"value": 25000}}
    fake.on(
        "GET",
        "/v1/job/shop/allocations",
        [alloc(ALLOC_A, "running", job_id="shop", group="web", ports=ports)],
    )
    result = cli("compose", "ps", "-p", "shop")
    assert result.exit_code == 0, result.output
    assert "127.0.0.1:25000->53, 0.0.0.0:8080->80/tcp" in result.stdout


# -- logs ----------------------------------------------------------------------------------


def _logs_project(fake: FakeServer) -> None:
    fake.on("GET", "/v1/jobs", [{"id": "shop", "type": "service", "summary": {}}])
    spec = JobSpec.model_validate(
        {
            "job": "shop",
            "meta": {"compose.project": "shop"},
            "groups": {
                name: {"tasks": {name: {"driver": "docker", "config": {"image": "x"}}}}
                for name in ("web", "db")
            },
        }
    )
    fake.on("GET", "/v1/job/shop", job_info(id="shop", spec=spec.model_dump(mode="json")))
    fake.on(
        "GET",
        "/v1/job/shop/allocations",
        [
            alloc(ALLOC_A, "failed", job_id="shop", group="web", create_index=5),
            alloc(ALLOC_B, "running", job_id="shop", group="web", create_index=9),  # newer
            alloc(ALLOC_C, "running", index=0, job_id="shop", group="db", create_index=6),
        ],
    )


def test_logs_prints_each_services_newest_containers_with_a_prefix(
    cli: Invoke, fake: FakeServer
) -> None:
    _logs_project(fake)
    fake.on("GET", f"/v1/allocation/{ALLOC_C}/logs", "db ready\n", "db warning\n")
    fake.on("GET", f"/v1/allocation/{ALLOC_B}/logs", "web up\nserving", "")
    result = cli("compose", "logs", "-p", "shop")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "db-1  | db ready",
        "db-1  | db warning",
        "web-1 | web up",
        "web-1 | serving",
    ]
    assert not fake.calls("GET", f"/v1/allocation/{ALLOC_A}/logs")  # replaced
    kinds = [r.url.params["type"] for r in fake.calls("GET", f"/v1/allocation/{ALLOC_C}/logs")]
    assert kinds == ["stdout", "stderr"]


def test_logs_of_one_service_following(cli: Invoke, fake: FakeServer) -> None:
    _logs_project(fake)
    fake.on("GET", f"/v1/allocation/{ALLOC_B}/logs", "line\n")
    result = cli("compose", "logs", "web", "-f", "-p", "shop", "--no-log-prefix")
    assert result.exit_code == 0, result.output
    assert result.stdout == "line\nline\n"  # stdout and stderr (the fake answers alike)
    assert all(
        r.url.params.get("follow") == "true"
        for r in fake.calls("GET", f"/v1/allocation/{ALLOC_B}/logs")
    )
    assert not fake.calls("GET", f"/v1/allocation/{ALLOC_C}/logs")


def test_logs_of_an_unknown_service(cli: Invoke, fake: FakeServer) -> None:
    _logs_project(fake)
    result = cli("compose", "logs", "wbe", "-p", "shop")
    assert result.exit_code == 1
    assert "project shop has no service 'wbe'; its services are: db, web" in result.output


def test_logs_tail(cli: Invoke, fake: FakeServer) -> None:
    _logs_project(fake)
    fake.on("GET", f"/v1/allocation/{ALLOC_C}/logs", "1\n2\n3\n")
    fake.on("GET", f"/v1/allocation/{ALLOC_B}/logs", "")
    result = cli("compose", "logs", "db", "-p", "shop", "--tail", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["db-1 | 2", "db-1 | 3", "db-1 | 2", "db-1 | 3"]
    assert fake.calls("GET", f"/v1/allocation/{ALLOC_C}/logs")[0].url.params["origin"] == "end"


def test_up_no_build_registers_the_image_names_as_written(
    cli: Invoke, fake: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--no-build`` touches no engine (the nodes pull what you pushed yourself)."""
    from podium.cli import compose_build

    def no_engine() -> object:
        raise AssertionError("--no-build must not open the engine")

    monkeypatch.setattr(compose_build, "make_engine", no_engine)
    (tmp_path / "Dockerfile").write_text("FROM podium-test/busybox:1\n")
    path = tmp_path / "compose.yaml"
    path.write_text("name: shop\nservices:\n  web: {build: ., image: reg.io/shop/web:3}\n")
    fake.on("POST", "/v1/jobs", REGISTERED)
    result = cli("compose", "up", "-f", str(path), "-d", "--no-build")
    assert result.exit_code == 0, result.output
    job = json.loads(fake.calls("POST", "/v1/jobs")[0].content)["job"]
    assert job["groups"]["web"]["tasks"]["web"]["config"]["image"] == "reg.io/shop/web:3"
    both = cli("compose", "up", "-f", str(path), "--build", "--no-build")
    assert both.exit_code == 2  # a usage error
    assert "--build and --no-build cannot be used together" in both.output
