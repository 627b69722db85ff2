"""The cluster's scheduler configuration on the server: read it, change it.

The record is :class:`~podium.models.schedconfig.SchedulerConfiguration`, one row of the
store (so it is as durable and as replicated as jobs are, and every server's replica
reads the same one); schedulers read it from their snapshot.  A change is one commit,
conditional on the stored index when the caller gives ``check_index`` (Nomad's
``?cas=``).  After a change every blocked evaluation is retried: with preemption just
turned on, a high-priority job waiting for room may now find it.
"""

from __future__ import annotations

from podium.errors import Conflict
from podium.models.schedconfig import PreemptionConfig, SchedulerConfiguration
from podium.server.core import Server


def get_config(server: Server) -> SchedulerConfiguration:
    return server.store.scheduler_config()


def set_config(
    server: Server, preemption: PreemptionConfig, check_index: int | None = None
) -> SchedulerConfiguration:
    """Store ``preemption`` as the cluster's; a Conflict (HTTP 409), with nothing
    written, when ``check_index`` is given and is not the stored ``modify_index``."""
    store = server.store
    current = store.scheduler_config()
    if check_index is not None and check_index != current.modify_index:
        raise Conflict(
            f"the scheduler configuration is at index {current.modify_index}, not "
            f"{check_index}: read it again and retry"
        )
    txn = store.txn()
    config = SchedulerConfiguration(
        preemption_config=preemption,
        create_index=current.create_index or txn.index,
        modify_index=txn.index,
    )
    txn.put_scheduler_config(config)
    store.commit(txn)
    server.unblock_evals()
    return store.scheduler_config()
