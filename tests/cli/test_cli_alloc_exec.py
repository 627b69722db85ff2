"""``podium alloc exec``'s command line: where the task ends and the command begins, and
what is a usage error (the session itself is tested end to end in tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest

from podium.cli import alloc_exec

from .conftest import Invoke


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``alloc exec`` would run (no server): each call, and exit code 5."""
    calls: list[dict[str, Any]] = []

    def run(
        client: Any, alloc_id: str, task: str | None, command: list[str], tty: bool, stdin: bool
    ) -> int:
        calls.append(
            {"alloc": alloc_id, "task": task, "command": command, "tty": tty, "stdin": stdin}
        )
        return 5

    monkeypatch.setattr(alloc_exec, "run", run)
    return calls


def test_task_before_the_double_dash(cli: Invoke, sessions: list[dict[str, Any]]) -> None:
    r = cli("alloc", "exec", "abc123", "web", "--", "ls", "-la", "--color")
    assert r.exit_code == 5, r.output  # the command's exit code is the CLI's
    assert sessions == [
        {
            "alloc": "abc123",
            "task": "web",
            "command": ["ls", "-la", "--color"],
            "tty": False,
            "stdin": True,
        }
    ]


def test_options_anywhere_before_the_double_dash(
    cli: Invoke, sessions: list[dict[str, Any]]
) -> None:
    r = cli("alloc", "exec", "abc123", "-t", "--no-stdin", "--", "/bin/sh", "-i")
    assert r.exit_code == 5, r.output
    assert sessions[0]["task"] is None
    assert sessions[0]["command"] == ["/bin/sh", "-i"]
    assert sessions[0]["tty"] is True and sessions[0]["stdin"] is False


def test_without_double_dash_everything_after_the_alloc_is_the_command(
    cli: Invoke, sessions: list[dict[str, Any]]
) -> None:
    r = cli("alloc", "exec", "abc123", "grep", "-i", "x", "/etc/hosts")
    assert r.exit_code == 5, r.output
    assert sessions[0]["task"] is None
    assert sessions[0]["command"] == ["grep", "-i", "x", "/etc/hosts"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["abc123"], "name the command"),
        (["abc123", "web", "--"], "name the command"),
        (["abc123", "web", "db", "--", "ls"], "only one task goes before --"),
    ],
)
def test_usage_errors(
    cli: Invoke, sessions: list[dict[str, Any]], args: list[str], message: str
) -> None:
    r = cli("alloc", "exec", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert sessions == []
