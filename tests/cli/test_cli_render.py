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
