"""``/v1/operator/scheduler/configuration``: the cluster's scheduler configuration
(which job types may preempt; podium.server.schedconfig), as Nomad's route of the same
name.  Reading needs ``operator: read``, writing ``operator: write``
(podium.server.acl.RULES); a write sent to a follower is forwarded to the leader like
every other (podium.server.forward)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from podium.models.schedconfig import SchedulerConfigRequest, SchedulerConfiguration
from podium.server import schedconfig
from podium.server.api_docs import BODY, CONFLICT
from podium.server.routes.common import ApiContext, json_answer
from podium.state.store import SCHED_CONFIG

PATH = "/v1/operator/scheduler/configuration"


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server, store = ctx.server, ctx.store

    @router.get(PATH, tags=["operator"], response_model=SchedulerConfiguration)
    async def get_scheduler_config() -> Response:
        """The scheduler configuration; ``modify_index`` 0 means never written (the
        defaults: preemption for system jobs only)."""
        config = schedconfig.get_config(server)
        return json_answer(config, SchedulerConfiguration, store.table_index(SCHED_CONFIG))

    @router.put(
        PATH,
        tags=["operator"],
        response_model=SchedulerConfiguration,
        responses={**CONFLICT, **BODY},
    )
    async def put_scheduler_config(body: SchedulerConfigRequest) -> Response:
        """Replace the preemption settings (every type named; ``check_index``: only if
        the stored record is at that index, else 409).  Blocked evaluations are retried."""
        config = schedconfig.set_config(server, body.preemption_config, body.check_index)
        return json_answer(config, SchedulerConfiguration, config.modify_index)
