"""Workload identity on the server: tokens issued to agents for their tasks, and the
check every use of one meets at the API's edge.

The signing is :mod:`podium.server.identity` (HMAC under a key derived from the
keyring); this module decides *whether*: an agent gets tokens only for allocations
placed on its own node (its node secret proved which node, at the edge) that have not
stopped, and a token works only while its allocation exists, is still on the node
the token names, belongs to the job and namespace it names, and has not stopped
(:meth:`~podium.models.Allocation.terminal`: the server stopped it, ``desired: stop``,
or it finished, failed or was lost on its node).  So stopping a job or an allocation
revokes its tasks' tokens at once, whatever their expiry says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from podium.errors import Forbidden
from podium.models.identity import (
    MAX_IDENTITY_REQUEST,
    IdentitiesAnswer,
    IdentitiesRequest,
    WorkloadIdentity,
)
from podium.server import identity
from podium.server.api_docs import BODY, NOT_FOUND
from podium.state import StateStore

if TYPE_CHECKING:
    from podium.server.core import Server
    from podium.server.identity import WorkloadClaims


def refusal(store: StateStore, claims: WorkloadClaims) -> str | None:
    """Why a (verified, unexpired) workload token no longer works, or None if it does."""
    alloc = store.alloc(claims.alloc_id)
    what = claims.describe()
    if alloc is None:
        return f"the allocation of this workload token ({what}) no longer exists"
    if alloc.node_id != claims.node_id:
        return f"the allocation of this workload token ({what}) is not on the node it names"
    if alloc.job_id != claims.job_id or alloc.namespace != claims.namespace:
        return f"the allocation of this workload token ({what}) belongs to another job"
    if alloc.terminal():
        return f"the allocation of this workload token ({what}) has stopped"
    return None


def issue_for_node(server: Server, node_id: str, request: IdentitiesRequest) -> IdentitiesAnswer:
    """Tokens for the tasks of ``node_id``'s allocations ``request`` names.

    An allocation of another node refuses the whole request (:class:`Forbidden`): a node
    asks only for its own.  A stopped or unknown allocation, or a task its job version
    lacks, gets no token and a reason in ``refused`` (the agent may ask while a stop is
    on its way to it)."""
    wanted = request.allocations
    count = sum(len(tasks) for tasks in wanted.values())
    if count > MAX_IDENTITY_REQUEST:
        raise ValueError(
            f"a request may ask for at most {MAX_IDENTITY_REQUEST} workload tokens, not {count}"
        )
    store = server.store
    for alloc_id in wanted:
        alloc = store.alloc(alloc_id)
        if alloc is not None and alloc.node_id != node_id:
            raise Forbidden(
                f"allocation {alloc_id} is not placed on node {node_id}: a node gets workload "
                "tokens only for its own allocations (nothing was issued)"
            )
    now = server.clock()
    ttl = server.config.identity_ttl
    answer = IdentitiesAnswer(ttl=ttl)
    for alloc_id, tasks in wanted.items():
        alloc = store.alloc(alloc_id)
        if alloc is None:
            answer.refused[alloc_id] = f"allocation {alloc_id} not found"
            continue
        if alloc.terminal():
            answer.refused[alloc_id] = f"allocation {alloc_id} has stopped"
            continue
        version = store.job_version(alloc.job_id, alloc.job_version, alloc.namespace)
        group = version.spec.groups.get(alloc.group) if version is not None else None
        missing = [t for t in tasks if group is None or t not in group.tasks]
        if missing:
            answer.refused[alloc_id] = (
                f"allocation {alloc_id} has no task {missing[0]!r} (job {alloc.job_id} "
                f"version {alloc.job_version})"
            )
            continue
        for task in tasks:
            token = identity.issue(
                server.keyring,
                alloc_id=alloc.id,
                task=task,
                job_id=alloc.job_id,
                namespace=alloc.namespace,
                node_id=node_id,
                now=now,
                ttl=ttl,
            )
            answer.identities.append(
                WorkloadIdentity(alloc_id=alloc.id, task=task, token=token, expires_at=now + ttl)
            )
    return answer


def router(server: Server) -> APIRouter:
    """``POST /v1/client/node/{node_id}/identities`` (classified ``agent`` in acl.RULES:
    the node's secret, and under TLS its certificate, are checked before this runs)."""
    routes = APIRouter()

    @routes.post(
        "/v1/client/node/{node_id}/identities",
        tags=["agent"],
        response_model=IdentitiesAnswer,
        responses={**NOT_FOUND, **BODY},
    )
    async def node_identities(node_id: str, body: IdentitiesRequest) -> JSONResponse:
        """Workload tokens for the named tasks of this node's allocations (one per task)."""
        answer = issue_for_node(server, node_id, body)
        return JSONResponse(answer.model_dump(mode="json"))

    return routes
