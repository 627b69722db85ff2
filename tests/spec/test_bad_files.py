"""Job files that must be refused, and how: path, line, column, message and hint.

Line numbers in the inline documents count from the first line after the
opening quotes (they are dedented before parsing).
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from podium.errors import SpecError, SpecIssue
from podium.spec import load_job_file, parse_job_text

DATA = Path(__file__).parent / "data"


def issues_of(text: str, source: str | None = "job.yaml") -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        parse_job_text(dedent(text), source)
    assert info.value.source == source
    assert info.value.issues, "a SpecError must carry at least one issue"
    return info.value.issues


def only(text: str) -> SpecIssue:
    issues = issues_of(text)
    assert len(issues) == 1, issues
    return issues[0]


def by_path(issues: list[SpecIssue]) -> dict[str, SpecIssue]:
    out = {i.path: i for i in issues}
    assert len(out) == len(issues), issues
    return out


def test_misspelled_key_suggests_the_field_at_its_line() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: mock
                kill_timout: 5s
        """
    )
    assert issue.path == "groups.g.tasks.t.kill_timout"
    assert issue.message == "unknown field 'kill_timout'"
    assert issue.hint == "did you mean 'kill_timeout'?"
    assert (issue.line, issue.column) == (7, 9)  # the key itself


def test_misspelled_required_key_is_one_issue_not_two() -> None:
    # "unknown 'groupz' (did you mean 'groups'?)" says all; no "groups is missing".
    issue = only(
        """\
        job: j
        groupz:
          g: {tasks: {t: {driver: mock}}}
        """
    )
    assert (issue.path, issue.hint, issue.line) == ("groupz", "did you mean 'groups'?", 2)


def test_unknown_key_without_close_match_lists_allowed_fields() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks: {t: {driver: mock, resources: {disk: 1}}}
        """
    )
    assert issue.path == "groups.g.tasks.t.resources.disk"
    assert issue.hint == "allowed fields: cpu, memory, memory_max, cpu_max, devices"
    assert issue.line == 4


def test_suggestion_skips_fields_already_given() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks: {t: {driver: mock, resources: {memory: 1, memroy: 2}}}
        """
    )
    assert issue.hint == "did you mean 'memory_max'?"  # not 'memory': it is given already


def test_wrong_type_names_the_line_and_the_value() -> None:
    issue = only(
        """\
        job: j
        groups:
          web:
            tasks:
              server:
                driver: mock
                resources:
                  cpu: 100
                  memory: lots
        """
    )
    assert issue.path == "groups.web.tasks.server.resources.memory"
    assert issue.message == "expected an integer, got 'lots'"
    assert (issue.line, issue.column) == (9, 19)


def test_number_where_a_string_belongs_hints_at_quotes() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: mock
                env:
                  PORT: 8080
        """
    )
    assert issue.path == "groups.g.tasks.t.env.PORT"
    assert issue.message == "expected a string, got 8080"
    assert issue.hint is not None and "quotes" in issue.hint
    assert issue.line == 8


def test_missing_driver_points_at_the_task() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              server:
                config: {}
        """
    )
    assert issue.path == "groups.g.tasks.server.driver"
    assert issue.message == "required field 'driver' is missing"
    assert issue.line == 5  # `server:`, the mapping the field belongs in


def test_missing_groups() -> None:
    issue = only("job: j\ntype: batch\n")
    assert issue.path == "groups"
    assert issue.message == "required field 'groups' is missing"
    assert issue.line == 1


def test_empty_groups_and_tasks() -> None:
    issues = by_path(
        issues_of(
            """\
            job: j
            groups: {}
            """
        )
    )
    assert issues["groups"].message == "a job needs at least one group"
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks: {}
        """
    )
    assert (issue.path, issue.message, issue.line) == (
        "groups.g.tasks",
        "a group needs at least one task",
        4,
    )


def test_unknown_driver_suggests_a_known_one() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: raw-exec
                config: {command: /bin/true}
        """
    )
    assert issue.path == "groups.g.tasks.t.driver"
    assert issue.message == "unknown driver 'raw-exec'"
    assert issue.hint == "did you mean 'raw_exec'?"
    assert (issue.line, issue.column) == (6, 17)


def test_unknown_driver_without_close_match_lists_drivers() -> None:
    issue = only(
        """\
        job: j
        groups: {g: {tasks: {t: {driver: kubernetes}}}}
        """
    )
    assert issue.hint is not None
    assert issue.hint.startswith("known drivers: ")
    assert "raw_exec" in issue.hint and "mock" in issue.hint


def test_bad_raw_exec_config_field() -> None:
    issues = load_error(DATA / "bad" / "misspelled.yaml").issues
    found = by_path(issues)
    comand = found["groups.web.tasks.server.config.comand"]
    assert comand.message == "unknown field 'comand'"
    assert comand.hint == "did you mean 'command'?"
    assert (comand.line, comand.column) == (8, 11)
    memroy = found["groups.web.tasks.server.resources.memroy"]
    assert (memroy.hint, memroy.line) == ("did you mean 'memory'?", 11)
    # The suggestion covers it: no extra "required field 'command' is missing".
    assert len(issues) == 2


