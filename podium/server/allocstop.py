"""``podium alloc stop``: stop one allocation and let the scheduler replace it.

As Nomad's ``alloc stop``: the job keeps its count, so stopping an instance is how an
operator moves it (a wedged task, a node they want lighter) without touching the job.
One transaction marks the allocation ``desired_status: stop`` with a description the
reconciler knows (:data:`podium.scheduler.reconcile.ALLOC_STOP`: like a drained
allocation, its index is refilled and the new instance links back to it) and adds an
``alloc-stop`` evaluation, enqueued once committed; the agent sees the change on its next
sync and kills the tasks.  It is a write like every other (the leader's commit path;
followers forward it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from podium.errors import Conflict, NotFound
from podium.models import Allocation, DesiredStatus, TriggeredBy
from podium.scheduler.reconcile import ALLOC_STOP
from podium.server import catalog
from podium.server.broker import EvalBroker
from podium.server.evals import drop_blocked, new_eval
from podium.state import StateStore

log = logging.getLogger(__name__)

DESCRIPTION = f"{ALLOC_STOP} (podium alloc stop)"


def stop_alloc(
    store: StateStore, broker: EvalBroker, alloc: Allocation, now: Callable[[], float]
) -> tuple[str, int]:
    """Stop ``alloc`` and ask for its replacement: the evaluation's id and the index."""
    if alloc.desired_status == DesiredStatus.STOP or alloc.client_status.terminal:
        raise Conflict(
            f"allocation {alloc.id} is already stopped or done "
            f"(desired {alloc.desired_status.value}, client {alloc.client_status.value})"
        )
    job = store.job(alloc.job_id, alloc.namespace)
    if job is None:
        raise NotFound(f"job {alloc.job_id} of allocation {alloc.id} is gone")
    t = now()
    txn = store.txn()
    txn.put_alloc(
        alloc.model_copy(
            update={
                "desired_status": DesiredStatus.STOP,
                "desired_description": DESCRIPTION,
                "modify_index": txn.index,
                "modify_time": t,
            }
        )
    )
    ev = new_eval(job, TriggeredBy.ALLOC_STOP, txn.index, t, node_id=alloc.node_id)
    txn.put_eval(ev)
    drop_blocked(broker, job.namespace, job.id, txn, t)
    catalog.sync_txn(store, txn)
    index = store.commit(txn)
    broker.enqueue(ev)
    log.info("allocation %s of job %s stopped by an operator (eval %s)", alloc.id, job.id, ev.id)
    return ev.id, index
