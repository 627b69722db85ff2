"""Evaluations as the server makes them: a new one for a job, a job's blocked one
superseded by a newer, and blocked ones woken when capacity changes.

Every part that writes (jobs, nodes, agents' reports, deployments, the worker) makes
its evaluations here, so they all look alike; none of this enqueues before the commit
that stores them (the callers do, after it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from podium.models import EvalStatus, Evaluation, Job, TriggeredBy
from podium.server.broker import EvalBroker
from podium.state import StateStore, Txn


def new_id() -> str:
    return str(uuid.uuid4())


def new_eval(
    job: Job, trigger: TriggeredBy, index: int, now: float, node_id: str | None = None
) -> Evaluation:
    return Evaluation(
        id=new_id(),
        namespace=job.namespace,
        priority=job.priority,
        type=job.type,
        triggered_by=trigger,
        job_id=job.id,
        job_modify_index=job.job_modify_index,
        node_id=node_id,
        status=EvalStatus.PENDING,
        create_index=index,
        modify_index=index,
        create_time=now,
        modify_time=now,
    )


def drop_blocked(broker: EvalBroker, namespace: str, job_id: str, txn: Txn, now: float) -> None:
    """A new evaluation for a job supersedes its blocked one."""
    blocked = broker.drop_blocked(namespace, job_id)
    if blocked is not None:
        txn.put_eval(
            blocked.model_copy(
                update={
                    "status": EvalStatus.CANCELED,
                    "status_description": "superseded by a newer evaluation",
                    "modify_index": txn.index,
                    "modify_time": now,
                }
            )
        )


def unblock(store: StateStore, broker: EvalBroker, clock: Callable[[], float]) -> None:
    """Capacity changed: every blocked evaluation becomes pending again (one commit), and
    is enqueued."""
    blocked = broker.unblock()
    if not blocked:
        return
    now = clock()
    txn = store.txn()
    evs = []
    for ev in blocked:
        current = store.evaluation(ev.id) or ev
        if current.status != EvalStatus.BLOCKED:
            continue
        pending = current.model_copy(
            update={
                "status": EvalStatus.PENDING,
                "modify_index": txn.index,
                "modify_time": now,
                "status_description": "capacity changed",
            }
        )
        txn.put_eval(pending)
        evs.append(pending)
    store.commit(txn)
    for ev in evs:
        broker.enqueue(ev)
