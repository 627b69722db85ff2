"""The deployment watcher: moves rolling deployments along from the health agents report.

The scheduler creates a deployment and places each batch (see
:mod:`podium.scheduler.reconcile`); this module decides everything that
depends on time and on health, the way Nomad's ``deploymentwatcher`` does:

- counts per group (placed, healthy, unhealthy) kept on the deployment, so
  ``podium deployment status`` and ``job run`` can show progress;
- a newly healthy instance is progress: the group's progress deadline moves
  out, and the job is evaluated again so the next batch is placed;
- an unhealthy instance, or a group without progress past its deadline,
  fails the deployment; with ``auto_revert`` the job is registered again at
  its last version that deployed successfully (a *stable* version);
- canaries are promoted by a person (``podium deployment promote``) or, with
  ``auto_promote``, once they are all healthy;
- when every group runs ``count`` healthy instances of the new version, the
  deployment is successful and its job version is marked stable.

Work happens inside the caller's store transaction where one is open (an
agent's report), so a health report and the deployment change it causes
commit together.  Reverts register a new job version, which is its own
transaction, so they are returned to be carried out after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from podium.errors import NotFound
from podium.models import (
    Allocation,
    ClientStatus,
    Deployment,
    DeploymentGroup,
    DeploymentStatus,
    DesiredStatus,
    Evaluation,
    Job,
    JobSpec,
    TriggeredBy,
    format_duration,
)
from podium.state import StateStore, Txn

log = logging.getLogger("podium.server.deployments")

NewEval = Callable[[Job, TriggeredBy, int, float], Evaluation]


@dataclass
class Revert:
    job_id: str
    version: int
    reason: str
    namespace: str = "default"


@dataclass
class Outcome:
    """What a refresh asks of its caller once the transaction is committed."""

    evals: list[Evaluation] = field(default_factory=list)
    reverts: list[Revert] = field(default_factory=list)

    def merge(self, other: Outcome) -> None:
        self.evals.extend(other.evals)
        self.reverts.extend(other.reverts)


class DeploymentWatcher:
    def __init__(self, store: StateStore, new_eval: NewEval) -> None:
        self._store = store
        self._new_eval = new_eval

    # -- reading, through the open transaction ---------------------------------
    def _allocs(self, txn: Txn, dep: Deployment) -> list[Allocation]:
        pending: dict[str, Allocation] = txn.puts["allocs"]
        out = {a.id: a for a in self._store.allocs_by_job(dep.job_id, dep.namespace)}
        for alloc in pending.values():
            if alloc.job_id == dep.job_id and alloc.namespace == dep.namespace:
                out[alloc.id] = alloc
        return list(out.values())

    def _current(self, txn: Txn, dep_id: str) -> Deployment | None:
        pending: dict[str, Deployment] = txn.puts["deployments"]
        return pending.get(dep_id) or self._store.deployment(dep_id)

    def active_for(self, job_id: str, namespace: str = "default") -> Deployment | None:
        dep = self._store.latest_deployment(job_id, namespace)
        return dep if dep is not None and dep.active() else None

    # -- the decision ----------------------------------------------------------
    def refresh(
        self, txn: Txn, deployment_ids: Iterable[str], now: float, *, deadlines: bool = False
    ) -> Outcome:
        """Bring each deployment's counts and status up to date within ``txn``."""
        outcome = Outcome()
        for dep_id in sorted(set(deployment_ids)):
            dep = self._current(txn, dep_id)
            if dep is None or not dep.active():
                continue
            outcome.merge(self._refresh_one(txn, dep, now, deadlines))
        return outcome

    def _refresh_one(self, txn: Txn, dep: Deployment, now: float, deadlines: bool) -> Outcome:
        store = self._store
        outcome = Outcome()
        job = store.job(dep.job_id, dep.namespace)
        spec = store.job_spec(dep.job_id, dep.job_version, dep.namespace)
        if job is None or spec is None or job.stop or job.version != dep.job_version:
            # The scheduler cancels it on the job's next evaluation.
            return outcome
        new = dep.model_copy(deep=True)
        allocs = self._allocs(txn, dep)
        progressed = promoted = False
        failure = ""
        done = True
        for name, group in new.groups.items():
            mine = [a for a in allocs if a.group == name and a.deployment_id == dep.id]
            healthy = [
                a for a in mine if a.desired_status == DesiredStatus.RUN and a.health() is True
            ]
            unhealthy = [
                a
                for a in mine
                if a.health() is False
                or (
                    a.client_status == ClientStatus.FAILED
                    and a.desired_status == DesiredStatus.RUN
                    and a.health() is None
                )
            ]
            if len(healthy) > group.healthy_allocs:
                progressed = True
                if group.progress_deadline:
                    group.require_progress_by = now + group.progress_deadline
            group.placed_allocs = len(mine)
            group.healthy_allocs = len(healthy)
            group.unhealthy_allocs = len(unhealthy)
            if unhealthy and not failure:
                bad = min(unhealthy, key=lambda a: a.name)
                why = (bad.deployment_status.description if bad.deployment_status else "") or (
                    bad.client_description
                )
                failure = f"allocation {bad.name} is unhealthy" + (f": {why}" if why else "")
            canaries_ok = [a for a in healthy if a.deployment_status and a.deployment_status.canary]
            awaiting_promotion = (
                group.desired_canaries > 0
                and not group.promoted
                and len(canaries_ok) >= group.desired_canaries
            )
            if awaiting_promotion and group.auto_promote:
                group.promoted = True
                promoted = True
                awaiting_promotion = False
                if group.progress_deadline:
                    group.require_progress_by = now + group.progress_deadline
            group_done = self._group_done(name, group, spec, allocs, dep)
            done = done and group_done
            if (
                deadlines
                and not group_done
                and not awaiting_promotion  # healthy canaries wait for a person, not a clock
                and not failure
                and group.require_progress_by is not None
                and now > group.require_progress_by
            ):
                failure = (
                    f"group {name} made no progress within its progress deadline "
                    f"({format_duration(group.progress_deadline)})"
                )
        if failure:
            self._fail(txn, new, job, failure, now, outcome)
            return outcome
        if done:
            new.status = DeploymentStatus.SUCCESSFUL
            new.status_description = "deployment completed successfully"
            self._mark_stable(txn, job, dep.job_version)
            log.info("deployment %s of job %s v%d succeeded", dep.id, job.id, dep.job_version)
        elif promoted:
            new.status_description = "canaries healthy: promoted automatically"
        if new != dep:
            new = new.model_copy(update={"modify_index": txn.index, "modify_time": now})
            txn.put_deployment(new)
        if (progressed or promoted) and not done:
            outcome.evals.append(self._eval(txn, job, now))
        return outcome

    @staticmethod
    def _group_done(
        name: str, group: DeploymentGroup, spec: JobSpec, allocs: list[Allocation], dep: Deployment
    ) -> bool:
        if group.desired_canaries and not group.promoted:
            return False
        want = spec.groups[name].count if name in spec.groups else group.desired_total
        live = [
            a
            for a in allocs
            if a.group == name
            and a.desired_status == DesiredStatus.RUN
            and not a.client_status.terminal
        ]
        if len(live) != want:
            return False
        for a in live:
            if a.job_version != dep.job_version:
                return False
            if a.deployment_id == dep.id and a.health() is not True:
                return False
            if a.deployment_id is not None and a.health() is None:
                # placed by a deployment this one cancelled and updated in place since:
                # its verdict is still to come
                return False
        return True

    def _eval(self, txn: Txn, job: Job, now: float) -> Evaluation:
        ev = self._new_eval(job, TriggeredBy.DEPLOYMENT_WATCHER, txn.index, now)
        txn.put_eval(ev)
        return ev

    def _mark_stable(self, txn: Txn, job: Job, version: int) -> None:
        for v in self._store.job_versions(job.id, job.namespace):
            if v.version == version and not v.stable:
                txn.put_version(v.model_copy(update={"stable": True}))
        if job.version == version and not job.stable:
            txn.put_job(job.model_copy(update={"stable": True, "modify_index": txn.index}))

    def _fail(
        self, txn: Txn, dep: Deployment, job: Job, why: str, now: float, outcome: Outcome
    ) -> None:
        description = f"failed: {why}"
        if any(g.auto_revert for g in dep.groups.values()):
            target = self._stable_version(job, dep.job_version)
            if target is None:
                description += (
                    "; not rolled back: no earlier version deployed successfully, or the last "
                    "one that did is what is running"
                )
            else:
                description += f"; rolling back to version {target}"
                outcome.reverts.append(
                    Revert(job.id, target, f"deployment {dep.id[:8]} failed: {why}", job.namespace)
                )
        log.warning("deployment %s of job %s v%d %s", dep.id, job.id, dep.job_version, description)
        txn.put_deployment(
            dep.model_copy(
                update={
                    "status": DeploymentStatus.FAILED,
                    "status_description": description,
                    "modify_index": txn.index,
                    "modify_time": now,
                }
            )
        )
        # Evaluate again: unpromoted canaries are stopped; nothing more is replaced.
        outcome.evals.append(self._eval(txn, job, now))

    def _stable_version(self, job: Job, failed_version: int) -> int | None:
        """The newest stable version before the failed one, if its spec differs from the
        job's (a rollback to what is already running would change nothing, and going
        further back than the last good release could cross a schema change)."""
        for v in self._store.job_versions(job.id, job.namespace):  # newest first
            if v.version < failed_version and v.stable:
                return v.version if v.spec != job.spec else None
        return None

    # -- what people do --------------------------------------------------------
    def promote(self, txn: Txn, dep: Deployment, groups: list[str] | None, now: float) -> Outcome:
        if not dep.active():
            raise ValueError(
                f"deployment {dep.id} is {dep.status.value}; only a running one can be promoted"
            )
        if not dep.has_unpromoted_canaries():
            raise ValueError(f"deployment {dep.id} has no canaries waiting for promotion")
        job = self._store.job(dep.job_id, dep.namespace)
        if job is None:
            raise NotFound(f"job {dep.job_id} not found")
        waiting = {n for n, g in dep.groups.items() if g.desired_canaries and not g.promoted}
        chosen = set(groups) if groups else waiting
        unknown = sorted(chosen - set(dep.groups))
        if unknown:
            raise ValueError(
                f"deployment {dep.id} has no group {', '.join(unknown)} "
                f"(groups: {', '.join(sorted(dep.groups))})"
            )
        idle = sorted(chosen - waiting)
        if idle:
            raise ValueError(f"group {', '.join(idle)} has no canaries waiting for promotion")
        counts = self._healthy_canaries(dep)
        for name in sorted(chosen):
            group = dep.groups[name]
            if counts.get(name, 0) < group.desired_canaries:
                raise ValueError(
                    f"group {name} has {counts.get(name, 0)} healthy canaries of "
                    f"{group.desired_canaries}: promote once they are healthy, or fail the "
                    "deployment"
                )
        new = dep.model_copy(deep=True)
        for name in chosen:
            group = new.groups[name]
            group.promoted = True
            if group.progress_deadline:
                group.require_progress_by = now + group.progress_deadline
        new.status_description = "promoted: rolling out the rest"
        txn.put_deployment(new.model_copy(update={"modify_index": txn.index, "modify_time": now}))
        return Outcome(evals=[self._eval(txn, job, now)])

    def _healthy_canaries(self, dep: Deployment) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self._store.allocs_by_job(dep.job_id, dep.namespace):
            ds = a.deployment_status
            if (
                a.deployment_id == dep.id
                and ds is not None
                and ds.canary
                and ds.healthy is True
                and a.desired_status == DesiredStatus.RUN
            ):
                counts[a.group] = counts.get(a.group, 0) + 1
        return counts

    def fail(self, txn: Txn, dep: Deployment, now: float) -> Outcome:
        if not dep.active():
            raise ValueError(
                f"deployment {dep.id} is {dep.status.value}; only a running one can fail"
            )
        job = self._store.job(dep.job_id, dep.namespace)
        if job is None:
            raise NotFound(f"job {dep.job_id} not found")
        outcome = Outcome()
        self._fail(txn, dep, job, "failed by a person", now, outcome)
        return outcome