def test_missing_config_command_points_at_the_task() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: raw_exec
        """
    )
    assert issue.path == "groups.g.tasks.t.config.command"
    assert issue.message == "required field 'command' is missing"
    assert issue.line == 5


def test_config_list_items_are_indexed() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: raw_exec
                config:
                  command: /bin/echo
                  args:
                    - hello
                    - 42
        """
    )
    assert issue.path == "groups.g.tasks.t.config.args[1]"
    assert issue.message == "expected a string, got 42"
    assert (issue.line, issue.column) == (11, 15)


def test_config_of_wrong_shape() -> None:
    issue = only(
        """\
        job: j
        groups: {g: {tasks: {t: {driver: raw_exec, config: [ls]}}}}
        """
    )
    assert (issue.path, issue.message) == (
        "groups.g.tasks.t.config",
        "expected a mapping, got a list",
    )


def test_yaml_syntax_error_has_its_line() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks: [a, b
          h: 1
        """
    )
    assert issue.path == ""
    assert issue.message.startswith("invalid YAML: ")
    assert issue.line == 5
    assert issue.hint is not None and "line 4" in issue.hint


def test_tab_indentation_gets_a_hint() -> None:
    issue = only("job: j\ngroups:\n\tg: {}\n")
    assert issue.line == 3
    assert issue.hint is not None and "spaces" in issue.hint


def test_several_documents_are_refused() -> None:
    issue = only("job: a\n---\njob: b\n")
    assert issue.line == 2
    assert "single YAML document" in issue.message


def test_duplicate_key() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            count: 1
            tasks: {t: {driver: mock}}
            count: 2
        """
    )
    assert issue.path == "groups.g.count"
    assert issue.message == "duplicate key 'count'"
    assert issue.hint == "already given on line 4"
    assert (issue.line, issue.column) == (6, 5)


def test_duplicate_key_is_reported_with_other_issues() -> None:
    issues = issues_of(
        """\
        job: j
        job: k
        groups:
          g: {tasks: {t: {driver: mock, cpu: 1}}}
        """
    )
    assert [(i.path, i.line) for i in issues] == [("job", 2), ("groups.g.tasks.t.cpu", 4)]


def test_empty_file() -> None:
    issue = only("")
    assert issue.message == "the job file is empty"
    assert issue.line is None
    assert only("# nothing but a comment\n").message == "the job file is empty"
    assert only("---\n").message == "the job file is empty"


@pytest.mark.parametrize(
    ("text", "got"),
    [("- job: j\n", "a list"), ("just words\n", "'just words'"), ("42\n", "42")],
)
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    issue = only(text)
    assert issue.message == f"a job must be a mapping of fields, got {got}"
    assert issue.line == 1
    assert issue.hint is not None and "groups" in issue.hint


def test_many_issues_at_once_in_file_order() -> None:
    issues = load_error(DATA / "bad" / "many.yaml").issues
    assert [(i.path, i.line) for i in issues] == [
        ("type", 2),
        ("priority", 3),
        ("groups.web.count", 6),
        ("groups.web.tasks.server.driver", 8),
        ("groups.web.tasks.server.kill_timeout", 11),
        ("groups.web.tasks.server.kill_signal", 12),
        ("groups.web.tasks.helper.driver", 14),
    ]
    found = by_path(issues)
    assert found["type"].message == "expected 'service', 'batch' or 'system', got 'servce'"
    assert found["type"].hint == "did you mean 'service'?"
    assert found["priority"].message == "expected an integer, got 'high'"
    assert found["groups.web.count"].message == "must be at least 0, got -1"
    assert found["groups.web.tasks.helper.driver"].hint == "did you mean 'raw_exec'?"


def test_bad_duration() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t: {driver: mock, kill_timeout: 10 seconds}
        """
    )
    assert issue.path == "groups.g.tasks.t.kill_timeout"
    assert issue.message.startswith("'10 seconds' is not a duration")
    assert not issue.message.startswith("Value error")
    assert issue.line == 5


def test_bad_duration_inside_driver_config() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: mock
                config:
                  run_for: soon
        """
    )
    assert issue.path == "groups.g.tasks.t.config.run_for"
    assert "not a duration" in issue.message
    assert issue.line == 8


@pytest.mark.parametrize("signal", ["SIGNOPE", "on", "'15'", "SIG"])
def test_bad_kill_signal(signal: str) -> None:
    issue = only(
        f"""\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: mock
                kill_signal: {signal}
        """
    )
    assert issue.path == "groups.g.tasks.t.kill_signal"
    assert "is not a signal name" in issue.message
    assert issue.line == 7


