"""``podium var put|get|list|delete`` against the scripted fake server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from podium.cli.main import app

from .conftest import Invoke
from .fakes import FakeServer


def variable(items: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "path": "app/config",
        "namespace": "default",
        "create_index": 7,
        "modify_index": 9,
        "create_time": 1700000000.0,
        "modify_time": 1700000000.0,
        "items": items if items is not None else {"db_url": "postgres://db/app", "user": "x"},
        **kw,
    }


def meta(path: str, index: int = 9) -> dict[str, Any]:
    v = variable(path=path, modify_index=index)
    v.pop("items")
    return v


def sent(fake: FakeServer, method: str, path: str) -> Any:
    calls = fake.calls(method, path)
    assert calls, f"no {method} {path}"
    return json.loads(calls[-1].content) if calls[-1].content else None


def test_put_key_value_pairs(cli: Invoke, fake: FakeServer) -> None:
    fake.on("PUT", "/v1/var/app/config", variable())
    result = cli("var", "put", "app/config", "db_url=postgres://db/app?ssl=1", "user=x", "empty=")
    assert result.exit_code == 0, result.output
    assert sent(fake, "PUT", "/v1/var/app/config") == {
        "items": {"db_url": "postgres://db/app?ssl=1", "user": "x", "empty": ""}
    }
    assert "cas" not in fake.calls("PUT", "/v1/var/app/config")[0].url.params
    assert "Wrote variable app/config (2 items, modify index 9)" in result.output


def test_put_with_cas_and_json_output(cli: Invoke, fake: FakeServer) -> None:
    fake.on("PUT", "/v1/var/app/config", variable())
    result = cli("var", "put", "app/config", "a=b", "--cas", "0", "-o", "json")
    assert result.exit_code == 0, result.output
    assert fake.calls("PUT", "/v1/var/app/config")[0].url.params["cas"] == "0"
    assert json.loads(result.stdout) == variable()


def test_put_from_stdin_and_from_a_file(fake: FakeServer, tmp_path: Path) -> None:
    fake.on("PUT", "/v1/var/app/config", variable())
    runner = CliRunner()
    env = {"COLUMNS": "200", "PODIUM_ADDR": None}
    result = runner.invoke(
        app, ["var", "put", "app/config", "-"], input='{"db_url": "from-stdin"}', env=env
    )
    assert result.exit_code == 0, result.output
    assert sent(fake, "PUT", "/v1/var/app/config") == {"items": {"db_url": "from-stdin"}}

    doc = tmp_path / "vars.json"
    doc.write_text(json.dumps({"items": {"db_url": "from-file", "user": "y"}}))
    result = runner.invoke(app, ["var", "put", "app/config", f"@{doc}", "user=z"], env=env)
    assert result.exit_code == 0, result.output
    # later arguments win
    assert sent(fake, "PUT", "/v1/var/app/config") == {
        "items": {"db_url": "from-file", "user": "z"}
    }


def test_put_refuses_what_it_cannot_read(cli: Invoke, fake: FakeServer, tmp_path: Path) -> None:
    result = cli("var", "put", "app/config", "novalue")
    assert result.exit_code == 2
    assert "'novalue' is not KEY=VALUE" in result.output
    result = cli("var", "put", "app/config", f"@{tmp_path / 'missing.json'}")
    assert result.exit_code == 1 and "cannot read" in result.output
    (tmp_path / "list.json").write_text("[1, 2]")
    result = cli("var", "put", "app/config", f"@{tmp_path / 'list.json'}")
    assert result.exit_code == 1 and "JSON object of items" in result.output
    (tmp_path / "num.json").write_text('{"port": 5432}')
    result = cli("var", "put", "app/config", f"@{tmp_path / 'num.json'}")
    assert result.exit_code == 1 and "'port' must be a string" in result.output
    result = cli("var", "put", "../etc", "a=b")
    assert result.exit_code == 2 and "variable path '../etc'" in result.output
    assert fake.requests == []  # nothing was sent


def test_put_conflict(cli: Invoke, fake: FakeServer) -> None:
    fake.on(
        "PUT",
        "/v1/var/app/config",
        {"error": "variable 'app/config' changed: check-and-set expected index 3, but it is at 9"},
        status=409,
    )
    result = cli("var", "put", "app/config", "a=b", "--cas", "3")
    assert result.exit_code == 1
    assert "check-and-set expected index 3" in result.output


def test_get_table_json_and_one_value(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/var/app/config", variable())
    result = cli("var", "get", "app/config")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["Path", "=", "app/config"] in lines
    assert ["Modify", "Index", "=", "9"] in lines
    assert ["Key", "Value"] in lines
    assert ["db_url", "postgres://db/app"] in lines and ["user", "x"] in lines

    result = cli("var", "get", "app/config", "-o", "json")
    assert json.loads(result.stdout) == variable()

    result = cli("var", "get", "app/config", "db_url")
    assert result.exit_code == 0 and result.stdout == "postgres://db/app\n"

    result = cli("var", "get", "app/config", "nope")
    assert result.exit_code == 1
    assert "has no item 'nope' (it has: db_url, user)" in result.output


def test_get_missing(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/var/app/nope", {"error": "variable 'app/nope' not found"}, status=404)
    result = cli("var", "get", "app/nope")
    assert result.exit_code == 1 and "variable 'app/nope' not found" in result.output


def test_list(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/vars", [meta("app/config"), meta("app/other", 12)])
    result = cli("var", "list", "app/")
    assert result.exit_code == 0, result.output
    assert fake.calls("GET", "/v1/vars")[0].url.params["prefix"] == "app/"
    rows = [line.split() for line in result.output.splitlines()]
    assert rows[0] == ["Path", "Namespace", "Modify", "Index", "Modified"]
    assert rows[1][:3] == ["app/config", "default", "9"]
    assert rows[2][:3] == ["app/other", "default", "12"]
    result = cli("var", "list", "-o", "json")
    assert [v["path"] for v in json.loads(result.stdout)] == ["app/config", "app/other"]


def test_list_empty(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/vars", [])
    assert cli("var", "list").output.strip() == "No variables."
    assert cli("var", "list", "x/").output.strip() == "No variables under x/."


def test_delete(cli: Invoke, fake: FakeServer) -> None:
    fake.on("DELETE", "/v1/var/app/config", {"index": 15})
    result = cli("var", "delete", "app/config", "--cas", "9")
    assert result.exit_code == 0, result.output
    assert fake.calls("DELETE", "/v1/var/app/config")[0].url.params["cas"] == "9"
    assert "Deleted variable app/config (index 15)" in result.output
