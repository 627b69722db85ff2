"""``podium job validate FILE``: what `job run` checks before it sends, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podium.cli import common

from .conftest import Invoke

GOOD = """\
job: web
groups:
  web:
    count: 2
    tasks:
      server:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["60"]}
      sidecar:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["60"]}
"""

BAD = """\
job: web
groups:
  web:
    count: -1
    tasks:
      server:
        driver: raw_exec
        config:
          comand: /bin/true
"""


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any client made during these tests is an error: validate is offline."""

    def refuse(address: str) -> object:
        raise AssertionError(f"job validate made a client for {address}")

    monkeypatch.setattr(common, "client_factory", refuse)


def test_a_valid_file(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(GOOD)
    result = cli("job", "validate", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: job 'web' is valid (service; 1 group, 2 tasks)\n"


def test_an_invalid_file_lists_every_issue_with_line_and_column(
    cli: Invoke, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = cli("job", "validate", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    err = result.stderr
    assert "Error: invalid job specification (2 issues)" in err
    assert f"{path}:4:12: groups.web.count:" in err
    assert f"{path}:9:11: " in err and "did you mean 'command'" in err


def test_issues_as_json(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = cli("job", "validate", str(path), "-o", "json")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "invalid_spec" and error["exit_code"] == 1
    assert [(i["line"], i["column"]) for i in error["issues"]] == [(4, 12), (9, 11)]
    assert all(i["file"] == str(path) for i in error["issues"])


def test_a_valid_file_as_json_is_the_full_spec(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(GOOD)
    result = cli("job", "validate", str(path), "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["job"] == "web" and doc["file"] == str(path)
    assert doc["spec"]["groups"]["web"]["tasks"]["server"]["resources"]["memory"] == 300


def test_a_missing_file_is_said_to_be_missing(cli: Invoke, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli("job", "validate", str(missing))
    assert result.exit_code == 1
    assert result.stderr == f"Error: job file {missing} does not exist\n"
    assert "invalid job specification" not in result.stderr
    as_json = json.loads(cli("job", "validate", str(missing), "-o", "json").stderr)
    assert as_json["error"]["kind"] == "file"
    directory = cli("job", "validate", str(tmp_path))
    assert directory.exit_code == 1 and "is a directory, not a file" in directory.stderr


def test_a_colon_in_the_file_is_not_an_emoji(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(
        "job: web\ngroups:\n  web:\n    tasks:\n      t:\n        driver: mock\n"
        '        config: {run_for: ":100:"}\n'
    )
    result = cli("job", "validate", str(path))
    assert result.exit_code == 1
    assert ":100:" in result.stderr and "\N{HUNDRED POINTS SYMBOL}" not in result.stderr
