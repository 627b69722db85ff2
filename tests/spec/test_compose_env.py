"""Compose's ``${VAR}`` interpolation and ``.env`` files."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.errors import SpecError
from podium.spec import convert_compose, convert_compose_project, load_compose_file
from podium.spec.compose_env import InterpolationError, Interpolator, interpolate, parse_dotenv

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain", "plain"),
        ("${SET}", "value"),
        ("$SET", "value"),
        ("a-$SET-b", "a-value-b"),
        ("$SET.x", "value.x"),
        ("${UNSET}", ""),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${UNSET-default}", "default"),
        ("${SET:-default}", "value"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-a ${UNSET2:-b} c}", "a b c"),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("cost: $$5", "cost: $5"),
        ("${SET:?must}", "value"),
        ("${EMPTY?must}", ""),
    ],
)
def test_interpolation(template: str, expected: str) -> None:
    assert interpolate(template, ENV) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${UNSET:?set it please}", "required variable UNSET is not set: set it please"),
        ("${EMPTY:?}", "required variable EMPTY is empty"),
        ("${UNSET?x}", "required variable UNSET is not set: x"),
        ("${SET", "is never closed"),
        ("$ 5", "write $$ for a literal dollar sign"),
        ("${1X}", "must be followed by a variable name"),
        ("${SET/x}", "after ${SET write"),
    ],
)
def test_interpolation_errors(template: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=None) as info:
        interpolate(template, ENV)
    assert message in str(info.value)


def test_unset_variables_are_collected_once_and_unused_defaults_are_not() -> None:
    interp = Interpolator(ENV)
    interp.expand("$A ${A} ${SET:-${B}} ${C:-x}")
    assert interp.unset == ["A"]


def test_dotenv_parsing() -> None:
    text = (
        "# comment\n"
        "\n"
        "A=1\n"
        "export B = two \n"
        "C='single $A'\n"
        'D="double $A\\n"\n'
        "E=unquoted # trailing comment\n"
        "F=${A}-${MISSING:-d}\n"
        "G\n"
        'H="multi\n'
        'line"\n'
        "bad key=1\n"
        "I='open\n"
    )
    values, problems = parse_dotenv(text, {"G": "from-env"})
    assert values == {
        "A": "1",
        "B": "two",
        "C": "single $A",
        "D": "double 1\n",
        "E": "unquoted",
        "F": "1-d",
        "G": "from-env",
        "H": "multi\nline",
    }
    assert [(p.line, p.message) for p in problems] == [
        (12, "'bad key' is not a variable name"),
        (13, "the ' quote is never closed"),
    ]


def test_interpolation_error_carries_the_compose_line() -> None:
    with pytest.raises(SpecError) as info:
        convert_compose(
            "services:\n  w:\n    image: ${IMAGE:?set IMAGE to the tag to run}\n", "p", {}
        )
    (issue,) = info.value.issues
    assert (issue.path, issue.line, issue.column) == ("services.w.image", 3, 12)
    assert issue.message == "required variable IMAGE is not set: set IMAGE to the tag to run"


def test_interpolated_numbers_and_booleans_are_accepted() -> None:
    text = "services:\n  w:\n    image: x\n    privileged: ${PRIV}\n    deploy:\n      replicas: ${N:-3}\n"
    job = convert_compose(text, "p", {"PRIV": "true"})[0]
    assert job.groups["w"].count == 3
    assert job.groups["w"].tasks["w"].config["privileged"] is True


def test_unset_variable_is_a_warning() -> None:
    project = convert_compose_project("services:\n  w: {image: 'x:${TAG}'}\n", "p", {})
    assert project.jobs[0].groups["w"].tasks["w"].config["image"] == "x:"
    assert project.warnings == ["variable TAG is not set; it was replaced by an empty string"]


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=from-dotenv\nOTHER=dotenv\n")
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  w: {image: 'x:${TAG}', environment: [O=$OTHER]}\n")
    job = load_compose_file(f, "p", env={"TAG": "from-shell"})[0]
    t = job.groups["w"].tasks["w"]
    assert t.config["image"] == "x:from-shell"
    assert t.env == {"O": "dotenv"}


def test_bad_dotenv_file_is_reported_against_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OK=1\nnot a line\n")
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  w: {image: x}\n")
    with pytest.raises(SpecError) as info:
        load_compose_file(f, "p", env={})
    assert info.value.source == str(tmp_path / ".env")
    assert info.value.issues[0].line == 2
