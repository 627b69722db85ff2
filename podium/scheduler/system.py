"""The system scheduler: one allocation of each group on every node that can run it.

There is no count and no ranking: the node *is* the decision.  Per group and
per node the scheduler keeps, updates or stops what runs there, then places
on every ready, eligible, non-draining node that passes the same static
filters as service jobs (datacenters, node pool, constraints, drivers) and
has room.  Any evaluation of the job (a registration, a node update) re-diffs
every node, so a node that joins gets its allocation on the next one.

Rules per (group, node):

* the node is down or gone: the allocation is marked lost and *not* replaced
  elsewhere (a system allocation belongs to its node);
* the node no longer passes the static filters (say the job's constraints
  changed): the allocation is stopped;
* a draining or ineligible node keeps what it runs (the drainer stops it),
  but gets nothing new;
* an older job version is updated in place when only placement rules or
  counts changed, otherwise stopped and replaced on the same node;
* a failed or complete allocation of the current version holds its node, as
  in Nomad: a system task that keeps failing is not replaced in a loop;
* filtered nodes are not failures; a node without room (or with a static
  port taken) is, and is reported in ``failed_tg_allocs`` with a blocked
  evaluation, like a service placement that did not fit.

Every allocation is named ``"{job}.{group}[0]"`` (Nomad also uses index 0).
"""

from __future__ import annotations

from collections.abc import Callable

from podium.models import (
    Allocation,
    AllocMetric,
    AllocStop,
    ClientStatus,
    DesiredStatus,
    Evaluation,
    GroupChanges,
    Job,
    Node,
    NodeStatus,
    Plan,
    SchedulerResult,
    tasks_changed,
)
from podium.scheduler.feasible import GroupNeeds, MetricCounter, NodeUsage, PlacementState
from podium.scheduler.generic import (
    MAX_PLACEMENTS,
    continue_eval,
    finish,
    group_template,
    new_alloc,
    preemption_note,
)
from podium.scheduler.preempt import Preemptor, preemption_evals
from podium.scheduler.reconcile import (
    DUPLICATE,
    GROUP_REMOVED,
    NODE_LOST,
    UPDATED,
    Placement,
    reconcile,
)
from podium.scheduler.snapshot import Snapshot

NODE_INFEASIBLE = "alloc not needed: node no longer meets the job's placement rules"


