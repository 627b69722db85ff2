"""The commit rule: whether a scheduler's plan may commit, and exactly what it writes.

One function, :func:`commit_plan`, decides for both committers of plans: the server's
plan applier (``podium.server.applier``, over the state store) and the scheduler's test
harness (``podium.scheduler.harness``, over dictionaries).  Before it existed the harness
had a rule of its own (it committed the nodes that still fitted and dropped the rest,
and always applied stops) while the applier refused a plan whole, so a scheduler test
could pass on a partial commit that the real server would never make.

The rule (Nomad's ``plan_apply.go`` re-check, but all-or-nothing): every node the plan
places on is re-checked against the *latest* state (:func:`rejected_nodes`); if any no
longer fits, nothing at all is written, not even the evaluation's outcome, and the
caller re-plans on a fresh state.  Otherwise the verdict carries every row the commit
writes, stamped with the commit's index: allocations (placements, in-place updates that
keep what the agent reported meanwhile, the ``next_allocation`` links of replaced ones,
stops), deployments (created, canaries merged, older ones cancelled), the evaluation's
outcome and its follow-up evaluations.

Preemptions (:mod:`podium.scheduler.preempt`) are re-checked the same way: each victim
must still be the allocation the scheduler chose from (present, on the same node,
meant to run and not finished, of the same job version) and its job must still be at
least :data:`~podium.models.schedconfig.PRIORITY_DELTA` priority points below the
plan's.  A stale preemption refuses its node, so the plan commits nothing and is made
again on the latest state, like a placement that no longer fits.  A victim's
resources count as freed on its node, as a stop's do.

It is pure (a view, a result, ``now`` and the index the commit will take in, a
:class:`PlanCommit` out) and lives in the scheduler package because that is the layer
both committers may import (scheduler imports only models; state may not import the
scheduler; the harness may not import the server).  Writing the rows is the caller's:
the applier puts them in one store transaction together with what only the server
keeps (the service catalog), the harness stores them in its dictionaries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from podium.models import (
    Allocation,
    Deployment,
    DeploymentStatus,
    DesiredStatus,
    Evaluation,
    Job,
    Node,
    Plan,
    SchedulerResult,
)
from podium.models.plan import Preemption
from podium.models.schedconfig import PRIORITY_DELTA
from podium.scheduler.devices import conflicts, held

PLAN_ATTEMPTS = 3
"""How many times an evaluation is planned before a plan that keeps going stale fails it."""


class CommitView(Protocol):
    """What the commit rule reads: the latest state, not the scheduler's snapshot."""

    def node(self, node_id: str) -> Node | None: ...

    def alloc(self, alloc_id: str) -> Allocation | None: ...

    def node_usage(self, node_id: str) -> tuple[int, int]:
        """(cpu, memory) held on the node by allocations whose tasks have not exited."""
        ...

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        """The node's allocations (the device re-check reads which instances they hold)."""
        ...

    def deployment(self, deployment_id: str) -> Deployment | None: ...

    def job(self, job_id: str, namespace: str = "default") -> Job | None:
        """A job as stored now (a preemption's victim must still be of lower priority)."""
        ...


@dataclass
class PlanCommit:
    """The verdict on one plan: the nodes that refuse it, or the rows it writes."""

    index: int
    """The index the commit takes (stamped on every row)."""
    rejected_nodes: list[str] = field(default_factory=list)
    """Nodes where the plan no longer fits; when any, there are no rows: nothing commits."""
    allocs: dict[str, Allocation] = field(default_factory=dict)
    """Allocations to write, by id, in the order they were decided."""
    deployments: dict[str, Deployment] = field(default_factory=dict)
    evals: list[Evaluation] = field(default_factory=list)
    """The evaluation's outcome first, then the follow-ups the plan created."""
    placed: int = 0
    """New allocations (not in-place updates)."""
    stopped: int = 0
    preempted: int = 0

    @property
    def accepted(self) -> bool:
        return not self.rejected_nodes


def stale_preemption(view: CommitView, plan: Plan, preemption: Preemption) -> str | None:
    """Why ``preemption`` no longer holds on the latest state, or None."""
    victim = view.alloc(preemption.alloc_id)
    if victim is None:
        return "the allocation is gone"
    if victim.node_id != preemption.node_id:
        return "the allocation moved"
    if victim.desired_status != DesiredStatus.RUN or victim.client_status.terminal:
        return "the allocation is already stopping or finished"
    if victim.job_version != preemption.job_version:
        return "the allocation changed"
    job = view.job(victim.job_id, victim.namespace)
    if job is None or job.priority > plan.priority - PRIORITY_DELTA:
        return "its job's priority is no longer low enough"
    return None


