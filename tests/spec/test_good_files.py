"""Job files that must load, and what they load as (defaults, durations, YAML quirks)."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from podium.models.job import JobSpec, JobType, RestartMode
from podium.models.taskconfig import ExecConfig, parse_config
from podium.spec import load_job_file, parse_job_text

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).parents[2] / "examples"


def parse(text: str) -> JobSpec:
    return parse_job_text(dedent(text), "job.yaml")


def test_minimal_file_fills_defaults() -> None:
    spec = load_job_file(DATA / "good" / "minimal.yaml")
    assert spec.id == "minimal"
    assert spec.type == JobType.SERVICE
    assert spec.priority == 50
    group = spec.group("main")
    assert group.count == 1
    task = group.tasks["only"]
    assert task.driver == "mock"
    assert task.config == {}
    assert (task.resources.cpu, task.resources.memory) == (100, 300)
    assert task.kill_timeout == 5.0
    assert task.kill_signal == "SIGTERM"


def test_full_file_keeps_every_field() -> None:
    spec = load_job_file(DATA / "good" / "full.yaml")
    assert spec.type == JobType.BATCH
    assert spec.priority == 70
    assert spec.meta == {"owner": "team-a", "on": "kept as a string key"}
    group = spec.group("workers")
    assert group.count == 3
    assert group.restart.attempts == 5
    assert group.restart.interval == 600.0
    assert group.restart.delay == 0.5
    assert group.restart.mode == RestartMode.DELAY
    assert group.reschedule.delay_function == "exponential"
    assert group.reschedule.max_delay == 120.0
    assert group.reschedule.unlimited is False
    worker = group.tasks["worker"]
    assert worker.kill_timeout == 90.0
    assert worker.kill_signal == "SIGINT"
    assert worker.env == {"MODE": "fast", "ENABLED": "yes"}
    assert worker.user == "nobody"
    assert (worker.logs.max_files, worker.logs.max_file_size) == (3, 5)
    config = parse_config(worker.driver, worker.config)
    assert isinstance(config, ExecConfig)
    assert config.args == ["python3", "-c", "print('hi')"]


def test_json_form_loads_the_same_job() -> None:
    # full.json is full.yaml written as JSON and indented with tabs, which
    # YAML forbids but JSON allows; both must give the same spec.
    assert "\t" in (DATA / "good" / "full.json").read_text()
    from_json = load_job_file(DATA / "good" / "full.json")
    from_yaml = load_job_file(DATA / "good" / "full.yaml")
    assert from_json == from_yaml


def test_single_line_json() -> None:
    spec = parse_job_text(
        '{"job": "j", "groups": {"g": {"count": 2, "tasks": {"t": {"driver": "mock",'
        ' "config": {"run_for": 1e1}}}}}}'
    )
    assert spec.group("g").count == 2
    assert spec.group("g").tasks["t"].config == {"run_for": 10.0}


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h30m", 5400.0), ("0", 0.0), ("7", 7.0)],
)
def test_durations(written: str, seconds: float) -> None:
    spec = parse(
        f"""\
        job: j
        groups:
          g:
            restart: {{delay: {written}}}
            tasks:
              t: {{driver: mock, kill_timeout: {written}}}
        """
    )
    assert spec.group("g").restart.delay == seconds
    assert spec.group("g").tasks["t"].kill_timeout == seconds


def test_policy_defaults_follow_job_type() -> None:
    text = """\
        job: j
        type: {kind}
        groups:
          g:
            restart: {{attempts: 9}}
            tasks: {{t: {{driver: mock}}}}
        """
    service = parse(text.format(kind="service")).group("g")
    batch = parse(text.format(kind="batch")).group("g")
    # Given values stay; the rest comes from the job type.
    assert service.restart.attempts == batch.restart.attempts == 9
    assert service.restart.interval == 1800.0
    assert batch.restart.interval == 86400.0
    assert service.reschedule.unlimited is True
    assert batch.reschedule.unlimited is False
    assert batch.reschedule.attempts == 1


def test_numeric_string_is_coerced_by_lax_mode() -> None:
    spec = parse(
        """\
        job: j
        groups:
          g:
            count: "3"
            tasks: {t: {driver: mock}}
        """
    )
    assert spec.group("g").count == 3


def test_yaml_1_1_words_stay_strings() -> None:
    # Under YAML 1.1 `on`, `yes` and `off` are booleans and `1:30` is 90.
    spec = parse(
        """\
        job: j
        meta:
          on: yes
          off: "x"
          time: 1:30
        groups:
          g:
            tasks:
              t:
                driver: mock
                env: {A: on, B: no, C: 2024-01-01}
        """
    )
    assert spec.meta == {"on": "yes", "off": "x", "time": "1:30"}
    assert spec.group("g").tasks["t"].env == {"A": "on", "B": "no", "C": "2024-01-01"}


def test_yaml_1_2_numbers() -> None:
    spec = parse(
        """\
        job: j
        priority: 017
        groups:
          g:
            count: 0x2
            tasks:
              t:
                driver: mock
                resources: {cpu: 0o20, memory: +64}
        """
    )
    assert spec.priority == 17  # decimal, not YAML 1.1 octal
    assert spec.group("g").count == 2
    assert spec.group("g").tasks["t"].resources.cpu == 16
    assert spec.group("g").tasks["t"].resources.memory == 64


def test_true_and_false_are_booleans() -> None:
    spec = parse(
        """\
        job: j
        groups:
          g:
            reschedule: {unlimited: True}
            tasks: {t: {driver: mock, config: {start_error_recoverable: true}}}
        """
    )
    assert spec.group("g").reschedule.unlimited is True


def test_anchors_and_merge_keys() -> None:
    spec = parse(
        """\
        job: j
        groups:
          g:
            tasks:
              a: &base
                driver: raw_exec
                config: {command: /bin/true}
                resources: {cpu: 200, memory: 64}
              b:
                <<: *base
                config: {command: /bin/false}
        """
    )
    tasks = spec.group("g").tasks
    assert tasks["b"].resources.memory == 64
    assert tasks["b"].config == {"command": "/bin/false"}


def test_utf8_bom_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(
        b"\xef\xbb\xbf# a comment\njob: j\ngroups: {g: {tasks: {t: {driver: mock}}}}\n"
    )
    assert load_job_file(path).id == "j"


def test_load_job_file_takes_str_paths() -> None:
    assert load_job_file(str(DATA / "good" / "minimal.yaml")).id == "minimal"


EXAMPLE_FILES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".yaml", ".yml", ".json"})


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    spec = load_job_file(path)
    for group in spec.groups.values():
        for task in group.tasks.values():
            parse_config(task.driver, task.config)


def test_examples_are_there() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    assert {"hello.yaml", "batch.yaml"} <= names


def test_hello_example_shape() -> None:
    spec = load_job_file(EXAMPLES / "hello.yaml")
    assert (spec.id, spec.type) == ("hello", JobType.SERVICE)
    web = spec.group("web")
    assert web.count == 2
    assert (web.restart.attempts, web.restart.delay) == (2, 1.0)
    server = web.tasks["server"]
    assert server.driver == "raw_exec"
    assert (server.resources.cpu, server.resources.memory) == (100, 64)
    config = parse_config("raw_exec", server.config)
    assert isinstance(config, ExecConfig)
    assert config.command == "/bin/sh"
    assert config.args[0] == "-c"
    assert "PODIUM_ALLOC_INDEX" in config.args[1]


def test_batch_example_is_batch() -> None:
    spec = load_job_file(EXAMPLES / "batch.yaml")
    assert spec.type == JobType.BATCH
