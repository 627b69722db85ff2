"""Reconciliation: what should change, before asking where.

Given a job and its existing allocations, the reconciler decides per group
which allocations to keep, stop, update in place, replace, reschedule, and how
many new instances are missing.  It looks at nodes only to learn whether they
are down; choosing nodes is :mod:`podium.scheduler.rank`'s job.  Keeping the
two apart means the same reconciliation serves ``job plan`` (a dry run), and a
system scheduler can later pair its own per-node reconciler with the same
feasibility and ranking code.

Instances are named ``"{job}.{group}[{index}]"``.  Indexes are the identity of
an instance across replacements: a lost, rescheduled or updated allocation is
replaced at the *same* index, scaling down stops the highest indexes, and new
instances take the lowest free ones.  That keeps names stable and lets a person
follow ``web[2]`` through its history.

How :class:`GroupChanges` counts: every existing allocation the reconciler
considers lands in exactly one of ``ignore``, ``in_place_update``,
``destructive_update``, ``stop``, ``lost``, ``reschedule_now`` and
``reschedule_later``.  ``place`` counts the new instances the plan asks for
other than the replacements of destructive updates (so lost and rescheduled
replacements are in ``place`` as well).  Hence, per group, *new allocations
placed + queued == place + destructive_update + canary*.  The counts are
intents, as Nomad's are: what could not be placed is reported separately as
queued.

Deployments (groups with an ``update`` block, service jobs only): the first
evaluation of a job version that places anything creates a deployment, and
every allocation it places joins it.  Outdated allocations are then replaced
``max_parallel`` at a time: each evaluation replaces only as many as leave at
most ``max_parallel`` of the deployment's allocations not yet healthy; the
server's deployment watcher evaluates the job again as instances turn
healthy.  With ``canary: N`` the deployment first places N canaries *beside*
the old instances (at the indexes of the first N they will replace; they do
not take part in index bookkeeping until promoted), and replaces nothing
until promoted; once promoted a canary wins its index and the old instance
there is stopped.  A failed deployment replaces nothing more and its
unpromoted canaries are stopped.  A deployment of an older version still
running is cancelled.  ``depends_on`` holds back a group that has never
been placed until the groups it names are started, healthy or completed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from podium.models import (
    Allocation,
    AllocStop,
    CheckStatus,
    ClientStatus,
    Deployment,
    DeploymentGroup,
    DeploymentStatus,
    DesiredStatus,
    EvalStatus,
    Evaluation,
    Group,
    GroupChanges,
    Job,
    JobType,
    NodeStatus,
    RescheduleEvent,
    ReschedulePolicy,
    TriggeredBy,
    UpdateStrategy,
    tasks_changed,
)
from podium.models.taskconfig import declares_health
from podium.scheduler.snapshot import Snapshot

JOB_STOPPED = "job stopped"
JOB_TEMPLATE = "job became periodic or parameterized (only its launches run)"
JOB_PURGED = "job purged"
GROUP_REMOVED = "alloc not needed: its group was removed from the job"
NODE_LOST = "alloc is lost since its node is down"
SCALED_DOWN = "alloc not needed: group count lowered"
DUPLICATE = "alloc not needed: another allocation holds its index"
UPDATED = "alloc is being replaced by a new job version"
RESCHEDULED = "rescheduled"
CANARY_REMOVED = "alloc not needed: its deployment failed (canary removed)"
REPLACED_BY_CANARY = "alloc replaced by a promoted canary"
NODE_DRAIN = "node drain"
"""Prefix of the description the server's drainer stops allocations with."""
ALLOC_STOP = "stopped by an operator"
"""Prefix of the description ``podium alloc stop`` stops an allocation with."""


def drained(alloc: Allocation) -> bool:
    """Whether the drainer (or an operator's ``alloc stop``, or a higher-priority job's
    preemption) stopped ``alloc`` to move it: its index is refilled and the new instance
    links back to it."""
    return alloc.desired_status == DesiredStatus.STOP and (
        alloc.desired_description.startswith((NODE_DRAIN, ALLOC_STOP))
        or alloc.preempted_by_alloc is not None
    )


FOLLOWUP_BATCH_WINDOW = 5.0
"""Failed allocations due within this many seconds of each other share one follow-up eval.

A group whose instances crash together would otherwise create one delayed
evaluation per instance; Nomad batches the same way.
"""

_MAX_DOUBLINGS = 62
"""Exponential delays stop doubling here; the cap (max_delay) applies long before."""

