"""SDK: ``plan_job`` and ``revert_job``, blocking and async."""

from __future__ import annotations

from typing import Any

from podium.client import AsyncClient, Client, JobPlanResult, RegisterResult
from podium.models.diff import DiffType

from .samples import EVAL_ID, Recorder, spec

PLAN: dict[str, Any] = {
    "job_id": "web",
    "index": 12,
    "job_modify_index": 9,
    "version": 3,
    "changed": True,
    "diff": {
        "type": "edited",
        "id": "web",
        "fields": [],
        "groups": [
            {
                "type": "edited",
                "name": "web",
                "fields": [{"type": "edited", "name": "count", "old": 2, "new": 3}],
                "tasks": [],
            }
        ],
    },
    "changes": {"web": {"place": 1, "in_place_update": 2}},
    "failed_tg_allocs": {},
    "queued_allocations": {},
    "notes": "",
    "warnings": [],
    "added_by_a_newer_server": True,
}
REVERTED = {"eval_id": EVAL_ID, "job_modify_index": 14, "version": 4, "index": 14, "changed": True}


def test_plan_job(client: Client, api: Recorder) -> None:
    api.on("POST", "/v1/job/web/plan", PLAN)
    plan = client.plan_job(spec(count=3))
    assert isinstance(plan, JobPlanResult)
    assert plan.job_modify_index == 9 and plan.changes["web"].place == 1
    assert plan.diff is not None and plan.diff.groups[0].fields[0].type == DiffType.EDITED
    assert plan.diff.lines() == ["~ groups.web.count: 2 => 3"]
    assert plan.creates_or_destroys()
    sent = api.last_json()
    assert sent["diff"] is True and sent["job"]["groups"]["web"]["count"] == 3
    client.plan_job({"job": "web", "groups": {}}, diff=False)
    assert api.last_json() == {"job": {"job": "web", "groups": {}}, "diff": False}


def test_revert_job(client: Client, api: Recorder) -> None:
    api.on("POST", "/v1/job/web/revert", REVERTED)
    assert client.revert_job("web", 1) == RegisterResult.model_validate(REVERTED)
    assert api.last_json() == {"version": 1}
    client.revert_job("web", 1, enforce_prior_version=3, reason="bad deploy")
    assert api.last_json() == {"version": 1, "enforce_prior_version": 3, "reason": "bad deploy"}


async def test_async_plan_and_revert(aclient: AsyncClient, api: Recorder) -> None:
    api.on("POST", "/v1/job/web/plan", PLAN)
    api.on("POST", "/v1/job/web/revert", REVERTED)
    async with aclient as c:
        assert (await c.plan_job(spec())).version == 3
        assert (await c.revert_job("web", 1, enforce_prior_version=3)).version == 4
    assert api.last_json() == {"version": 1, "enforce_prior_version": 3}
