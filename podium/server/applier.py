"""The plan applier: the single committer of scheduling decisions.

Schedulers plan optimistically against a snapshot; by the time a plan arrives
the cluster may have changed (a node went down, another plan filled it).  The
applier re-checks every node a plan places on against the *latest* state and
commits the whole plan, with the evaluation's outcome, in one transaction.  If
any node no longer fits, nothing is committed and the worker re-plans on a
fresh snapshot (Nomad's ``plan_apply.go`` commits the fitting part; plans here
are per job and cheap to redo, so all-or-nothing keeps the invariant simple).

The rule itself (the re-check, and every row a plan writes) is
:func:`podium.scheduler.commit.commit_plan`, which the scheduler's test harness
applies too, so the harness can never commit what this would refuse.  What is
left here is the server's part: one store transaction, and the service catalog
kept in step with the allocations in that same transaction.
"""

from __future__ import annotations

from podium.models import PlanResult, SchedulerResult
from podium.scheduler.commit import commit_plan, rejected_nodes
from podium.server import catalog
from podium.state import StateStore


class PlanApplier:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def check(self, result: SchedulerResult) -> list[str]:
        """Nodes on which the plan's placements no longer fit."""
        return rejected_nodes(self.store, result.plan)

    def apply(self, result: SchedulerResult, now: float) -> PlanResult:
        store = self.store
        txn = store.txn()
        verdict = commit_plan(store, result, now, txn.index)
        if not verdict.accepted:
            return PlanResult(index=store.index, rejected_nodes=verdict.rejected_nodes)
        for alloc in verdict.allocs.values():
            txn.put_alloc(alloc)
        for dep in verdict.deployments.values():
            txn.put_deployment(dep)
        for ev in verdict.evals:
            txn.put_eval(ev)
        catalog.sync_txn(store, txn)  # stopped instances leave the catalog in this very commit
        index = store.commit(txn)
        return PlanResult(
            index=index,
            committed_placements=verdict.placed,
            committed_stops=verdict.stopped,
            committed_preemptions=verdict.preempted,
        )