# Occupant kinds, ordered by preference when two allocations claim one index.
_LIVE_CURRENT = 0
_LIVE_OLD = 1
_FAILED = 2
_DONE = 3


@dataclass(slots=True)
class Placement:
    """One instance the plan must find a node for."""

    group: str
    index: int
    previous: Allocation | None = None
    """The allocation this one replaces (lost, rescheduled, updated), linked for history."""
    stop_previous: str | None = None
    """Stop ``previous`` with this description, but only if this placement succeeds.

    A failed allocation or an old version keeps its place until a successor
    exists, so a full cluster never turns "old version running" into "nothing".
    """
    reschedule: RescheduleEvent | None = None
    """Appended to ``previous``'s reschedule history on the new allocation."""
    deployment_id: str | None = None
    canary: bool = False


@dataclass(slots=True)
class Reconciliation:
    """Everything the reconciler decided for one job."""

    stops: list[AllocStop] = field(default_factory=list)
    updates: list[Allocation] = field(default_factory=list)
    """In-place updates: existing allocations (same id and node) with new fields."""
    place: list[Placement] = field(default_factory=list)
    followups: list[Evaluation] = field(default_factory=list)
    changes: dict[str, GroupChanges] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Sentences for the evaluation's status_description."""
    running: list[Allocation] = field(default_factory=list)
    """Allocations that keep running where they are: the anti-affinity baseline."""
    deployment: Deployment | None = None
    """The deployment to create (new) or to store again (canaries placed)."""
    cancel_deployments: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RescheduleDecision:
    when: Literal["now", "later", "exhausted"]
    at: float
    """When the replacement may be placed (failure time + delay)."""
    delay: float


def reschedule_delay(policy: ReschedulePolicy, alloc: Allocation) -> float:
    """The wait before replacing ``alloc``: constant, or doubling per previous reschedule.

    A crash-looping service backs off (30s, 1m, 2m, ... up to max_delay)
    instead of hammering the cluster with replacements.
    """
    base = policy.delay or 0.0
    if policy.delay_function != "exponential":
        return base
    delay = base * float(2 ** min(len(alloc.reschedule_events), _MAX_DOUBLINGS))
    if policy.max_delay is not None:
        delay = min(delay, policy.max_delay)
    return delay


def reschedule_eligible(policy: ReschedulePolicy, alloc: Allocation) -> bool:
    """Whether the policy allows another attempt, counting attempts within ``interval``
    before the failure (the allocation's modify_time)."""
    if policy.unlimited:
        return True
    attempts = policy.attempts or 0
    if attempts <= 0:
        return False
    interval = policy.interval or 0.0
    failed_at = alloc.modify_time
    recent = sum(1 for ev in alloc.reschedule_events if failed_at - ev.time < interval)
    return recent < attempts


def decide_reschedule(
    alloc: Allocation, policy: ReschedulePolicy, now: float, eval_id: str
) -> RescheduleDecision:
    """Now, later (at ``at``), or never.

    The follow-up evaluation created for ``alloc`` reschedules it even if the
    clock says a moment early: it was created for exactly this, and the
    failure time it was computed from may have been rounded by the store.
    """
    if not reschedule_eligible(policy, alloc):
        return RescheduleDecision("exhausted", math.inf, 0.0)
    delay = reschedule_delay(policy, alloc)
    at = alloc.modify_time + delay
    if now >= at or (alloc.followup_eval_id is not None and alloc.followup_eval_id == eval_id):
        return RescheduleDecision("now", at, delay)
    return RescheduleDecision("later", at, delay)


def _remember(predecessors: dict[int, Allocation], alloc: Allocation) -> None:
    """Keep the newest allocation that ended at each index: the one a new instance succeeds."""
    known = predecessors.get(alloc.index)
    if known is None or (alloc.create_time, alloc.id) > (known.create_time, known.id):
        predecessors[alloc.index] = alloc


def instance_name(job_id: str, group: str, index: int) -> str:
    return f"{job_id}.{group}[{index}]"


def alloc_healthy(alloc: Allocation, group: Group | None = None) -> bool:
    """Running and healthy, for ``depends_on: healthy``: its deployment health when the
    agent judged it, else every check passing; an allocation with no checks at all is
    healthy while it runs, unless its group declares checks that have not reported."""
    if alloc.client_status != ClientStatus.RUNNING:
        return False
    verdict = alloc.health()
    if verdict is not None:
        return verdict
    if alloc.checks:
        return all(c.status == CheckStatus.PASSING for c in alloc.checks.values())
    if group is None:
        return True
    declares = any(s.checks for s in group.services) or any(
        declares_health(t.driver, t.config) for t in group.tasks.values()
    )
    return not declares


