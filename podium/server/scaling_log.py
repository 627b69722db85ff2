"""The store's record of scaling decisions: each job's groups' newest scaling events
(:class:`~podium.models.scaling.JobScalingEvents`, one row per job in the
``scaling_events`` table), written in the transaction of the change they describe.

The autoscaler (podium.server.autoscaler) and ``podium job scale`` (podium.server.jobs)
record here; ``GET /v1/job/{id}/scale`` and ``podium job scaling-events`` read it, and the
autoscaler reads a group's last change from it for its cooldown (so a manual scale, or a
change made under another leader, starts the cooldown too).
"""

from __future__ import annotations

from podium.models import Job
from podium.models.scaling import JobScalingEvents, ScalingEvent
from podium.state import Snapshot, StateStore, Txn
from podium.state.store import SCALING_EVENTS


def record(store: StateStore, txn: Txn, job: Job, event: ScalingEvent) -> None:
    """Add ``event`` to ``job``'s record in ``txn`` (on top of what ``txn`` already
    holds for it, else what the store holds)."""
    key = f"{job.namespace}/{job.id}"
    pending = txn.puts[SCALING_EVENTS].get(key)
    current = pending or store.scaling_events(job.id, job.namespace)
    if current is None:
        current = JobScalingEvents(job_id=job.id, namespace=job.namespace)
    txn.put_scaling_events(current.with_event(event, txn.index))


def forget(store: Snapshot, txn: Txn, namespace: str, job_id: str) -> None:
    """Delete the job's record with the job (a purge)."""
    if store.scaling_events(job_id, namespace) is not None:
        txn.delete_scaling_events(namespace, job_id)
