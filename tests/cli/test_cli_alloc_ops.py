"""The pure parts of the day-two commands (podium.cli.alloc_ops, job_restart, monitor);
the commands themselves run against a real dev agent in tests/e2e/test_alloc_ops.py."""

from __future__ import annotations

import click
import pytest
import typer

from podium.cli.alloc_ops import _size
from podium.cli.job_restart import parse_batch_size
from podium.cli.monitor import format_record

from .conftest import Invoke


def test_batch_size_is_a_count_or_a_share() -> None:
    assert parse_batch_size("2", 10) == 2
    assert parse_batch_size("25%", 10) == 2
    assert parse_batch_size("1%", 10) == 1, "at least one"
    assert parse_batch_size("100%", 7) == 7
    for bad in ("0", "-1", "x", "0%", "150%"):
        with pytest.raises((typer.Exit, click.exceptions.Exit)):
            parse_batch_size(bad, 10)


def test_sizes_read_as_people_read_them() -> None:
    assert _size(812) == "812 B"
    assert _size(4096) == "4.0 KiB"
    assert _size(3 * 1024 * 1024 // 2) == "1.5 MiB"


def test_a_record_is_one_line() -> None:
    line = format_record(
        {"time": "2026-12-05T18:00:00.000Z", "level": "INFO", "logger": "podium.x", "message": "m"}
    )
    assert line == "2026-12-05T18:00:00.000Z INFO  podium.x: m"


def test_usage_errors_say_what_is_wrong(cli: Invoke) -> None:
    r = cli("alloc", "restart", "abc", "web", "--all-tasks")
    assert r.exit_code == 2 and "not both" in r.output
    r = cli("job", "restart", "web", "--task", "t", "--reschedule")
    assert r.exit_code == 2 and "--reschedule" in r.output
    r = cli("job", "restart", "web", "--batch-wait", "soon")
    assert r.exit_code == 2
    r = cli("monitor", "--log-level", "loud")
    assert r.exit_code == 2
