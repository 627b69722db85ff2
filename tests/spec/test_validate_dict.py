"""``validate_job_dict``: the server's entry point for ``POST /v1/jobs`` bodies (no lines)."""

from __future__ import annotations

from typing import Any

import pytest

from podium.errors import SpecError, SpecIssue
from podium.models import taskconfig
from podium.models.job import JobType
from podium.models.taskconfig import DriverConfig
from podium.spec import Locations, format_path, validate_job_dict


def body(**task: Any) -> dict[str, Any]:
    return {"job": "api-job", "groups": {"g": {"tasks": {"t": {"driver": "mock", **task}}}}}


def error_of(data: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_job_dict(data, source="POST /v1/jobs")
    return info.value


def test_valid_dict() -> None:
    spec = validate_job_dict(body(config={"run_for": "1s"}, kill_timeout=2))
    assert spec.id == "api-job"
    assert spec.type == JobType.SERVICE
    assert spec.group("g").tasks["t"].kill_timeout == 2.0


def test_round_trip_through_json_dump() -> None:
    spec = validate_job_dict(body(kill_timeout="1m30s"))
    again = validate_job_dict(spec.model_dump(mode="json"))
    assert again == spec


def test_issues_have_paths_but_no_lines() -> None:
    error = error_of(
        {
            "job": "api-job",
            "groups": {
                "g": {
                    "count": "many",
                    "tasks": {"t": {"driver": "raw_exec", "config": {"comand": "/bin/sh"}}},
                }
            },
        }
    )
    assert error.source == "POST /v1/jobs"
    assert [(i.path, i.line, i.column) for i in error.issues] == [
        ("groups.g.count", None, None),
        ("groups.g.tasks.t.config.comand", None, None),
    ]
    assert error.issues[1].hint == "did you mean 'command'?"
    assert str(error).splitlines()[0] == (
        "POST /v1/jobs: groups.g.count: expected an integer, got 'many'"
    )


def test_locations_add_lines() -> None:
    locs = Locations(
        values={(): (1, 1), ("groups", "g", "tasks", "t", "driver"): (7, 17)},
        keys={("groups", "g", "tasks", "t"): (5, 7)},
    )
    with pytest.raises(SpecError) as info:
        validate_job_dict(body(driver="nope"), "job.yaml", locs)
    assert info.value.issues == [
        SpecIssue(
            "groups.g.tasks.t.driver",
            "unknown driver 'nope'",
            7,
            17,
            "known drivers: " + ", ".join(sorted(taskconfig.DRIVER_CONFIGS)),
        )
    ]


@pytest.mark.parametrize("data", [None, [], "job", 3])
def test_body_must_be_a_mapping(data: object) -> None:
    error = error_of(data)
    assert len(error.issues) == 1
    assert error.issues[0].path == ""
    assert error.issues[0].message.startswith("a job must be a mapping of fields, got ")


def test_drivers_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    class PodmanConfig(DriverConfig):
        image: str

    assert error_of(body(driver="podman", config={"image": "redis"})).issues[0].message == (
        "unknown driver 'podman'"
    )
    monkeypatch.setitem(taskconfig.DRIVER_CONFIGS, "podman", PodmanConfig)
    spec = validate_job_dict(body(driver="podman", config={"image": "redis"}))
    assert spec.group("g").tasks["t"].config == {"image": "redis"}
    issue = error_of(body(driver="podman", config={"imag": "redis"})).issues[0]
    assert (issue.path, issue.hint) == ("groups.g.tasks.t.config.imag", "did you mean 'image'?")
    issue = error_of(body(driver="podmann")).issues[0]
    assert issue.hint == "did you mean 'podman'?"


def test_config_checked_even_when_other_fields_fail() -> None:
    data = body(config={"run_for": "forever"}, resources={"cpu": 0})
    paths = {i.path for i in error_of(data).issues}
    assert paths == {"groups.g.tasks.t.config.run_for", "groups.g.tasks.t.resources.cpu"}


def test_case_slip_in_field_name_is_suggested() -> None:
    data = {"job": "j", "groups": {"g": {"tasks": {"t": {"Driver": "mock"}}}}}
    issues = error_of(data).issues
    assert [(i.path, i.hint) for i in issues] == [
        ("groups.g.tasks.t.Driver", "did you mean 'driver'?")
    ]


def test_input_is_not_modified() -> None:
    data = body(config={"run_for": "1s"})
    before = repr(data)
    validate_job_dict(data)
    assert repr(data) == before


@pytest.mark.parametrize(
    ("path", "data", "text"),
    [
        (
            ("groups", "web", "tasks", "t", "resources", "memory"),
            None,
            "groups.web.tasks.t.resources.memory",
        ),
        (("config", "args", 1), {"config": {"args": ["a", "b"]}}, "config.args[1]"),
        (("env", 5), {"env": {5: "x"}}, "env.5"),
        (("groups", "web.v2", "count"), None, 'groups["web.v2"].count'),
        (("meta", "has space"), None, 'meta["has space"]'),
        ((), None, ""),
        (("a", 0), None, "a[0]"),
    ],
)
def test_format_path(path: tuple[object, ...], data: object, text: str) -> None:
    assert format_path(path, data) == text


def test_locations_fall_back_to_ancestors() -> None:
    locs = Locations(
        values={(): (1, 1), ("a",): (2, 3), ("a", 0): (3, 5)},
        keys={("a",): (2, 1)},
    )
    assert locs.of_value(("a", 0, "b")) == (3, 5)
    assert locs.of_key(("a", 0, "b")) == (3, 5)
    assert locs.of_key(("a",)) == (2, 1)
    assert locs.of_missing(("a", 0, "b")) == (3, 5)
    assert locs.of_missing(("a", 7, "b")) == (2, 1)
    assert Locations().of_missing(("x",)) is None
