"""Jobs: register (a new version and its evaluation), plan (the dry run), revert,
scale and stop.  Every call is one store transaction, and its evaluation is enqueued
only after the commit.

These are writes that any server must be able to accept from the API (issue 15 will
forward them to the leader); nothing here runs on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from podium.errors import Conflict, NotFound
from podium.models import Evaluation, Job, JobSpec, JobVersion, TriggeredBy, next_job
from podium.models.diff import spec_diff
from podium.models.scaling import ScalingEvent
from podium.models.views import JobPlanResult
from podium.server import catalog, children, jobplan, limits, namespaces, scaling_log
from podium.server.broker import EvalBroker
from podium.server.config import ServerConfig
from podium.server.deployments import Revert
from podium.server.evals import drop_blocked, new_eval, new_id
from podium.state import StateStore, Txn

log = logging.getLogger("podium.server")


@dataclass
class RegisterResult:
    eval_id: str
    version: int
    job_modify_index: int
    index: int
    changed: bool = True
    warnings: list[str] = field(default_factory=list)


def check_modify_index(job_id: str, current: Job | None, check_index: int) -> None:
    """Raise Conflict unless the job's modify index is ``check_index`` (0: no such job)."""
    have = current.job_modify_index if current is not None else 0
    if have == check_index:
        return
    if current is None:
        why = f"job {job_id} does not exist (expected modify index {check_index})"
    elif check_index == 0:
        why = f"job {job_id} already exists (modify index {have}), and index 0 means a new job"
    else:
        why = f"job {job_id} changed since index {check_index} (now {have})"
    raise Conflict(f"{why}: run podium job plan again")


