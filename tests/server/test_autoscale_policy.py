"""The autoscaler's decision (podium.server.autoscale_policy.decide), table-driven: no
processes, no clock but the ``now`` each case gives."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from podium.models.scaling import Scaling
from podium.server.autoscale_policy import Decision, GroupState, Reading, decide


def scaling(
    lo: int = 1,
    hi: int = 10,
    target: float = 50,
    cooldown: float = 30,
    enabled: bool = True,
    metric: str = "cpu",
) -> Scaling:
    policy: dict[str, object] = {"metric": metric, "target": target, "cooldown": cooldown}
    if metric == "prometheus":
        policy["query"] = {"url": "http://prom:9090", "expr": "x"}
    return Scaling.model_validate({"min": lo, "max": hi, "enabled": enabled, "policy": policy})


def cpu(*values: float) -> Reading:
    return Reading(total=sum(values), samples=len(values))


WATCHED = GroupState(count=2, observed_since=0.0)
"""Two instances, watched since 0, never changed."""
NOW = 1000.0


@dataclass
class Case:
    name: str
    scaling: Scaling
    state: GroupState
    reading: Reading | None
    want: int | None
    says: str = ""


CASES = [
    Case("scale out on high load", scaling(), WATCHED, cpu(100, 100), 4, "cpu 100% of target 50%"),
    Case("scale out is capped at max", scaling(hi=3), WATCHED, cpu(900, 900), 3, "(max)"),
    Case("scale in on low load", scaling(), WATCHED, cpu(10, 10), 1, "-> 1 (min)"),
    Case("scale in is floored at min", scaling(lo=2), WATCHED, cpu(0, 0), None, "at its bounds"),
    Case("tolerance band holds above", scaling(), WATCHED, cpu(54, 55), None, "within tolerance"),
    Case("tolerance band holds below", scaling(), WATCHED, cpu(46, 45), None, "within tolerance"),
    Case("just outside the band moves", scaling(), WATCHED, cpu(56, 56), 3),
    Case(
        "cooldown holds a scale out",
        scaling(),
        replace(WATCHED, last_change=NOW - 10),
        cpu(100, 100),
        None,
        "cooldown (20.0s left)",
    ),
    Case(
        "after the cooldown it moves",
        scaling(),
        replace(WATCHED, last_change=NOW - 30),
        cpu(100, 100),
        4,
    ),
    Case(
        "cooldown holds a scale in",
        scaling(),
        replace(WATCHED, last_change=NOW - 1),
        cpu(0, 0),
        None,
        "cooldown",
    ),
    Case("disabled", scaling(enabled=False), WATCHED, cpu(100, 100), None, "disabled"),
    Case("no metric", scaling(), WATCHED, None, None, "no metric value"),
    Case("no samples", scaling(), WATCHED, cpu(), None, "no metric value"),
    Case(
        "count above max is brought back, cooldown or not",
        scaling(hi=3),
        GroupState(count=5, observed_since=0, last_change=NOW - 1),
        cpu(50),
        3,
        "outside [1, 3]",
    ),
    Case(
        "count below min is brought back",
        scaling(lo=2),
        GroupState(count=0, observed_since=0),
        None,
        2,
    ),
    Case(
        "a new watcher does not scale in before a whole cooldown",
        scaling(),
        GroupState(count=2, observed_since=NOW - 5),
        cpu(0, 0),
        None,
        "watched for less than the cooldown",
    ),
    Case(
        "a new watcher scales out at once",
        scaling(),
        GroupState(count=2, observed_since=NOW),
        cpu(100, 100),
        4,
    ),
    Case(
        "scale in takes the highest recommendation of the window",
        scaling(),
        replace(WATCHED, count=5, window=((NOW - 20, 4), (NOW - 40, 5))),
        cpu(0, 0, 0, 0, 0),
        4,
        "-> 4",
    ),
    Case(
        "a recommendation at the count in the window holds a scale in",
        scaling(),
        replace(WATCHED, count=5, window=((NOW - 10, 5),)),
        cpu(0, 0, 0, 0, 0),
        None,
        "stabilisation window",
    ),
    Case(
        "missing instances count as idle when growing",
        scaling(),
        GroupState(count=4, observed_since=0),
        cpu(60, 60),  # 2 of 4 measured: (60+60+0+0)/4 = 30% < 50%: the direction turned
        None,
    ),
    Case(
        "missing instances count as at target when shrinking",
        scaling(),
        GroupState(count=4, observed_since=0),
        cpu(0, 0),  # (0+0+50+50)/4 = 25%: ceil(4 * 0.5) = 2
        2,
    ),
    Case(
        "a query value is per instance",
        scaling(metric="prometheus", target=100),
        GroupState(count=2, observed_since=0),
        Reading(total=300, samples=1, per_instance=False),
        6,
        "prometheus 300 of target 100 -> 6",
    ),
    Case(
        "a query scales a group from zero",
        scaling(lo=0, metric="prometheus", target=100),
        GroupState(count=0, observed_since=0),
        Reading(total=250, samples=1, per_instance=False),
        3,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    d = decide(case.scaling, case.state, case.reading, NOW)
    assert d.count == case.want, d.reason
    assert case.says in d.reason


def test_the_window_keeps_only_the_last_cooldown() -> None:
    state = replace(WATCHED, window=((NOW - 31, 9), (NOW - 29, 2)))
    d = decide(scaling(), state, cpu(50, 50), NOW)
    assert d.window == ((NOW - 29, 2), (NOW, 2))


def run(s: Scaling, values: list[float], start: int, step: float = 1.0) -> list[Decision]:
    """Feed one sample per ``step`` seconds, applying each change, as the loop does."""
    state = GroupState(count=start, observed_since=0.0)
    out = []
    for i, v in enumerate(values):
        now = 100.0 + i * step
        d = decide(s, state, cpu(*[v] * state.count), now)
        state = replace(state, window=d.window)
        if d.count is not None:
            state = replace(state, count=d.count, last_change=now)
            out.append(d)
    return out


def test_no_flapping_on_oscillating_samples() -> None:
    """Load that swings around the target, wider than the tolerance, every second: one
    scale-out, then the stabilisation window and the cooldown hold the count."""
    s = scaling(lo=1, hi=10, target=50, cooldown=10)
    swings = [70.0, 35.0] * 30  # +40% / -30%
    changes = run(s, swings, start=4)
    counts = [d.count for d in changes]
    assert counts and all(b > a for a, b in zip([4, *counts], counts, strict=False)), counts


def test_converges_out_then_in_monotonically() -> None:
    s = scaling(lo=1, hi=3, target=50, cooldown=2)
    changes = run(s, [2000.0] * 5 + [0.0] * 10, start=1)
    assert [d.count for d in changes] == [3, 1]
