"""Formatting helpers: ages, short ids, plans."""

from __future__ import annotations

import pytest

from podium.cli import render


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (0, "0s ago"),
        (12.7, "12s ago"),
        (75, "1m15s ago"),
        (600, "10m ago"),
        (3 * 3600 + 120, "3h2m ago"),
        (2 * 86400 + 3600, "2d1h ago"),
        (30 * 86400, "30d ago"),
        (-2, "just now"),
    ],
)
def test_age(delta: float, text: str) -> None:
    now = 1_000_000_000.0
    assert render.age(now - delta, now) == text


def test_unset_times_and_ids() -> None:
    assert render.age(0.0) == "-"
    assert render.clock(None) == "-"
    assert render.short("3f2a0c1e-0000") == "3f2a0c1e"
    assert render.short("") == "-"


def test_plan_text_skips_zeros() -> None:
    assert (
        render.plan_text({"place": 2, "stop": 0, "in_place_update": 1})
        == "in place update 1, place 2"
    )
    assert render.plan_text({"place": 0}) == "no changes"


def _rich_lines(renderable: object) -> list[str]:
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=100_000, highlight=False, soft_wrap=False, emoji=False).print(
        renderable
    )
    return [line.rstrip() for line in buf.getvalue().splitlines()]


def test_plain_table_lays_out_what_rich_does() -> None:
    """Without a terminal a table()'s lines are written without rich (a 1,000-row table
    took it half a second); they must be the very lines rich draws."""
    from rich.markup import escape
    from rich.text import Text

    t = render.table("ID", "Name", "Count", title="Things")
    t.columns[2].justify = "right"
    t.add_row("a1", escape("web[0] [bold]x[/]"), "7")
    t.add_row("b22222", Text("naïve — ✓ 名前", style="red"), "1234")
    t.add_row(render.status_text("running"), "", "0")
    assert render.plain_table(t) == _rich_lines(t)
    untitled = render.table("A", "B")
    untitled.add_row("x", "y")
    untitled.show_header = False
    assert render.plain_table(untitled) == _rich_lines(untitled) == ["x  y"]


def test_the_plain_console_prints_tables_and_groups_as_rich_would() -> None:
    import io

    t = render.table("ID", "Status", title="Allocations")
    t.add_row("aaaaaaaa", "running")
    group = render.stack(render.fields([("ID", "web"), ("Type", "service")]), t)
    buf = io.StringIO()
    render.PlainConsole(file=buf, width=100_000, highlight=False, emoji=False).print(group)
    assert [line.rstrip() for line in buf.getvalue().splitlines()] == _rich_lines(group)