class Jobs:
    def __init__(
        self,
        store: StateStore,
        broker: EvalBroker,
        config: ServerConfig,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.broker = broker
        self.config = config
        self.clock = clock

    def register(
        self,
        spec: JobSpec,
        check_index: int | None = None,
        *,
        description: str = "",
        force_reschedule: bool = False,
        namespace: str | None = None,
        also: Callable[[Txn, Job, Evaluation], None] | None = None,
    ) -> RegisterResult:
        """Store ``spec`` as the job's next version (when it changed) and evaluate it.

        ``namespace``: the request's (None: the file's, else ``default``; see
        :func:`podium.server.namespaces.resolve_spec_namespace`).  The namespace must
        exist and its quotas admit the spec (:func:`podium.server.namespaces.admit`),
        else nothing is stored.

        ``check_index`` registers only if the job's modify index is still that
        (0: only if the job is new), else raises Conflict.  ``description`` is
        kept on the new version (why it exists, e.g. a revert).  With
        ``force_reschedule`` the evaluation replaces the job's failed allocations
        at once, even those their reschedule policy gave up on.  ``also`` adds its
        own writes to the transaction (a scaling event), given the job as stored and
        its evaluation.
        """
        store = self.store
        now = self.clock()
        children.refuse_reserved(spec)
        limits.check_counts(spec, self.config.max_count)
        ns, spec = namespaces.resolve_spec_namespace(spec, namespace)
        current = store.job(spec.job, ns)
        if check_index is not None:
            check_modify_index(spec.job, current, check_index)
        namespaces.admit(store, ns, spec, current)
        txn = store.txn()
        job, changed = next_job(spec, current, txn.index, now, ns)
        version, job_modify_index = job.version, job.job_modify_index
        txn.put_job(job)
        if changed:
            txn.put_version(
                JobVersion(
                    job_id=spec.job,
                    namespace=ns,
                    version=version,
                    spec=spec,
                    submit_time=now,
                    modify_index=txn.index,
                    diff=spec_diff(current.spec if current else None, spec),
                    description=description,
                )
            )
        ev = new_eval(job, TriggeredBy.JOB_REGISTER, txn.index, now)
        if force_reschedule:
            ev.force_reschedule = True
        txn.put_eval(ev)
        drop_blocked(self.broker, job.namespace, job.id, txn, now)
        if also is not None:
            also(txn, job, ev)
        index = store.commit(txn)
        self.broker.enqueue(ev)
        return RegisterResult(
            eval_id=ev.id,
            version=version,
            job_modify_index=job_modify_index,
            index=index,
            changed=changed,
        )

    def plan(
        self, spec: JobSpec, *, diff: bool = True, namespace: str | None = None
    ) -> JobPlanResult:
        """A dry run of :meth:`register`: the diff against the running version and
        what the scheduler would do, worked out on a snapshot in which ``spec`` is
        registered but not committed.  Writes nothing and enqueues nothing."""
        children.refuse_reserved(spec)
        limits.check_counts(spec, self.config.max_count)
        snap = self.store.view()  # used and done with before this returns
        now = self.clock()
        ns, spec = namespaces.resolve_spec_namespace(spec, namespace)
        namespaces.require_namespace(snap, ns)
        current = snap.job(spec.job, ns)
        candidate, _ = next_job(spec, current, snap.index + 1, now, ns)
        ev = new_eval(candidate, TriggeredBy.JOB_REGISTER, snap.index + 1, now)
        return jobplan.plan_job(snap, current, candidate, ev, now, new_id=new_id, diff=diff)

    def revert(
        self,
        job_id: str,
        version: int,
        enforce_prior_version: int | None = None,
        reason: str = "",
        namespace: str = "default",
    ) -> RegisterResult:
        """Register the spec of ``version`` again, as a new version, and evaluate it.

        ``enforce_prior_version`` reverts only if the job is still at that version
        (else Conflict).  Reverting to the current version is a ValueError, and to
        a version that is not stored a NotFound.  ``reason`` (a deployment that
        failed, say) is logged and kept on the new version.
        """
        job = self.job(job_id, namespace)
        if enforce_prior_version is not None and job.version != enforce_prior_version:
            raise Conflict(
                f"job {job.id} is at version {job.version}, not {enforce_prior_version}: "
                "it changed since; look at `podium job history` and try again"
            )
        if version == job.version:
            raise ValueError(f"job {job.id} is already at version {version}")
        spec = self.store.job_spec(job.id, version, job.namespace)
        if spec is None:
            versions = self.store.job_versions(job.id, job.namespace)
            known = ", ".join(str(v.version) for v in versions)
            raise NotFound(f"job {job.id} has no version {version} (versions: {known or 'none'})")
        why = f"reverted to version {version}" + (f": {reason}" if reason else "")
        log.info("job %s (version %d) %s", job.id, job.version, why)
        return self.register(spec, description=why, namespace=job.namespace)

    def revert_all(self, reverts: list[Revert]) -> None:
        """The reverts a deployment's failure asked for (``auto_revert``); one that cannot
        be made is logged, and the others still are."""
        for r in reverts:
            try:
                self.revert(r.job_id, r.version, reason=r.reason, namespace=r.namespace)
            except Exception:
                log.exception("could not revert job %s to version %d", r.job_id, r.version)

    def scale(
        self,
        job_id: str,
        group: str,
        count: int,
        namespace: str = "default",
        *,
        message: str = "",
        event: ScalingEvent | None = None,
    ) -> RegisterResult:
        """Set ``group``'s count: a new job version, and a scaling event beside it in the
        same transaction (``event``: the autoscaler's; else a manual one, with
        ``message``).  A count outside the group's ``scaling`` bounds is refused."""
        job = self.job(job_id, namespace)
        if group not in job.spec.groups:
            raise NotFound(
                f"job {job.id!r} has no group {group!r} (groups: {', '.join(job.spec.groups)})"
            )
        if count < 0:
            raise ValueError("count cannot be negative")
        current = job.spec.groups[group]
        if current.scaling is not None:
            current.scaling.check_count(count, f"job {job.id!r} group {group!r}")
        spec = job.spec.model_copy(deep=True)
        spec.groups[group].count = count
        if count == current.count:
            return self.register(spec, namespace=job.namespace)
        if event is None:
            event = ScalingEvent(
                time=self.clock(),
                group=group,
                source="manual",
                previous_count=current.count,
                count=count,
                reason=message or f"scaled by hand from {current.count} to {count}",
            )
        description = event.reason if event.source == "autoscaler" else message

        def record(txn: Txn, stored: Job, ev: Evaluation) -> None:
            done = event.model_copy(update={"job_version": stored.version, "eval_id": ev.id})
            scaling_log.record(self.store, txn, stored, done)

        return self.register(spec, description=description, namespace=job.namespace, also=record)

    def stop(self, job_id: str, purge: bool = False, namespace: str = "default") -> tuple[str, int]:
        store = self.store
        job = self.job(job_id, namespace)
        now = self.clock()
        txn = store.txn()
        if purge:
            versions = [v.version for v in store.job_versions(job.id, job.namespace)]
            txn.delete_job(job.namespace, job.id, versions)
            scaling_log.forget(store, txn, job.namespace, job.id)
        else:
            version = job.version + 1 if not job.stop else job.version
            stopped = job.model_copy(
                update={
                    "stop": True,
                    "version": version,
                    "modify_index": txn.index,
                    "job_modify_index": txn.index,
                    "submit_time": now,
                }
            )
            txn.put_job(stopped)
            if not job.stop:
                txn.put_version(
                    JobVersion(
                        job_id=job.id,
                        namespace=job.namespace,
                        version=version,
                        stop=True,
                        spec=job.spec,
                        submit_time=now,
                        modify_index=txn.index,
                        diff=["~ stop: False => True"],
                    )
                )
        ev = new_eval(job, TriggeredBy.JOB_DEREGISTER, txn.index, now)
        txn.put_eval(ev)
        drop_blocked(self.broker, job.namespace, job.id, txn, now)
        catalog.deregister_job(store, txn, job.id, job.namespace)
        index = store.commit(txn)
        self.broker.enqueue(ev)
        return ev.id, index

    def job(self, job_id: str, namespace: str = "default") -> Job:
        job = self.store.job(job_id, namespace)
        if job is None:
            where = "" if namespace == "default" else f" in namespace {namespace!r}"
            raise NotFound(f"job {job_id!r} not found{where}")
        return job