def rejected_nodes(view: CommitView, plan: Plan) -> list[str]:
    """Nodes on which the plan's placements no longer fit the latest state, or whose
    preemptions went stale."""
    by_node: dict[str, list[Allocation]] = defaultdict(list)
    for alloc in plan.placements:
        by_node[alloc.node_id].append(alloc)
    placed = {a.id for a in plan.placements}
    stopping: dict[str, list[Allocation]] = defaultdict(list)
    for stop in plan.stops:
        stopped = view.alloc(stop.alloc_id)
        if stopped is not None and stopped.id not in placed:
            stopping[stopped.node_id].append(stopped)
    rejected: list[str] = []
    for preemption in plan.preemptions:
        node_id = preemption.node_id
        if stale_preemption(view, plan, preemption) is not None:
            if node_id not in rejected:
                rejected.append(node_id)
            continue
        victim = view.alloc(preemption.alloc_id)
        if victim is not None and victim.id not in placed:
            stopping[node_id].append(victim)
    for node_id, allocs in by_node.items():
        if node_id in rejected:
            continue
        node = view.node(node_id)
        if node is None:
            rejected.append(node_id)
            continue
        olds = [(a, view.alloc(a.id)) for a in allocs]
        fresh = any(old is None for _, old in olds)
        if fresh and not node.schedulable():
            rejected.append(node_id)
            continue
        why = _device_conflict(view, node, allocs, olds, stopping.get(node_id, ()))
        if why is not None:
            rejected.append(node_id)
            continue
        grows = any(
            old is not None
            and (a.resources.cpu > old.resources.cpu or a.resources.memory > old.resources.memory)
            for a, old in olds
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
        cpu, mem = view.node_usage(node_id)
        replaced = [old for _, old in olds if old is not None]
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


def _device_conflict(
    view: CommitView,
    node: Node,
    allocs: list[Allocation],
    olds: list[tuple[Allocation, Allocation | None]],
    stopping: Iterable[Allocation],
) -> str | None:
    """Why the device instances this plan gives on ``node`` cannot commit (one is held by
    another allocation of the latest state, given twice, or not a healthy device of the
    node), or None.  Instances of allocations the plan replaces or stops are free."""
    giving = [a for a, old in olds if a.devices and (old is None or old.devices != a.devices)]
    if not giving:
        return None
    skip = {a.id for a in allocs} | {a.id for a in stopping}
    return conflicts(node, giving, held(view.allocs_by_node(node.id), skip))


def commit_plan(view: CommitView, result: SchedulerResult, now: float, index: int) -> PlanCommit:
    """Judge ``result`` against ``view`` and, if it fits everywhere, build every row its
    commit at ``index`` writes (see the module's docstring)."""
    plan = result.plan
    rejected = rejected_nodes(view, plan)
    if rejected:
        return PlanCommit(index=index, rejected_nodes=rejected)
    out = PlanCommit(index=index)
    rows = out.allocs
    for alloc in plan.placements:
        old = view.alloc(alloc.id)
        if old is None:
            alloc = alloc.model_copy(update={"create_index": index, "modify_index": index})
            out.placed += 1
        else:
            # in-place update: keep what the agent reported meanwhile
            alloc = alloc.model_copy(
                update={
                    "create_index": old.create_index,
                    "modify_index": index,
                    "client_status": old.client_status,
                    "client_description": old.client_description,
                    "task_states": old.task_states,
                    "ports": old.ports,
                    "checks": old.checks,
                }
            )
        rows[alloc.id] = alloc
        if alloc.previous_allocation:
            prev = view.alloc(alloc.previous_allocation)
            if prev is not None and prev.next_allocation != alloc.id:
                current = rows.get(prev.id, prev)
                rows[prev.id] = current.model_copy(
                    update={"next_allocation": alloc.id, "modify_index": index}
                )
    for stop in plan.stops:
        current_or_none = rows.get(stop.alloc_id) or view.alloc(stop.alloc_id)
        if current_or_none is None:
            continue
        update: dict[str, object] = {
            "desired_status": DesiredStatus.STOP,
            "desired_description": stop.description,
            "modify_index": index,
            "modify_time": now,
        }
        if stop.client_status is not None and not current_or_none.client_status.terminal:
            update["client_status"] = stop.client_status
            update["client_description"] = stop.description
        if stop.followup_eval_id:
            update["followup_eval_id"] = stop.followup_eval_id
        rows[stop.alloc_id] = current_or_none.model_copy(update=update)
        out.stopped += 1
    for preemption in plan.preemptions:
        victim = rows.get(preemption.alloc_id) or view.alloc(preemption.alloc_id)
        if victim is None:
            continue  # cannot happen: a missing victim refused the plan above
        rows[victim.id] = victim.model_copy(
            update={
                "desired_status": DesiredStatus.STOP,
                "desired_description": preemption.description,
                "preempted_by_alloc": preemption.preempted_by_alloc,
                "preempted_by_job": preemption.preempted_by_job,
                "modify_index": index,
                "modify_time": now,
            }
        )
        out.preempted += 1
    _deployments(view, out, plan, now)
    out.evals.append(
        result.eval_update.model_copy(update={"modify_index": index, "modify_time": now})
    )
    for new_ev in result.new_evals:
        out.evals.append(
            new_ev.model_copy(
                update={
                    "create_index": index,
                    "modify_index": index,
                    "create_time": now,
                    "modify_time": now,
                }
            )
        )
    return out


def _deployments(view: CommitView, out: PlanCommit, plan: Plan, now: float) -> None:
    """The deployment a plan creates, or the canaries it added to the running one (its
    status and counts are the deployment watcher's, so those are kept), and the
    cancellation of the deployments of older versions."""
    index = out.index
    dep = plan.deployment
    if dep is not None:
        stored = view.deployment(dep.id)
        if stored is None:
            out.deployments[dep.id] = dep.model_copy(
                update={"create_index": index, "modify_index": index}
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
                out.deployments[dep.id] = merged.model_copy(
                    update={"modify_index": index, "modify_time": now}
                )
    for dep_id, why in plan.cancel_deployments.items():
        stored = view.deployment(dep_id)
        if stored is not None and stored.active():
            out.deployments[dep_id] = stored.model_copy(
                update={
                    "status": DeploymentStatus.CANCELLED,
                    "status_description": why,
                    "modify_index": index,
                    "modify_time": now,
                }
            )
