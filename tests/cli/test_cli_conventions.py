"""What every command does alike: --version, completion, -o json|yaml, errors as data, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from podium import __version__
from podium.cli import common
from podium.cli.main import app
from podium.client import Client

from .conftest import Invoke
from .fakes import (
    ALLOC_A,
    EVAL_ID,
    FakeServer,
    alloc,
    dump,
    evaluation,
    job_info,
    node_info,
)

# -- --version and completion ---------------------------------------------------------------


def test_version_flag_and_command(cli: Invoke) -> None:
    flag = cli("--version")
    assert flag.exit_code == 0 and flag.stdout == f"podium {__version__}\n"
    assert cli("version").stdout == flag.stdout
    assert json.loads(cli("version", "-o", "json").stdout) == {"version": __version__}
    assert yaml.safe_load(cli("version", "-o", "yaml").stdout) == {"version": __version__}


def test_bash_completion_script(cli: Invoke) -> None:
    result = cli("completion", "bash")
    assert result.exit_code == 0, result.output
    script = result.stdout
    assert "_podium_completion()" in script
    assert "complete -o default -F _podium_completion podium" in script
    assert "_PODIUM_COMPLETE=complete_bash" in script


@pytest.mark.parametrize("shell", ["zsh", "fish", "powershell"])
def test_other_shells(cli: Invoke, shell: str) -> None:
    result = cli("completion", shell)
    assert (
        result.exit_code == 0 and "podium" in result.stdout and "_PODIUM_COMPLETE" in result.stdout
    )


def test_an_unknown_shell_is_a_usage_error(cli: Invoke) -> None:
    result = cli("completion", "tcsh")
    assert result.exit_code == 2 and "tcsh" in result.stderr


def test_completion_answers_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the installed script asks the program (``_PODIUM_COMPLETE=complete_bash``)."""
    from typer.testing import CliRunner

    env = {"_PODIUM_COMPLETE": "complete_bash", "COMP_WORDS": "podium job st", "COMP_CWORD": "2"}
    result = CliRunner().invoke(app, [], env=env, prog_name="podium")
    assert result.stdout.split() == ["status", "stop"]


def test_help_documents_the_exit_statuses(cli: Invoke) -> None:
    text = cli("--help").stdout
    assert "Exit status:" in text
    for line in ("0    success", "2    usage error", "3    job run", "4    a --timeout", "130"):
        assert line in text
    assert '{"error": {"kind"' in text
    assert "--install-completion" in text and "--version" in text


# -- -o json|yaml on the read commands ------------------------------------------------------


def _read_routes(fake: FakeServer) -> None:
    fake.on("GET", "/v1/jobs", [{"id": "web", "summary": {}}])
    fake.on("GET", "/v1/job/web", job_info())
    fake.on("GET", "/v1/job/web/versions", [])
    fake.on("GET", f"/v1/allocation/{ALLOC_A[:4]}", alloc())
    fake.on("GET", "/v1/nodes", [node_info()])
    fake.on("GET", "/v1/evaluations", [evaluation()])
    fake.on("GET", f"/v1/evaluation/{EVAL_ID[:4]}", evaluation())
    fake.on("GET", "/v1/deployments", [])
    fake.on("GET", "/v1/services", [{"name": "web", "instances": 1, "healthy": 1}])
    fake.on("GET", "/v1/vars", [])


READS = [
    ("job", "status"),
    ("job", "status", "web"),
    ("job", "history", "web"),
    ("alloc", "status", ALLOC_A[:4]),
    ("node", "status"),
    ("eval", "list"),
    ("eval", "status", EVAL_ID[:4]),
    ("deployment", "list"),
    ("service", "list"),
    ("var", "list"),
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a) for a in READS])
def test_every_read_command_speaks_json_and_yaml(
    cli: Invoke, fake: FakeServer, args: tuple[str, ...]
) -> None:
    _read_routes(fake)
    as_json = cli(*args, "-o", "json")
    assert as_json.exit_code == 0, as_json.output
    as_yaml = cli(*args, "-o", "yaml")
    assert as_yaml.exit_code == 0, as_yaml.output
    # the same document, the API's answer as it came
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)
    if json.loads(as_json.stdout):  # block YAML, not JSON (an empty list is "[]" in both)
        assert not as_yaml.stdout.lstrip().startswith(("{", "["))


