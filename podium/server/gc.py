"""Garbage collection: what the store no longer needs to keep.

Terminal evaluations beyond the newest few per job, the allocations of purged jobs
once their tasks have exited, allocations stopped and finished for longer than
``alloc_gc_age`` (their agent then forgets them and removes their directories), and
deployments of purged jobs or ended ones beyond the newest few per job.  One pass is
one transaction; the leader runs it every ``gc_interval``
(:class:`podium.server.leader.LeaderDuties`).
"""

from __future__ import annotations

from podium.models import Deployment, DesiredStatus, Evaluation
from podium.server import catalog
from podium.server.config import ServerConfig
from podium.state import StateStore, Txn


def collect(store: StateStore, config: ServerConfig, now: float) -> int:
    """One pass; returns how many objects went."""
    txn = store.txn()
    removed = 0
    by_job: dict[tuple[str, str], list[Evaluation]] = {}
    for ev in store.evaluations():
        if ev.terminal():
            by_job.setdefault((ev.namespace, ev.job_id), []).append(ev)
    for evs in by_job.values():
        evs.sort(key=lambda e: e.modify_index, reverse=True)
        for ev in evs[config.eval_gc_keep :]:
            txn.delete_eval(ev.id)
            removed += 1
    for alloc in store.allocs():
        if not alloc.client_terminal():
            continue
        purged = store.job(alloc.job_id, alloc.namespace) is None
        old = (
            alloc.desired_status == DesiredStatus.STOP
            and now - alloc.modify_time > config.alloc_gc_age
        )
        if purged or old:
            txn.delete_alloc(alloc.id)
            removed += 1
    removed += _deployments(store, config, txn)
    if removed:
        catalog.sync_txn(store, txn)
        store.commit(txn)
    return removed


def _deployments(store: StateStore, config: ServerConfig, txn: Txn) -> int:
    """Deployments of purged jobs, and ended ones beyond the newest few per job."""
    removed = 0
    by_job: dict[tuple[str, str], list[Deployment]] = {}
    for dep in store.deployments():
        if store.job(dep.job_id, dep.namespace) is None and not dep.active():
            txn.delete_deployment(dep.id)
            removed += 1
        elif not dep.active():
            by_job.setdefault((dep.namespace, dep.job_id), []).append(dep)
    for deps in by_job.values():
        deps.sort(key=lambda d: d.create_index, reverse=True)
        for dep in deps[config.eval_gc_keep :]:
            txn.delete_deployment(dep.id)
            removed += 1
    return removed
