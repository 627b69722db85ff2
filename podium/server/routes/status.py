"""``/v1/status``: the server's version, index and figures; the leader, the peers and the
members of the cluster (``server.cluster``: podium.server.cluster).  Declared on the
app's router by :func:`podium.server.api.create_app`; the operator's snapshot is
podium.server.snapshot."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from podium import __version__
from podium.models.api import LeaderAnswer, MembersAnswer, PeersAnswer, StatusAnswer
from podium.server.routes.common import ApiContext, json_answer


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    server, store = ctx.server, ctx.store

    # ---------------------------------------------------------------- status
    @router.get("/v1/status", tags=["status"], response_model=StatusAnswer)
    async def status() -> Response:
        return json_answer(
            {
                "version": __version__,
                "index": store.index,
                "nodes": len(store.nodes()),
                "jobs": len(store.jobs()),
                "broker": server.broker.stats(),
            },
            dict[str, Any],
            store.index,
        )

    @router.get("/v1/status/leader", tags=["status"], response_model=LeaderAnswer)
    async def status_leader() -> Response:
        """The server leading the cluster: the one running its leader duties (the
        broker, the plan applier, heartbeat expiry, the deployment watcher and GC).  One
        server leads itself while its duties run; with etcd, the lease's holder."""
        me = server.config.advertise_url
        leader = server.cluster.leader_url()
        return json_answer(LeaderAnswer(leader=leader, server=me), LeaderAnswer, store.index)

    @router.get("/v1/status/peers", tags=["status"], response_model=PeersAnswer)
    async def status_peers() -> Response:
        """The cluster's servers (those whose member record is live, with etcd).  One
        server's cluster is itself."""
        me = server.config.advertise_url
        urls = sorted({m.url for m in await server.cluster.members() if m.url} | {me} - {""})
        return json_answer(PeersAnswer(servers=urls), PeersAnswer, store.index)

    @router.get("/v1/status/members", tags=["status"], response_model=MembersAnswer)
    async def status_members() -> Response:
        """Every server as it last reported itself: address, leader or follower, the
        index it has applied, its last contact with etcd and etcd's revision then
        (``podium server members``)."""
        members = await server.cluster.members()
        answer = MembersAnswer(members=members, leader=server.cluster.leader_url())
        return json_answer(answer, MembersAnswer, store.index)
