"""``podium job scaling-events`` and ``podium job scale --message`` against a fake server."""

from __future__ import annotations

import json

from podium.models.scaling import GroupScaleStatus, JobScaleStatus, ScalingEvent, ScalingPolicy

from .conftest import Invoke
from .fakes import FakeServer

STATUS = JobScaleStatus(
    job_id="web",
    version=3,
    groups={
        "api": GroupScaleStatus(
            count=3,
            running=3,
            min=1,
            max=3,
            enabled=True,
            policy=ScalingPolicy(metric="cpu", target=50),
            events=[
                ScalingEvent(
                    time=1_700_000_020.0,
                    group="api",
                    previous_count=3,
                    error="no agent answered with the usage of its allocations (3)",
                    reason="autoscaler: cannot read cpu",
                ),
                ScalingEvent(
                    time=1_700_000_010.0,
                    group="api",
                    previous_count=1,
                    count=3,
                    reason="autoscaler: cpu 1840% of target 50% over 1 allocation -> 3 (max)",
                ),
                ScalingEvent(
                    time=1_700_000_000.0,
                    group="api",
                    source="manual",
                    previous_count=2,
                    count=1,
                    reason="quiet night",
                ),
            ],
        ),
        "db": GroupScaleStatus(count=1, running=1),
    },
)


def test_scaling_events_lists_decisions_newest_first(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web/scale", STATUS)
    result = cli("job", "scaling-events", "web")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "api: count 3, running 3, bounds [1, 3], cpu target 50%" in out
    assert "db: count 1, running 1" in out
    rows = [line for line in out.splitlines() if " api " in line]
    assert len(rows) == 3
    assert "-" in rows[0].split("autoscaler")[1] and "cannot read cpu: no agent" in rows[0]
    assert "1 -> 3" in rows[1] and "1840% of target 50%" in rows[1]
    assert "manual" in rows[2] and "2 -> 1" in rows[2] and "quiet night" in rows[2]


def test_scaling_events_json_is_the_api_answer(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web/scale", STATUS)
    result = cli("job", "scaling-events", "web", "-o", "json")
    assert result.exit_code == 0, result.output
    assert JobScaleStatus.model_validate(json.loads(result.stdout)) == STATUS


def test_scaling_events_of_an_unknown_group(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/job/web/scale", STATUS)
    result = cli("job", "scaling-events", "web", "--group", "nope")
    assert result.exit_code == 1
    assert "job web has no group 'nope' (groups: api, db)" in result.stderr


def test_scale_sends_its_message(cli: Invoke, fake: FakeServer) -> None:
    fake.on("POST", "/v1/job/web/scale", {"eval_id": "e" * 36, "version": 4, "index": 12})
    result = cli("job", "scale", "web", "api", "2", "-m", "launch day")
    assert result.exit_code == 0, result.output
    body = json.loads(fake.requests[0].content)
    assert body == {"group": "api", "count": 2, "message": "launch day"}
