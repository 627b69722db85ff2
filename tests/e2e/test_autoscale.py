"""Autoscaling on a real ``podium agent --dev`` with real processes: the job of
examples/autoscale.yaml (tasks that burn CPU while a flag file exists, 100 MHz reserved,
target 50%) grows from 1 to its max of 3 under load, and shrinks back to 1 once the load
stops, each phase in one direction only (no flapping); the decisions are job versions
with their reasons (``podium job history``), and ``podium job scaling-events`` lists
them; a manual scale outside the bounds is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DevAgent, wait_until, write_job

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "autoscale.yaml"
FLAG = "/tmp/podium-autoscale-load"


def scale_status(dev: DevAgent) -> dict[str, Any]:
    return dict(dev.get("/v1/job/burn/scale"))


def count(dev: DevAgent) -> int:
    return int(dev.get("/v1/job/burn")["spec"]["groups"]["burn"]["count"])


def changes(dev: DevAgent) -> list[tuple[int, int]]:
    """The autoscaler's changes of count, oldest first."""
    events = scale_status(dev)["groups"]["burn"]["events"]
    return [
        (e["previous_count"], e["count"])
        for e in reversed(events)
        if e["count"] is not None and e["source"] == "autoscaler"
    ]


def test_a_cpu_bound_group_scales_out_to_max_and_back_to_min(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    flag = tmp_path / "load"
    text = EXAMPLE.read_text()
    assert FLAG in text
    job = write_job(tmp_path, text.replace(FLAG, str(flag)))
    flag.write_text("")  # load from the start
    dev_agent.cli("job", "run", "--detach", job, check=True)

    # Out: 1 -> 3 (max), in steps that only go up.
    wait_until(
        lambda: count(dev_agent) == 3 and len(dev_agent.running("burn")) == 3,
        timeout=90,
        what="the group to grow to 3 running instances",
    )
    out = changes(dev_agent)
    assert out and out[-1][1] == 3, out
    assert all(b > a for a, b in out), f"flapped while growing: {out}"

    # In: the load stops; back to 1 (min), in steps that only go down.
    flag.unlink()
    wait_until(
        lambda: count(dev_agent) == 1 and len(dev_agent.running("burn")) == 1,
        timeout=90,
        what="the group to shrink to 1 running instance",
    )
    inward = changes(dev_agent)[len(out) :]
    assert inward and inward[-1][1] == 1, inward
    assert all(b < a for a, b in inward), f"flapped while shrinking: {inward}"

    # The decisions are job versions with their reasons...
    history = dev_agent.cli("job", "history", "burn", "-o", "json", check=True)
    reasons = [v["description"] for v in json.loads(history.stdout) if v["description"]]
    assert len(reasons) == len(out) + len(inward)
    assert all(r.startswith("autoscaler: cpu ") and "of target 50%" in r for r in reasons)
    assert any(r.endswith("-> 3 (max)") for r in reasons), reasons
    assert any(r.endswith("-> 1 (min)") for r in reasons), reasons
    # ... and scaling events, which the CLI lists.
    listed = dev_agent.cli("job", "scaling-events", "burn", check=True).stdout
    assert "burn: count 1" in listed and "bounds [1, 3], cpu target 50%" in listed
    assert "1 -> 3" in listed or "1 -> 2" in listed, listed

    # A manual scale outside the bounds is refused, and changes nothing.
    refused = dev_agent.cli("job", "scale", "burn", "burn", "5")
    assert refused.returncode != 0
    assert "count 5 is outside the group's scaling bounds [1, 3]" in refused.stderr
    assert count(dev_agent) == 1