def _is_canary_of(alloc: Allocation, deployment: Deployment) -> bool:
    ds = alloc.deployment_status
    return alloc.deployment_id == deployment.id and ds is not None and ds.canary


class Reconciler:
    """Desired state (the job) against actual state (its allocations), per group."""

    def __init__(
        self,
        snapshot: Snapshot,
        job: Job | None,
        evaluation: Evaluation,
        now: float,
        new_id: Callable[[], str],
    ) -> None:
        self._snapshot = snapshot
        self._job = job
        self._eval = evaluation
        self._now = now
        self._new_id = new_id
        self._down: dict[str, bool] = {}
        self._in_place: dict[tuple[str, int], bool] = {}
        self._out = Reconciliation()
        self._deployment: Deployment | None = None
        """The current version's deployment: stored, or created by this evaluation."""
        self._dep_new = False
        self._dep_used = False
        self._by_group: dict[str, list[Allocation]] = {}

    def run(self, allocs: Iterable[Allocation]) -> Reconciliation:
        job = self._job
        latest = None
        if job is not None:
            latest = self._snapshot.latest_deployment(job.id, job.namespace)
        elif self._eval.job_id:
            latest = self._snapshot.latest_deployment(self._eval.job_id, self._eval.namespace)
        if job is None or job.stop or job.template():
            if latest is not None and latest.active():
                why = "job purged" if job is None else "job stopped"
                self._out.cancel_deployments[latest.id] = f"cancelled: {why}"
            reason = JOB_PURGED if job is None else JOB_STOPPED
            if job is not None and not job.stop:
                reason = JOB_TEMPLATE  # periodic/parameterized: only its children run
            self._stop_all(allocs, reason)
            return self._out
        if latest is not None and latest.job_version == job.version:
            self._deployment = latest
        else:
            if latest is not None and latest.active():
                self._out.cancel_deployments[latest.id] = (
                    f"cancelled: job updated to version {job.version}"
                )
            self._deployment = self._new_deployment(job)
        by_group: dict[str, list[Allocation]] = {}
        for alloc in allocs:
            by_group.setdefault(alloc.group, []).append(alloc)
        self._by_group = dict(by_group)
        for name, group in job.spec.groups.items():
            self._group(job, name, group, by_group.pop(name, []))
        for name in sorted(by_group):
            self._stop_all(by_group[name], GROUP_REMOVED)
        if self._deployment is not None and self._dep_used:
            self._out.deployment = self._deployment
        return self._out

    def _new_deployment(self, job: Job) -> Deployment | None:
        """A deployment for this version, kept only if some group places anything."""
        if job.spec.type != JobType.SERVICE:
            return None
        groups: dict[str, DeploymentGroup] = {}
        for name, group in job.spec.groups.items():
            strategy = job.spec.update_strategy(name)
            if strategy is None:
                continue
            deadline = strategy.progress_deadline
            groups[name] = DeploymentGroup(
                desired_total=group.count,
                desired_canaries=strategy.canary,
                auto_revert=strategy.auto_revert,
                auto_promote=strategy.auto_promote,
                progress_deadline=deadline,
                require_progress_by=self._now + deadline if deadline else None,
            )
        if not groups:
            return None
        self._dep_new = True
        return Deployment(
            id=self._new_id(),
            namespace=job.namespace,
            job_id=job.id,
            job_version=job.version,
            job_modify_index=job.job_modify_index,
            status_description="deployment is running",
            groups=groups,
            create_time=self._now,
            modify_time=self._now,
        )

    def _waiting_on(self, job: Job, group: Group) -> list[str]:
        """The ``depends_on`` conditions not met yet, as phrases (empty: go ahead)."""
        waiting: list[str] = []
        for dep, condition in sorted(group.depends_on.items()):
            dep_group = job.spec.groups[dep]
            live = [a for a in self._by_group.get(dep, []) if a.desired_status == DesiredStatus.RUN]
            if condition == "started":
                ok = sum(a.client_status == ClientStatus.RUNNING for a in live)
            elif condition == "healthy":
                ok = sum(alloc_healthy(a, dep_group) for a in live)
            else:
                ok = sum(
                    a.client_status == ClientStatus.COMPLETE
                    and not any(t.failed for t in a.task_states.values())
                    for a in live
                )
            if ok < dep_group.count:
                what = (
                    "completed successfully" if condition == "completed_successfully" else condition
                )
                waiting.append(f"{dep} to be {what} ({ok}/{dep_group.count})")
        return waiting

    # -- helpers -----------------------------------------------------------

    def _changes(self, group: str) -> GroupChanges:
        ch = self._out.changes.get(group)
        if ch is None:
            ch = self._out.changes[group] = GroupChanges()
        return ch

    def _node_down(self, node_id: str) -> bool:
        down = self._down.get(node_id)
        if down is None:
            node = self._snapshot.node(node_id)
            down = node is None or node.status == NodeStatus.DOWN
            self._down[node_id] = down
        return down

    def _stop(self, alloc: Allocation, description: str, *, lost: bool = False) -> None:
        self._out.stops.append(
            AllocStop(
                alloc_id=alloc.id,
                node_id=alloc.node_id,
                description=description,
                client_status=ClientStatus.LOST if lost else None,
            )
        )

    def _stop_all(self, allocs: Iterable[Allocation], description: str) -> None:
        """Stop every allocation still meant to run; those on dead nodes are marked lost too,
        since no agent will ever report them gone."""
        for alloc in sorted(allocs, key=lambda a: (a.group, a.index, a.id)):
            if alloc.terminal():
                continue
            self._stop(alloc, description, lost=self._node_down(alloc.node_id))
            self._changes(alloc.group).stop += 1

    def _can_update_in_place(self, job: Job, name: str, group: Group, version: int) -> bool:
        key = (name, version)
        ok = self._in_place.get(key)
        if ok is None:
            spec = self._snapshot.job_spec(job.id, version, job.namespace)
            old = spec.groups.get(name) if spec is not None else None
            ok = old is not None and not tasks_changed(old, group)
            self._in_place[key] = ok
        return ok

    # -- one group ---------------------------------------------------------

    def _group(self, job: Job, name: str, group: Group, allocs: list[Allocation]) -> None:
        out = self._out
        ch = self._changes(name)
        batch = job.spec.type == JobType.BATCH
        first_placement = not allocs
        strategy = job.spec.update_strategy(name) if job.spec.type == JobType.SERVICE else None
        dep = self._deployment if strategy is not None else None
        dep_group = dep.groups.get(name) if dep is not None else None
        if dep is not None and dep_group is None:
            dep = None  # the group got its update block after the deployment began
        all_allocs = allocs
        canaries: list[Allocation] = []
        if dep is not None and dep_group is not None and not dep_group.promoted:
            rest: list[Allocation] = []
            for alloc in allocs:
                if not _is_canary_of(alloc, dep):
                    rest.append(alloc)
                elif alloc.terminal():
                    continue
                elif not dep.active() or self._node_down(alloc.node_id):
                    down = self._node_down(alloc.node_id)
                    self._stop(alloc, NODE_LOST if down else CANARY_REMOVED, lost=down)
                    ch.stop += 1
                else:
                    canaries.append(alloc)
                    out.running.append(alloc)
            allocs = rest

        occupants: list[tuple[int, Allocation]] = []
        predecessors: dict[int, Allocation] = {}
        # Sorted so the plan does not depend on the order the store returns
        # allocations in (a set's order can differ between processes).
        for alloc in sorted(allocs, key=lambda a: (a.index, a.create_time, a.id)):
            if alloc.desired_status == DesiredStatus.STOP:
                if drained(alloc):
                    # Migrated off a draining node: like a lost one, its index is
                    # refilled elsewhere and the new instance links back to it.
                    _remember(predecessors, alloc)
                continue
            status = alloc.client_status
            if status in (ClientStatus.PENDING, ClientStatus.RUNNING):
                if self._node_down(alloc.node_id):
                    self._stop(alloc, NODE_LOST, lost=True)
                    ch.lost += 1
                    _remember(predecessors, alloc)
                else:
                    kind = _LIVE_CURRENT if alloc.job_version == job.version else _LIVE_OLD
                    occupants.append((kind, alloc))
            elif status == ClientStatus.FAILED and alloc.job_version != job.version:
                # Failed on a version the job has moved on from (say a broken release
                # that was then fixed or reverted): the new version takes its index now,
                # whatever the reschedule policy says of the old one.
                _remember(predecessors, alloc)
            elif status == ClientStatus.FAILED:
                occupants.append((_FAILED, alloc))
            elif status == ClientStatus.COMPLETE and batch:
                # A batch instance that finished is done for good: it holds its index.
                occupants.append((_DONE, alloc))
            else:
                # A service that exited, or an allocation already reported lost:
                # its index is free and the new instance there succeeds it.
                _remember(predecessors, alloc)

        # One allocation per index; a second claimant (only a broken history
        # makes one) is surplus.
        occupants.sort(key=lambda ka: (ka[1].index, ka[0], ka[1].create_time, ka[1].id))
        kept: list[tuple[int, Allocation]] = []
        taken: set[int] = set()
        holder: dict[int, Allocation] = {}
        for kind, alloc in occupants:
            if alloc.index in taken:
                if kind in (_LIVE_CURRENT, _LIVE_OLD):
                    winner = holder[alloc.index]
                    promoted = dep is not None and _is_canary_of(winner, dep)
                    self._stop(alloc, REPLACED_BY_CANARY if promoted else DUPLICATE)
                    ch.stop += 1
                continue
            taken.add(alloc.index)
            holder[alloc.index] = alloc
            kept.append((kind, alloc))

        # Too many: the highest indexes go.  Finished and failed ones have no
        # process to stop; they simply stop counting.
        while len(kept) > group.count:
            kind, alloc = kept.pop()
            taken.discard(alloc.index)
            if kind in (_LIVE_CURRENT, _LIVE_OLD):
                self._stop(alloc, SCALED_DOWN)
                ch.stop += 1

        outdated: list[Allocation] = []
        failed: list[Allocation] = []
        placements: list[Placement] = []
        for kind, alloc in kept:
            if kind == _LIVE_CURRENT:
                ch.ignore += 1
                out.running.append(alloc)
            elif kind == _LIVE_OLD:
                if self._can_update_in_place(job, name, group, alloc.job_version):
                    out.updates.append(
                        alloc.model_copy(
                            update={
                                "job_version": job.version,
                                "eval_id": self._eval.id,
                                "modify_time": self._now,
                            }
                        )
                    )
                    ch.in_place_update += 1
                    out.running.append(alloc)
                else:
                    outdated.append(alloc)
            elif kind == _DONE:
                ch.ignore += 1
            else:
                failed.append(alloc)

        replace_now = outdated  # without a deployment: every one, now
        if dep is not None and dep_group is not None and strategy is not None:
            replace_now = self._gate(
                name, dep, dep_group, strategy, outdated, canaries, all_allocs, placements, ch
            )
        replacing = {a.id for a in replace_now}
        for alloc in outdated:
            if alloc.id in replacing:
                placements.append(
                    Placement(name, alloc.index, previous=alloc, stop_previous=UPDATED)
                )
                ch.destructive_update += 1
            else:
                ch.ignore += 1
                out.running.append(alloc)

        if failed:
            placements.extend(self._reschedule(job, name, group, failed, ch))

        missing = group.count - len(kept)
        if missing > 0 and first_placement and group.depends_on:
            waiting = self._waiting_on(job, group)
            if waiting:
                out.notes.append(f"group {name} waits for " + ", ".join(waiting))
                missing = 0
        index = 0
        while missing > 0:
            if index not in taken:
                placements.append(Placement(name, index, previous=predecessors.get(index)))
                ch.place += 1
                missing -= 1
            index += 1

        if dep is not None and dep.active() and placements:
            for want in placements:
                want.deployment_id = dep.id
            self._dep_used = True
        placements.sort(key=lambda p: (p.index, p.canary))
        out.place.extend(placements)

    def _gate(
        self,
        name: str,
        dep: Deployment,
        dep_group: DeploymentGroup,
        strategy: UpdateStrategy,
        outdated: list[Allocation],
        canaries: list[Allocation],
        all_allocs: list[Allocation],
        placements: list[Placement],
        ch: GroupChanges,
    ) -> list[Allocation]:
        """Which outdated allocations a deployment lets this evaluation replace.

        Places the canaries an unpromoted canary deployment still lacks (and
        replaces nothing); otherwise replaces up to ``max_parallel`` less the
        deployment's allocations not yet healthy.
        """
        if dep.status == DeploymentStatus.SUCCESSFUL:
            return outdated
        if not dep.active():
            if outdated:
                self._out.notes.append(
                    f"group {name}: deployment {dep.id[:8]} {dep.status.value}; "
                    f"{len(outdated)} allocation(s) left on their old version"
                )
            return []
        if self._dep_new:
            # Canaries test an update, one per outdated instance at most; a new job has none.
            dep_group.desired_canaries = min(dep_group.desired_canaries, len(outdated))
        if dep_group.desired_canaries and not dep_group.promoted:
            if not outdated and not canaries:
                return []
            have = {a.index for a in canaries}
            need = dep_group.desired_canaries - len(canaries)
            for alloc in outdated:
                if need <= 0:
                    break
                if alloc.index in have:
                    continue
                placements.append(Placement(name, alloc.index, canary=True))
                ch.canary += 1
                need -= 1
            return []
        # Not yet healthy: this deployment's new instances, and instances a deployment it
        # cancelled placed that were then updated in place (a scale mid-rollout) and still
        # wait for their verdict.  Both count against max_parallel.
        in_flight = sum(
            1
            for a in all_allocs
            if not a.terminal()
            and (
                (a.deployment_id == dep.id and a.health() is not True)
                or (
                    a.deployment_id is not None
                    and a.job_version == dep.job_version
                    and a.health() is None
                )
            )
        )
        limit = max(0, strategy.max_parallel - in_flight)
        return outdated[:limit]

    def _reschedule(
        self, job: Job, name: str, group: Group, failed: list[Allocation], ch: GroupChanges
    ) -> list[Placement]:
        policy = group.reschedule.with_defaults(job.spec.type)
        now = self._now
        placements: list[Placement] = []
        later: list[tuple[float, Allocation]] = []
        exhausted = 0
        for alloc in failed:
            decision = decide_reschedule(alloc, policy, now, self._eval.id)
            if self._eval.force_reschedule:
                decision = RescheduleDecision("now", now, 0.0)
            if decision.when == "now":
                event = RescheduleEvent(
                    time=now,
                    prev_alloc_id=alloc.id,
                    prev_node_id=alloc.node_id,
                    delay=decision.delay,
                )
                placements.append(
                    Placement(
                        name,
                        alloc.index,
                        previous=alloc,
                        stop_previous=RESCHEDULED,
                        reschedule=event,
                    )
                )
                ch.reschedule_now += 1
                ch.place += 1
            elif decision.when == "later":
                if self._followup_waiting(alloc):
                    ch.ignore += 1  # a follow-up evaluation is already waiting for it
                else:
                    later.append((decision.at, alloc))
            else:
                exhausted += 1
                ch.ignore += 1
        if exhausted:
            noun = "allocation" if exhausted == 1 else "allocations"
            self._out.notes.append(
                f"group {name}: {exhausted} failed {noun} not rescheduled "
                "(reschedule attempts exhausted)"
            )

        later.sort(key=lambda ta: (ta[0], ta[1].index, ta[1].id))
        followup: Evaluation | None = None
        for at, alloc in later:
            if followup is None or at - (followup.wait_until or 0.0) > FOLLOWUP_BATCH_WINDOW:
                followup = self._followup_eval(job, at)
                self._out.followups.append(followup)
            # Only the link changes; modify_time stays the failure time the delay counts from.
            self._out.updates.append(alloc.model_copy(update={"followup_eval_id": followup.id}))
            ch.reschedule_later += 1
        return placements

    def _followup_waiting(self, alloc: Allocation) -> bool:
        """Whether the follow-up evaluation this allocation points at will still run.

        The broker may have cancelled it (superseded by another evaluation of the
        job), or it may have failed or been collected: then a new one is needed, or
        the allocation would never be rescheduled.
        """
        if alloc.followup_eval_id is None:
            return False
        ev = self._snapshot.evaluation(alloc.followup_eval_id)
        return ev is not None and not ev.terminal()

    def _followup_eval(self, job: Job, at: float) -> Evaluation:
        return Evaluation(
            id=self._new_id(),
            namespace=job.namespace,
            priority=job.priority,
            type=job.spec.type.value,
            triggered_by=TriggeredBy.RESCHEDULE,
            job_id=job.id,
            job_modify_index=job.job_modify_index,
            status=EvalStatus.PENDING,
            status_description="created to reschedule failed allocations after their delay",
            wait_until=at,
            previous_eval=self._eval.id,
            create_time=self._now,
            modify_time=self._now,
        )


def reconcile(
    snapshot: Snapshot,
    job: Job | None,
    allocs: Iterable[Allocation],
    evaluation: Evaluation,
    now: float,
    new_id: Callable[[], str],
) -> Reconciliation:
    """Decide what changes for ``job`` (None when purged); see the module docstring."""
    return Reconciler(snapshot, job, evaluation, now, new_id).run(allocs)