def test_inspect_in_yaml_is_the_spec(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web", job_info())
    result = cli("job", "inspect", "web", "-o", "yaml")
    assert yaml.safe_load(result.stdout) == job_info()["spec"]


# -- errors as data --------------------------------------------------------------------------


def test_not_found_is_a_document_on_stderr(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/nosuch", {"error": "job 'nosuch' not found"}, status=404)
    result = cli("job", "status", "nosuch", "-o", "json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert json.loads(result.stderr) == {
        "error": {
            "kind": "not_found",
            "message": "job 'nosuch' not found",
            "status": 404,
            "exit_code": 1,
        }
    }
    as_yaml = cli("job", "status", "nosuch", "-o", "yaml")
    assert yaml.safe_load(as_yaml.stderr)["error"]["kind"] == "not_found"
    people = cli("job", "status", "nosuch")
    assert people.stderr.startswith("Error: job 'nosuch' not found")


def test_a_server_error_keeps_its_status(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/nodes", {"error": "boom"}, status=500)
    error = json.loads(cli("node", "status", "-o", "json").stderr)["error"]
    assert error == {"kind": "api", "message": "boom (HTTP 500)", "status": 500, "exit_code": 1}


def test_an_unreachable_server(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        common, "client_factory", lambda a: Client(a, transport=httpx.MockTransport(refuse))
    )
    result = cli("job", "status", "-o", "json")
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "unreachable" and error["status"] is None
    assert "is `podium agent --dev` running?" in error["message"]
    assert error["address"].startswith("http://")


def test_a_usage_error_is_a_document_when_json_is_asked(cli: Invoke) -> None:
    result = cli("job", "status", "-o", "json", "--bogus")
    assert result.exit_code == 2
    assert json.loads(result.stderr) == {
        "error": {
            "kind": "usage",
            "message": "No such option: --bogus",
            "status": None,
            "exit_code": 2,
        }
    }
    typo = cli("jbo", "status", "--output=yaml")
    assert typo.exit_code == 2
    assert yaml.safe_load(typo.stderr)["error"]["kind"] == "usage"
    # without -o, Click's usual usage text
    plain = cli("job", "status", "--bogus")
    assert plain.exit_code == 2 and "No such option" in plain.stderr
    assert not plain.stderr.lstrip().startswith("{")


def test_a_bad_value_is_a_usage_error_with_json_too(cli: Invoke, fake: FakeServer) -> None:
    result = cli("job", "stop", "web", "--timeout", "soon", "-o", "json")
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["kind"] == "usage"
    assert fake.requests == []


def test_requested_output_reads_every_spelling() -> None:
    assert common.requested_output(["job", "-o", "json"]) == common.Output.JSON
    assert common.requested_output(["-ojson"]) == common.Output.JSON
    assert common.requested_output(["--output=yaml"]) == common.Output.YAML
    assert common.requested_output(["--output", "table"]) == common.Output.TABLE
    assert common.requested_output(["-o"]) == common.Output.TABLE
    assert common.requested_output(["--", "-o", "json"]) == common.Output.TABLE


def test_an_invalid_job_file_as_data(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "job: web\ngroups:\n  web:\n    tasks:\n      t:\n        driver: mock\n        bogus: 1\n"
    )
    result = cli("job", "run", str(path), "-o", "json")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["kind"] == "invalid_spec" and error["status"] is None
    (issue,) = error["issues"]
    assert issue["file"] == str(path) and issue["line"] == 7 and issue["column"] == 9
    assert issue["text"].startswith(f"{path}:7:9: ")
    assert fake.requests == []


def test_dump_keeps_long_strings_whole() -> None:
    text = "x" * 500
    assert common.dump({"a": text}, common.Output.YAML) == f"a: {text}\n"
    assert json.loads(common.dump(dump([alloc()]), common.Output.JSON))[0]["id"] == ALLOC_A