class SystemScheduler:
    """Schedules one evaluation of a system job.  Use once, then discard."""

    def __init__(
        self,
        snapshot: Snapshot,
        evaluation: Evaluation,
        now: float,
        new_id: Callable[[], str],
    ) -> None:
        self._snapshot = snapshot
        self._eval = evaluation
        self._now = now
        self._new_id = new_id

    def run(self) -> SchedulerResult:
        snap = self._snapshot
        ev = self._eval
        job = snap.job(ev.job_id, ev.namespace)
        allocs = snap.allocs_by_job(ev.job_id, ev.namespace)
        plan = Plan(
            eval_id=ev.id,
            job_id=ev.job_id,
            job_version=job.version if job is not None else None,
            priority=job.priority if job is not None else ev.priority,
            snapshot_index=snap.index,
        )
        failed: dict[str, AllocMetric] = {}
        queued: dict[str, int] = {}
        notes: list[str] = []
        new_evals: list[Evaluation] = []
        if job is None or job.stop:
            # Stopping everything is the same for every job type.
            rec = reconcile(snap, job, allocs, ev, self._now, self._new_id)
            plan.stops = list(rec.stops)
            plan.changes = rec.changes
        else:
            deferred = self._schedule(job, allocs, plan, failed, queued)
            if deferred:
                # As for service jobs (generic.MAX_PLACEMENTS): a system job on thousands
                # of nodes is placed in bounded plans, one evaluation after another.
                notes.append(
                    f"placed {MAX_PLACEMENTS} new allocations (the most one evaluation "
                    f"places); {deferred} more in a follow-up evaluation"
                )
                new_evals.append(continue_eval(ev, job, self._new_id(), self._now))
            if plan.preemptions:
                notes.append(preemption_note(plan))
                new_evals += preemption_evals(snap, plan.preemptions, ev, self._new_id, self._now)

        return finish(ev, job, plan, failed, queued, notes, new_evals, self._new_id, self._now)

    def _stop(self, plan: Plan, alloc: Allocation, description: str, *, lost: bool = False) -> None:
        plan.stops.append(
            AllocStop(
                alloc_id=alloc.id,
                node_id=alloc.node_id,
                description=description,
                client_status=ClientStatus.LOST if lost else None,
            )
        )

    def _in_place_ok(self, job: Job, name: str, version: int) -> bool:
        old_spec = self._snapshot.job_spec(job.id, version, job.namespace)
        old = old_spec.groups.get(name) if old_spec is not None else None
        return old is not None and not tasks_changed(old, job.spec.groups[name])

    def _schedule(
        self,
        job: Job,
        allocs: list[Allocation],
        plan: Plan,
        failed: dict[str, AllocMetric],
        queued: dict[str, int],
    ) -> int:
        snap = self._snapshot
        nodes = sorted(snap.nodes(), key=lambda n: n.id)
        by_id = {n.id: n for n in nodes}
        by_group: dict[str, list[Allocation]] = {}
        for alloc in allocs:
            by_group.setdefault(alloc.group, []).append(alloc)

        running: list[Allocation] = []
        wanted: list[tuple[str, Node, Allocation | None, bool]] = []
        needs_by_group: dict[str, GroupNeeds] = {}
        for name, group in job.spec.groups.items():
            ch = plan.changes[name] = GroupChanges()
            needs = needs_by_group[name] = GroupNeeds.of(name, group, job.spec)
            live: dict[str, list[Allocation]] = {}
            held: set[str] = set()
            last: dict[str, Allocation] = {}
            ordered = sorted(by_group.pop(name, []), key=lambda a: (a.create_time, a.id))
            for alloc in ordered:
                node = by_id.get(alloc.node_id)
                status = alloc.client_status
                if alloc.desired_status == DesiredStatus.STOP or status == ClientStatus.LOST:
                    last[alloc.node_id] = alloc
                elif status in (ClientStatus.PENDING, ClientStatus.RUNNING):
                    if node is None or node.status == NodeStatus.DOWN:
                        self._stop(plan, alloc, NODE_LOST, lost=True)
                        ch.lost += 1
                        last[alloc.node_id] = alloc
                    else:
                        live.setdefault(alloc.node_id, []).append(alloc)
                elif alloc.job_version == job.version and not (
                    status == ClientStatus.FAILED and self._eval.force_reschedule
                ):
                    held.add(alloc.node_id)  # failed or complete: holds its node
                    ch.ignore += 1
                else:
                    last[alloc.node_id] = alloc

            for node_id, claimants in live.items():
                claimants.sort(key=lambda a: (a.job_version != job.version, -a.create_time, a.id))
                alloc, extra = claimants[0], claimants[1:]
                for dup in extra:
                    self._stop(plan, dup, DUPLICATE)
                    ch.stop += 1
                node = by_id[node_id]
                held.add(node_id)
                if node.ready() and needs.static_reason(node) is not None:
                    self._stop(plan, alloc, NODE_INFEASIBLE)
                    ch.stop += 1
                elif alloc.job_version == job.version:
                    ch.ignore += 1
                    running.append(alloc)
                elif self._in_place_ok(job, name, alloc.job_version):
                    plan.placements.append(
                        alloc.model_copy(
                            update={
                                "job_version": job.version,
                                "eval_id": self._eval.id,
                                "modify_time": self._now,
                            }
                        )
                    )
                    ch.in_place_update += 1
                    running.append(alloc)
                else:
                    # Same node or nothing: stop now and place the new version.
                    self._stop(plan, alloc, UPDATED)
                    ch.destructive_update += 1
                    wanted.append((name, node, alloc, True))

            for node in nodes:
                if node.id not in held and node.schedulable():
                    wanted.append((name, node, last.get(node.id), False))

        for name in sorted(by_group):
            for alloc in sorted(by_group[name], key=lambda a: (a.node_id, a.id)):
                if not alloc.terminal():
                    node = by_id.get(alloc.node_id)
                    down = node is None or node.status == NodeStatus.DOWN
                    self._stop(plan, alloc, GROUP_REMOVED, lost=down)
                    plan.changes.setdefault(name, GroupChanges()).stop += 1

        return self._place(job, wanted, needs_by_group, running, plan, failed, queued)

    def _place(
        self,
        job: Job,
        wanted: list[tuple[str, Node, Allocation | None, bool]],
        needs_by_group: dict[str, GroupNeeds],
        running: list[Allocation],
        plan: Plan,
        failed: dict[str, AllocMetric],
        queued: dict[str, int],
    ) -> int:
        """Place ``wanted`` up to MAX_PLACEMENTS new allocations; returns how many were
        left for a follow-up evaluation."""
        snap = self._snapshot
        usage = NodeUsage(snap)
        state = PlacementState(snap, running, released=(s.alloc_id for s in plan.stops))
        metrics: dict[str, MetricCounter] = {}
        failures: dict[str, int] = {}
        placed_before = len(plan.placements)  # in-place updates are not new allocations
        for name in job.spec.groups:
            queued[name] = 0
        templates = {
            name: group_template(needs, job.spec.groups[name])
            for name, needs in needs_by_group.items()
        }
        deferred = 0
        preemptor: Preemptor | None = None
        may_preempt: bool | None = None  # read the first time a node lacks room, never before
        for name, node, previous, destructive in wanted:
            needs = needs_by_group[name]
            if len(plan.placements) >= MAX_PLACEMENTS + placed_before:
                queued[name] += 1
                deferred += 1
                continue
            metric = metrics.setdefault(name, MetricCounter())
            metric.evaluated += 1
            reason = needs.static_reason(node)
            if reason is not None:
                metric.filter(reason)  # not a failure: the node is not for this job
                continue
            refusal = state.devices.check(node, needs.devices) if needs.devices else None
            if refusal is not None and not refusal.exhausted:
                metric.filter(refusal.reason)  # no such devices: not for this node
                continue
            if not destructive:
                plan.changes[name].place += 1  # destructive updates are counted already
            if refusal is not None:
                metric.exhaust(refusal.reason)
                failures[name] = failures.get(name, 0) + 1
                continue
            if needs.placement_dependent:
                reason = state.dynamic_reason(
                    needs, node, previous.id if previous is not None else None
                )
                if reason is not None:
                    metric.filter(reason)
                    failures[name] = failures.get(name, 0) + 1
                    continue
            st = usage.state(node)
            dim = st.exhausted(needs.cpu, needs.memory)
            found = None
            if dim is not None:
                if may_preempt is None:
                    config = snap.scheduler_config().preemption_config
                    may_preempt = config.enabled("system")
                if may_preempt:
                    if preemptor is None:
                        preemptor = Preemptor(snap, usage, job.priority)
                    found = preemptor.on_node(st, needs.cpu, needs.memory)
                if found is None:
                    metric.exhaust(dim)
                    metric.note_free((st,))
                    failures[name] = failures.get(name, 0) + 1
                    continue
            alloc_id = self._new_id()
            preempted = None
            if found is not None:
                assert preemptor is not None
                taken = preemptor.take(st, found[1], alloc_id, job.id)
                plan.preemptions += taken
                preempted = [p.alloc_id for p in taken]
            st.reserve(needs.cpu, needs.memory)
            state.record(needs, node)
            alloc = new_alloc(
                self._eval,
                job,
                Placement(name, 0, previous=previous),
                node.id,
                node.name,
                templates[name],
                alloc_id,
                self._now,
                preempted,
            )
            if needs.devices:
                alloc.devices = state.devices.take(node, needs.devices)
            plan.placements.append(alloc)
        for name, n in failures.items():
            needs = needs_by_group[name]
            metric_out = metrics[name].to_metric(
                nodes_available=metrics[name].evaluated, cpu=needs.cpu, memory=needs.memory
            )
            metric_out.coalesced_failures = n - 1
            failed[name] = metric_out
            queued[name] += n
        return deferred


def schedule_system(
    snapshot: Snapshot,
    evaluation: Evaluation,
    now: float,
    new_id: Callable[[], str],
    candidate_limit: int | None = None,
) -> SchedulerResult:
    """``candidate_limit`` is accepted for the common signature; a system job has no ranking."""
    return SystemScheduler(snapshot, evaluation, now, new_id).run()
