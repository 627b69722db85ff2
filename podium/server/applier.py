"""The plan applier: the single committer of scheduling decisions.

Schedulers plan optimistically against a snapshot; by the time a plan arrives
the cluster may have changed (a node went down, another plan filled it).  The
applier re-checks every node a plan places on against the *latest* state and
commits the whole plan, with the evaluation's outcome, in one transaction.  If
any node no longer fits, nothing is committed and the worker re-plans on a
fresh snapshot (Nomad's ``plan_apply.go`` commits the fitting part; plans here
are per job and cheap to redo, so all-or-nothing keeps the invariant simple).
"""

from __future__ import annotations

from collections import defaultdict

from podium.models import (
    Allocation,
    DeploymentStatus,
    DesiredStatus,
    PlanResult,
    SchedulerResult,
)
from podium.server import catalog
from podium.state import StateStore, Txn


class PlanApplier:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def check(self, result: SchedulerResult) -> list[str]:
        """Nodes on which the plan's placements no longer fit."""
        plan = result.plan
        store = self.store
        by_node: dict[str, list[Allocation]] = defaultdict(list)
        for alloc in plan.placements:
            by_node[alloc.node_id].append(alloc)
        placed = {a.id for a in plan.placements}
        stopping: dict[str, list[Allocation]] = defaultdict(list)
        for stop in plan.stops:
            stopped = store.alloc(stop.alloc_id)
            if stopped is not None and stopped.id not in placed:
                stopping[stopped.node_id].append(stopped)
        rejected: list[str] = []
        for node_id, allocs in by_node.items():
            node = store.node(node_id)
            new_ids = {a.id for a in allocs}
            fresh = [a for a in allocs if store.alloc(a.id) is None]
            if node is None:
                rejected.append(node_id)
                continue
            if fresh and not node.schedulable():
                rejected.append(node_id)
                continue
            grows = any(
                (old := store.alloc(a.id)) is not None
                and (
                    a.resources.cpu > old.resources.cpu or a.resources.memory > old.resources.memory
                )
                for a in allocs
            )
            if not fresh and not grows:
                # Only in-place updates that ask for no more than before: nothing here can
                # over-commit the node, even one whose capacity shrank under its load.
                continue
            cap = node.capacity()
            # What the node holds now (kept by the store as allocations change), less what
            # this plan replaces: allocations it updates in place (counted below in their
            # new form) and the ones it stops.  A stopping task holds its resources until
            # it exits, but counting them would forbid every destructive update on a full
            # node; Nomad frees them at plan time too.
            cpu, mem = store.node_usage(node_id)
            replaced = [e for i in new_ids if (e := store.alloc(i)) is not None]
            for existing in [*replaced, *stopping.get(node_id, ())]:
                if existing.node_id == node_id and existing.uses_resources():
                    cpu -= existing.resources.cpu
                    mem -= existing.resources.memory
            for a in allocs:
                if a.desired_status == DesiredStatus.RUN and not a.client_status.terminal:
                    cpu += a.resources.cpu
                    mem += a.resources.memory
            if cpu > cap.cpu or mem > cap.memory:
                rejected.append(node_id)
        return rejected

    def apply(self, result: SchedulerResult, now: float) -> PlanResult:
        rejected = self.check(result)
        if rejected:
            return PlanResult(index=self.store.index, rejected_nodes=rejected)
        store = self.store
        txn = store.txn()
        plan = result.plan
        placed = 0
        for alloc in plan.placements:
            old = store.alloc(alloc.id)
            if old is None:
                alloc = alloc.model_copy(
                    update={"create_index": txn.index, "modify_index": txn.index}
                )
                placed += 1
            else:
                # in-place update: keep what the agent reported meanwhile
                alloc = alloc.model_copy(
                    update={
                        "create_index": old.create_index,
                        "modify_index": txn.index,
                        "client_status": old.client_status,
                        "client_description": old.client_description,
                        "task_states": old.task_states,
                        "ports": old.ports,
                        "checks": old.checks,
                    }
                )
            txn.put_alloc(alloc)
            if alloc.previous_allocation:
                prev = store.alloc(alloc.previous_allocation)
                if prev is not None and prev.next_allocation != alloc.id:
                    txn.puts["allocs"].setdefault(prev.id, prev)
                    current = txn.puts["allocs"][prev.id]
                    txn.put_alloc(
                        current.model_copy(
                            update={"next_allocation": alloc.id, "modify_index": txn.index}
                        )
                    )
        stopped = 0
        for stop in plan.stops:
            current = txn.puts["allocs"].get(stop.alloc_id) or store.alloc(stop.alloc_id)
            if current is None:
                continue
            update: dict[str, object] = {
                "desired_status": DesiredStatus.STOP,
                "desired_description": stop.description,
                "modify_index": txn.index,
                "modify_time": now,
            }
            if stop.client_status is not None and not current.client_status.terminal:
                update["client_status"] = stop.client_status
                update["client_description"] = stop.description
            if stop.followup_eval_id:
                update["followup_eval_id"] = stop.followup_eval_id
            txn.put_alloc(current.model_copy(update=update))
            stopped += 1
        _commit_deployments(store, txn, result, now)
        ev = result.eval_update.model_copy(update={"modify_index": txn.index, "modify_time": now})
        txn.put_eval(ev)
        for new_ev in result.new_evals:
            txn.put_eval(
                new_ev.model_copy(
                    update={
                        "create_index": txn.index,
                        "modify_index": txn.index,
                        "create_time": now,
                        "modify_time": now,
                    }
                )
            )
        catalog.sync_txn(store, txn)  # stopped instances leave the catalog in this very commit
        index = store.commit(txn)
        return PlanResult(index=index, committed_placements=placed, committed_stops=stopped)


def _commit_deployments(store: StateStore, txn: Txn, result: SchedulerResult, now: float) -> None:
    """Store the deployment a plan creates, or the canaries it added to the running one
    (its status and counts are the deployment watcher's, so those are kept), and cancel
    the deployments of older versions."""
    plan = result.plan
    dep = plan.deployment
    if dep is not None:
        stored = store.deployment(dep.id)
        if stored is None:
            txn.put_deployment(
                dep.model_copy(update={"create_index": txn.index, "modify_index": txn.index})
            )
        else:
            merged = stored.model_copy(deep=True)
            changed = False
            for name, group in dep.groups.items():
                have = merged.groups.get(name)
                if have is None:
                    continue
                for alloc_id in group.placed_canaries:
                    if alloc_id not in have.placed_canaries:
                        have.placed_canaries.append(alloc_id)
                        changed = True
            if changed:
                txn.put_deployment(
                    merged.model_copy(update={"modify_index": txn.index, "modify_time": now})
                )
    for dep_id, why in plan.cancel_deployments.items():
        stored = store.deployment(dep_id)
        if stored is not None and stored.active():
            txn.put_deployment(
                stored.model_copy(
                    update={
                        "status": DeploymentStatus.CANCELLED,
                        "status_description": why,
                        "modify_index": txn.index,
                        "modify_time": now,
                    }
                )
            )