def test_bad_enum_and_literal_values_get_suggestions() -> None:
    issues = by_path(
        issues_of(
            """\
            job: j
            groups:
              g:
                restart: {mode: fial}
                reschedule: {delay_function: exponentail}
                tasks: {t: {driver: mock}}
            """
        )
    )
    assert issues["groups.g.restart.mode"].hint == "did you mean 'fail'?"
    assert issues["groups.g.reschedule.delay_function"].message == (
        "expected 'constant' or 'exponential', got 'exponentail'"
    )
    assert issues["groups.g.reschedule.delay_function"].hint == "did you mean 'exponential'?"


def test_bad_names() -> None:
    issues = by_path(
        issues_of(
            """\
            job: "my job"
            groups:
              "web.v2":
                tasks: {"-bad": {driver: mock}}
            """
        )
    )
    assert "job id 'my job'" in issues["job"].message
    assert "task name '-bad'" in issues['groups["web.v2"].tasks'].message


def test_non_string_key_points_at_the_key() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: mock
                env: {OK: "1", 5: x}
        """
    )
    assert issue.path == "groups.g.tasks.t.env.5"
    assert (issue.line, issue.column) == (7, 24)


def test_null_where_a_mapping_belongs() -> None:
    issue = only(
        """\
        job: j
        groups:
          g:
            tasks:
              t:
                driver: mock
                resources:
        """
    )
    assert issue.path == "groups.g.tasks.t.resources"
    assert issue.message == "expected a mapping, got null"


def test_unsafe_tags_are_refused() -> None:
    issue = only("job: !!python/object:os.system ls\n")
    assert issue.message.startswith("invalid YAML")
    assert issue.line == 1


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 8):
        prev = f"*a{n - 1}"
        lines.append(f"a{n}: &a{n} [{', '.join([prev] * 10)}]")
    issue = only("\n".join(lines) + "\n")
    assert "expands to more than" in issue.message


def test_control_character_is_refused_with_position() -> None:
    issue = only("job: j\ngroups: \x07\n")
    assert (issue.line, issue.column) == (2, 9)


def load_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_job_file(path)
    assert info.value.source == str(path)
    return info.value


def test_missing_file() -> None:
    error = load_error(DATA / "no-such-file.yaml")
    assert len(error.issues) == 1
    assert "no such file" in error.issues[0].message.lower()
    assert str(error).startswith(str(DATA / "no-such-file.yaml") + ": cannot read job file")


def test_directory_is_not_a_job_file() -> None:
    error = load_error(DATA)
    assert "directory" in error.issues[0].message.lower()


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"job: j\nmeta: {name: caf\xe9}\n")
    issue = load_error(path).issues[0]
    assert "not UTF-8" in issue.message
    assert (issue.line, issue.column) == (2, 17)


def test_str_renders_file_line_column_path_message_hint() -> None:
    error = load_error(DATA / "bad" / "misspelled.yaml")
    lines = str(error).splitlines()
    source = str(DATA / "bad" / "misspelled.yaml")
    assert lines == [
        f"{source}:8:11: groups.web.tasks.server.config.comand: unknown field 'comand'"
        " (did you mean 'command'?)",
        f"{source}:11:11: groups.web.tasks.server.resources.memroy: unknown field 'memroy'"
        " (did you mean 'memory'?)",
    ]


def test_str_without_source_or_line() -> None:
    with pytest.raises(SpecError) as info:
        parse_job_text("")
    assert str(info.value).startswith("<input>: the job file is empty")


def test_issue_dicts_for_the_api() -> None:
    issue = only("job: j\ngroups: {g: {tasks: {t: {driver: mock, x: 1}}}}\n")
    assert issue.as_dict() == {
        "path": "groups.g.tasks.t.x",
        "message": "unknown field 'x'",
        "line": 2,
        "column": 40,
        "hint": issue.hint,
    }


def test_placement_rules_are_checked_where_they_are_written() -> None:
    text = """job: x
constraints:
  - attribute: ${attr.cpu.arch
    value: amd64
groups:
  g:
    constraints:
      - {attribute: "${nod.name}", value: a}
      - {attribute: "${attr.os.name}", operator: regexp, value: "(unclosed"}
    spread:
      - attribute: ${meta.rack}
        targets: [{value: r1, percent: 80}, {value: r2, percent: 30}]
    tasks:
      t: {driver: mock}
"""
    with pytest.raises(SpecError) as info:
        parse_job_text(text, "rules.yaml")
    found = {i.path: i for i in info.value.issues}
    assert found["constraints[0].attribute"].line == 3
    assert "is not a node attribute" in found["constraints[0].attribute"].message
    assert "${nod.name}" in found["groups.g.constraints[0].attribute"].message
    assert "regular expression" in found["groups.g.constraints[1]"].message
    assert "110%" in found["groups.g.spread[0]"].message
