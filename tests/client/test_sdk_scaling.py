"""The SDK's scaling calls: ``job_scale_status`` (``GET /v1/job/{id}/scale``) and
``scale_job(..., message=)``, sync and async."""

from __future__ import annotations

from podium.client import AsyncClient, Client
from podium.models.scaling import GroupScaleStatus, JobScaleStatus, ScalingEvent

from .samples import EVAL_ID, Recorder

STATUS = JobScaleStatus(
    job_id="web",
    version=2,
    groups={
        "api": GroupScaleStatus(
            count=3,
            running=2,
            min=1,
            max=3,
            enabled=True,
            events=[
                ScalingEvent(
                    time=10.0, group="api", previous_count=1, count=3, reason="autoscaler: …"
                )
            ],
        )
    },
)


def test_job_scale_status(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/job/web/scale", STATUS.model_dump(mode="json"))
    assert client.job_scale_status("web", namespace="team") == STATUS
    assert api.last.url.params["namespace"] == "team"


def test_scale_job_with_a_message(client: Client, api: Recorder) -> None:
    api.on("POST", "/v1/job/web/scale", {"eval_id": EVAL_ID, "version": 4, "index": 11})
    client.scale_job("web", "api", 2, message="night")
    assert api.last_json() == {"group": "api", "count": 2, "message": "night"}


async def test_async_scaling_calls(aclient: AsyncClient, api: Recorder) -> None:
    api.on("GET", "/v1/job/web/scale", STATUS.model_dump(mode="json"))
    api.on("POST", "/v1/job/web/scale", {"eval_id": EVAL_ID, "version": 4, "index": 11})
    assert await aclient.job_scale_status("web") == STATUS
    assert (await aclient.scale_job("web", "api", 2)).version == 4
    assert api.last_json() == {"group": "api", "count": 2}
