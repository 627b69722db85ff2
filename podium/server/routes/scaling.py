"""``GET /v1/job/{job_id}/scale``: each group's count, scaling bounds and policy, and its
newest scaling events (Nomad's job scale status); and the autoscaler's way to the agents.

The autoscaler (podium.server.autoscaler) reads allocations' usage through the same pooled
agent relay as ``GET /v1/allocation/{id}/stats`` (podium.server.proxy, with the TLS
extensions of a request to the node), which the app owns: :func:`add_routes` hands it
over.  ACL: ``read-job`` in the job's namespace (podium.server.acl.RULES).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from podium.models import ClientStatus, DesiredStatus
from podium.models.scaling import GroupScaleStatus, JobScaleStatus
from podium.server.api_docs import NOT_FOUND, Index, Wait
from podium.server.autoscaler import agent_usage_reader
from podium.server.proxy import AgentProxy
from podium.server.routes.common import ApiContext, json_answer
from podium.state import JOBS
from podium.state.store import SCALING_EVENTS


def add_routes(
    router: APIRouter,
    ctx: ApiContext,
    agent_proxy: AgentProxy,
    relay_ext: Callable[[str], dict[str, Any]],
) -> None:
    store = ctx.store
    ctx.server.autoscaler.read_usage = agent_usage_reader(agent_proxy.fetch, relay_ext)

    @router.get(
        "/v1/job/{job_id}/scale",
        tags=["jobs"],
        response_model=JobScaleStatus,
        responses=NOT_FOUND,
    )
    async def job_scale_status(
        job_id: str, index: Index = None, wait: Wait = None, namespace: str = "default"
    ) -> Response:
        """Each group's count, running allocations, scaling bounds and policy, and its
        newest scaling events (newest first): the autoscaler's decisions, manual scales,
        and metrics it could not read."""
        job = ctx.resolve_job(job_id, namespace)
        idx = await ctx.blocking(index, wait, SCALING_EVENTS, JOBS)
        job = ctx.resolve_job(job.id, job.namespace)
        record = store.scaling_events(job.id, job.namespace)
        running: dict[str, int] = {}
        for a in store.allocs_by_job(job.id, job.namespace):
            if a.client_status == ClientStatus.RUNNING and a.desired_status == DesiredStatus.RUN:
                running[a.group] = running.get(a.group, 0) + 1
        groups = {}
        for name, group in job.spec.groups.items():
            scaling = group.scaling
            groups[name] = GroupScaleStatus(
                count=group.count,
                running=running.get(name, 0),
                min=scaling.min if scaling else None,
                max=scaling.max if scaling else None,
                enabled=bool(scaling and scaling.enabled and scaling.policy),
                policy=scaling.policy if scaling else None,
                events=record.groups.get(name, []) if record else [],
            )
        status = JobScaleStatus(
            job_id=job.id, namespace=job.namespace, version=job.version, groups=groups
        )
        return json_answer(status, JobScaleStatus, idx)
