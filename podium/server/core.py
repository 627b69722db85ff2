"""The server: turns API calls into versioned state and evaluations, and runs
the loops that act on them (scheduler workers, heartbeat watcher, GC).

Every write here is one store transaction; the HTTP layer (:mod:`podium.server.api`)
only translates requests into these calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from podium.errors import Conflict, Forbidden, NotFound
from podium.memtrim import trim_after
from podium.models import (
    Allocation,
    AllocClientUpdate,
    AllocHealth,
    ClientStatus,
    Deployment,
    DesiredStatus,
    DrainStrategy,
    Eligibility,
    EvalStatus,
    Evaluation,
    Job,
    JobSpec,
    JobVersion,
    Node,
    NodeStatus,
    TriggeredBy,
    next_job,
)
from podium.models.acl import NodeSecret
from podium.models.diff import spec_diff
from podium.models.views import JobPlanResult
from podium.scheduler import schedule
from podium.server import catalog, deployments, jobplan, limits, namespaces
from podium.server.applier import PlanApplier
from podium.server.broker import EvalBroker
from podium.server.identity import DEFAULT_TTL as DEFAULT_IDENTITY_TTL
from podium.server.keyring import Keyring
from podium.server.retry import Failures, RetryPolicy
from podium.server.trust import Trust
from podium.server.variables import Variables
from podium.state import ALLOCS, StateStore, Txn
from podium.state.errors import StoreError
from podium.state.store import NODE_SECRETS

log = logging.getLogger("podium.server")

EVAL_YIELD_MAX = 0.05
"""Seconds a scheduler worker leaves the event loop to others after an evaluation, at most
(it leaves as long as the evaluation took, so the API and agents get about half the loop
while big evaluations queue)."""


@dataclass
class ServerConfig:
    heartbeat_ttl: float = 10.0
    heartbeat_grace: float = 10.0
    workers: int = 1
    eval_gc_keep: int = 20
    """Terminal evaluations kept per job (older ones are removed)."""
    gc_interval: float = 30.0
    alloc_gc_age: float = 3600.0
    """Stopped, finished allocations older than this are removed (Nomad: 1h too)."""
    drain_interval: float = 1.0
    deployment_interval: float = 1.0
    """How often running deployments are checked against their progress deadlines."""
    acl: bool = False
    """Access control at the API's edge (podium.server.acl): off, only node identity is
    checked; on, every request needs what its route requires."""
    data_dir: str | None = None
    """The server's data directory (where ``acl-bootstrap-reset`` is looked for)."""
    identity_ttl: float = DEFAULT_IDENTITY_TTL
    """Seconds a task's workload token is valid (agents renew at two-thirds of it)."""
    max_count: int = limits.DEFAULT_MAX_COUNT
    """The most instances of one group, and of one job in all (``--max-count``)."""
    report_batch_window: float = 0.01
    """Agents' reports arriving within this many seconds share one transaction (and one
    fsync) on the HTTP path; 0: whatever is queued when the batcher runs."""


@dataclass
class RegisterResult:
    eval_id: str
    version: int
    job_modify_index: int
    index: int
    changed: bool = True
    warnings: list[str] = field(default_factory=list)


def new_id() -> str:
    return str(uuid.uuid4())


def _merge_health(alloc: Allocation, update: AllocClientUpdate) -> AllocHealth | None:
    """The agent judges health; the server alone says which allocations are canaries."""
    reported = update.deployment_status
    if reported is None:
        return alloc.deployment_status
    canary = alloc.deployment_status.canary if alloc.deployment_status else False
    return reported.model_copy(update={"canary": canary})


def _has_waiting_group(store: StateStore, job: Job) -> bool:
    """Whether a group with depends_on has never been placed (so it may be waiting)."""
    if not any(g.depends_on for g in job.spec.groups.values()):
        return False
    placed = {a.group for a in store.allocs_by_job(job.id, job.namespace)}
    return any(g.depends_on and name not in placed for name, g in job.spec.groups.items())


def _check_index(job_id: str, current: Job | None, check_index: int) -> None:
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


@dataclass
class SchedulerStats:
    """Cheap counters over :meth:`Server.process_eval` (read by ``podium sim``)."""

    evals: int = 0
    placements: int = 0
    """Allocations placed by committed plans."""
    seconds: float = 0.0
    """Time inside the scheduler and the plan applier (re-plans included)."""
    plan_rejections: int = 0


class Server:
    def __init__(
        self,
        store: StateStore,
        config: ServerConfig | None = None,
        clock: Callable[[], float] = time.time,
        keyring: Keyring | None = None,
    ) -> None:
        self.store = store
        self.config = config or ServerConfig()
        self.clock = clock
        self.keyring = keyring or Keyring.ephemeral()
        """Seals variables and signs workload tokens (in memory only when none is given:
        fit for an in-memory store, not for one that outlives the process)."""
        self.variables = Variables(store, self.keyring, clock)
        self.trust = Trust(
            store,
            clock,
            Path(self.config.data_dir) if self.config.data_dir else None,
            keyring=self.keyring,
        )
        """ACL tokens and policies, and nodes' secrets (see podium.server.acl)."""
        self.broker = EvalBroker(clock)
        self.applier = PlanApplier(store)
        self.deployments = deployments.DeploymentWatcher(store, self._new_eval)
        self.namespaces = namespaces.Namespaces(store)
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeats: dict[str, float] = {}
        self._pending_enqueue: list[Evaluation] = []
        self.started = False
        self.stats = SchedulerStats()
        self.eval_retry = RetryPolicy()
        """How failed evaluations are retried, then parked (podium.server.retry)."""
        self._eval_failures: dict[str, Failures] = {}
        self._reports: list[tuple[str, list[AllocClientUpdate], asyncio.Future[int]]] = []
        self._report_wakeup = asyncio.Event()
        self._report_task: asyncio.Task[None] | None = None
        self._report_order: dict[str, tuple[str, int]] = {}
        """node id -> (agent session, sequence) of the newest report request taken from it."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Restore the broker from the store and start the background loops."""
        now = self.clock()
        for ev in sorted(self.store.evaluations(), key=lambda e: e.create_index):
            if ev.status == EvalStatus.PENDING:
                self.broker.enqueue(ev)
            elif ev.status == EvalStatus.BLOCKED:
                self.broker.block(ev)
        # A restarted server gives every node a fresh TTL (as Nomad's new leader does),
        # so nodes are not declared down for the time the server itself was away.
        for node in self.store.nodes():
            if node.status != NodeStatus.DOWN:
                self._heartbeats[node.id] = now
        for i in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._worker(i), name=f"scheduler-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._heartbeat_watcher(), name="heartbeats"))
        self._tasks.append(asyncio.create_task(self._gc_loop(), name="gc"))
        self._tasks.append(asyncio.create_task(self._drainer(), name="drainer"))
        self._tasks.append(asyncio.create_task(self._deployment_loop(), name="deployments"))
        self.started = True

    async def stop(self) -> None:
        self.broker.close()
        if self._report_task is not None:
            self._report_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._report_task
            self._report_task = None
        pending, self._reports = self._reports, []
        if pending:
            self._commit_reports(pending)  # accepted before the stop: keep them
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    # ------------------------------------------------------------------ jobs
    def register_job(
        self,
        spec: JobSpec,
        check_index: int | None = None,
        *,
        description: str = "",
        force_reschedule: bool = False,
        namespace: str | None = None,
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
        at once, even those their reschedule policy gave up on.
        """
        store = self.store
        now = self.clock()
        limits.check_counts(spec, self.config.max_count)
        ns, spec = namespaces.resolve_spec_namespace(spec, namespace)
        current = store.job(spec.job, ns)
        if check_index is not None:
            _check_index(spec.job, current, check_index)
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
        ev = self._new_eval(job, TriggeredBy.JOB_REGISTER, txn.index, now)
        if force_reschedule:
            ev.force_reschedule = True
        txn.put_eval(ev)
        self._drop_blocked(job.namespace, job.id, txn, now)
        index = store.commit(txn)
        self.broker.enqueue(ev)
        return RegisterResult(
            eval_id=ev.id,
            version=version,
            job_modify_index=job_modify_index,
            index=index,
            changed=changed,
        )

    def plan_job(
        self, spec: JobSpec, *, diff: bool = True, namespace: str | None = None
    ) -> JobPlanResult:
        """A dry run of :meth:`register_job`: the diff against the running version and
        what the scheduler would do, worked out on a snapshot in which ``spec`` is
        registered but not committed.  Writes nothing and enqueues nothing."""
        limits.check_counts(spec, self.config.max_count)
        snap = self.store.view()  # used and done with before this returns
        now = self.clock()
        ns, spec = namespaces.resolve_spec_namespace(spec, namespace)
        namespaces.require_namespace(snap, ns)
        current = snap.job(spec.job, ns)
        candidate, _ = next_job(spec, current, snap.index + 1, now, ns)
        ev = self._new_eval(candidate, TriggeredBy.JOB_REGISTER, snap.index + 1, now)
        return jobplan.plan_job(snap, current, candidate, ev, now, new_id=new_id, diff=diff)

    def revert_job(
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
        job = self._job(job_id, namespace)
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
        return self.register_job(spec, description=why, namespace=job.namespace)

    def scale_job(
        self, job_id: str, group: str, count: int, namespace: str = "default"
    ) -> RegisterResult:
        job = self._job(job_id, namespace)
        if group not in job.spec.groups:
            raise NotFound(
                f"job {job.id!r} has no group {group!r} (groups: {', '.join(job.spec.groups)})"
            )
        if count < 0:
            raise ValueError("count cannot be negative")
        spec = job.spec.model_copy(deep=True)
        spec.groups[group].count = count
        return self.register_job(spec, namespace=job.namespace)

    def stop_job(
        self, job_id: str, purge: bool = False, namespace: str = "default"
    ) -> tuple[str, int]:
        store = self.store
        job = self._job(job_id, namespace)
        now = self.clock()
        txn = store.txn()
        if purge:
            versions = [v.version for v in store.job_versions(job.id, job.namespace)]
            txn.delete_job(job.namespace, job.id, versions)
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
        ev = self._new_eval(job, TriggeredBy.JOB_DEREGISTER, txn.index, now)
        txn.put_eval(ev)
        self._drop_blocked(job.namespace, job.id, txn, now)
        catalog.deregister_job(store, txn, job.id, job.namespace)
        index = store.commit(txn)
        self.broker.enqueue(ev)
        return ev.id, index

    def _job(self, job_id: str, namespace: str = "default") -> Job:
        job = self.store.job(job_id, namespace)
        if job is None:
            where = "" if namespace == "default" else f" in namespace {namespace!r}"
            raise NotFound(f"job {job_id!r} not found{where}")
        return job

    def _new_eval(
        self, job: Job, trigger: TriggeredBy, index: int, now: float, node_id: str | None = None
    ) -> Evaluation:
        return Evaluation(
            id=new_id(),
            namespace=job.namespace,
            priority=job.priority,
            type=job.type,
            triggered_by=trigger,
            job_id=job.id,
            job_modify_index=job.job_modify_index,
            node_id=node_id,
            status=EvalStatus.PENDING,
            create_index=index,
            modify_index=index,
            create_time=now,
            modify_time=now,
        )

    def _drop_blocked(self, namespace: str, job_id: str, txn: Txn, now: float) -> None:
        """A new evaluation for a job supersedes its blocked one."""
        blocked = self.broker.drop_blocked(namespace, job_id)
        if blocked is not None:
            txn.put_eval(
                blocked.model_copy(
                    update={
                        "status": EvalStatus.CANCELED,
                        "status_description": "superseded by a newer evaluation",
                        "modify_index": txn.index,
                        "modify_time": now,
                    }
                )
            )

    # ------------------------------------------------------------------ nodes
    def register_node(self, node: Node, secret: NodeSecret | None = None) -> int:
        """Write the node as its agent describes it; ``secret``: a new node's secret
        (hashed), stored in the same transaction so the node never exists without it."""
        store = self.store
        now = self.clock()
        existing = store.node(node.id)
        txn = store.txn()
        update: dict[str, object] = {
            "status": NodeStatus.READY,
            "status_description": "registered",
            "modify_index": txn.index,
            "status_updated_at": now,
            "last_heartbeat": now,
        }
        if existing is None:
            update["create_index"] = txn.index
        else:
            # What operators set on the server side survives an agent's re-registration.
            update["create_index"] = existing.create_index
            update["eligibility"] = existing.eligibility
            update["drain"] = existing.drain
        stored = node.model_copy(update=update)
        txn.put_node(stored)
        if secret is not None:
            txn.put_acl(NODE_SECRETS, secret.model_copy(update={"modify_index": txn.index}))
        was_down = existing is None or existing.status != NodeStatus.READY
        if was_down:
            self._node_evals(stored, txn, now, system=True)
        index = store.commit(txn)
        self._heartbeats[node.id] = now
        if was_down:
            self._after_node_change()
        return index

    def heartbeat(self, node_id: str) -> int:
        node = self.store.node(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} is not registered")
        now = self.clock()
        self._heartbeats[node_id] = now
        if node.status == NodeStatus.DOWN:
            # It reconnected: bring it back and let the scheduler look at its jobs
            # (their lost allocations were replaced; the agent will stop its copies).
            txn = self.store.txn()
            up = node.model_copy(
                update={
                    "status": NodeStatus.READY,
                    "status_description": "heartbeat resumed",
                    "status_updated_at": now,
                    "modify_index": txn.index,
                }
            )
            txn.put_node(up)
            self._node_evals(up, txn, now, system=True)
            catalog.sync_node(self.store, txn, node_id)  # what still runs there is back
            index = self.store.commit(txn)
            self._after_node_change()
            return index
        return self.store.index

    def set_eligibility(self, node_id: str, eligible: bool) -> int:
        node = self.store.node(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} not found")
        txn = self.store.txn()
        txn.put_node(
            node.model_copy(
                update={
                    "eligibility": Eligibility.ELIGIBLE if eligible else Eligibility.INELIGIBLE,
                    "modify_index": txn.index,
                }
            )
        )
        if eligible and node.eligibility != Eligibility.ELIGIBLE:
            self._node_evals(node, txn, self.clock(), system=True)
        index = self.store.commit(txn)
        if eligible:
            self._after_node_change()
        return index

    # ------------------------------------------------------------------ drains
    def drain_node(
        self,
        node_id: str,
        *,
        enable: bool = True,
        deadline: float = 3600.0,
        ignore_system: bool = False,
    ) -> int:
        """Start (or cancel) draining a node: it becomes ineligible, and the drainer
        moves its allocations off (see :meth:`drain_tick`)."""
        node = self.store.node(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} not found")
        if deadline < 0:
            raise ValueError("a drain deadline cannot be negative")
        now = self.clock()
        txn = self.store.txn()
        if enable:
            update: dict[str, object] = {
                "drain": True,
                "eligibility": Eligibility.INELIGIBLE,
                "drain_strategy": DrainStrategy(
                    deadline=deadline,
                    deadline_at=now + deadline if deadline > 0 else 0.0,
                    ignore_system=ignore_system,
                    started_at=now,
                ),
            }
        else:
            update = {"drain": False, "drain_strategy": None, "eligibility": Eligibility.ELIGIBLE}
        txn.put_node(node.model_copy(update={**update, "modify_index": txn.index}))
        if not enable:
            self._node_evals(node, txn, now, system=True)
        index = self.store.commit(txn)
        if enable:
            self.drain_tick()
        else:
            self._after_node_change()
        return index

    async def _drainer(self) -> None:
        while True:
            await asyncio.sleep(self.config.drain_interval)
            try:
                self.drain_tick()
            except Exception:
                log.exception("drainer failed")

    def drain_tick(self) -> None:
        """One pass of the drainer over every draining node.

        Service allocations leave a few at a time: per group, at most its
        ``migrate.max_parallel`` may be migrating (stopped here, replacement not
        yet running).  Batch allocations may finish until the deadline.  System
        allocations go last, once nothing else is left (never, with
        ``ignore_system``).  At the deadline everything left is stopped.  When
        the node is empty, the drain is done and the node stays ineligible.
        """
        now = self.clock()
        store = self.store
        for node in store.nodes():
            if not node.drain or node.drain_strategy is None:
                continue
            strat = node.drain_strategy
            forced = bool(strat.deadline_at) and now >= strat.deadline_at
            on_node = store.allocs_by_node(node.id)
            live = [a for a in on_node if not a.terminal()]
            # what still runs on the node, told to stop or not: the node is not empty
            # (and system allocations must wait) until its tasks have exited
            present = [a for a in on_node if not a.client_status.terminal]
            kinds: dict[str, str] = {}
            for a in present:
                job = store.job(a.job_id, a.namespace)
                kinds[a.id] = job.type if job is not None else "service"
            stop: list[Allocation] = []
            if forced:
                stop = [a for a in live if not (strat.ignore_system and kinds[a.id] == "system")]
            else:
                groups: dict[tuple[str, str, str], list[Allocation]] = {}
                for a in live:
                    if kinds[a.id] == "service":
                        groups.setdefault((a.namespace, a.job_id, a.group), []).append(a)
                for (ns, job_id, group), allocs in groups.items():
                    job = store.job(job_id, ns)
                    spec_group = job.spec.groups.get(group) if job is not None else None
                    max_parallel = spec_group.migrate.max_parallel if spec_group else 1
                    migrating = sum(
                        1
                        for a in on_node
                        if a.job_id == job_id
                        and a.group == group
                        and a.desired_status == DesiredStatus.STOP
                        and a.desired_description.startswith("node drain")
                        and a.modify_time >= strat.started_at
                        and not self._replacement_running(a)
                    )
                    room = max(0, max_parallel - migrating)
                    stop += sorted(allocs, key=lambda a: a.index)[:room]
                others = [a for a in present if kinds[a.id] != "system"]
                if not others and not strat.ignore_system:
                    stop += [a for a in live if kinds[a.id] == "system"]
            if stop:
                self._drain_stop(node, stop, now, forced)
                continue
            remaining = [
                a for a in present if not (strat.ignore_system and kinds[a.id] == "system")
            ]
            if not remaining:
                txn = store.txn()
                txn.put_node(
                    node.model_copy(
                        update={
                            "drain": False,
                            "drain_strategy": None,
                            "modify_index": txn.index,
                            "status_description": "drain complete",
                        }
                    )
                )
                store.commit(txn)
                log.info("node %s drained", node.name)

    def _replacement_running(self, alloc: Allocation) -> bool:
        """Whether a migrating allocation is done moving: it has exited, and its
        replacement (when the scheduler linked one) is up."""
        if not alloc.client_status.terminal:
            return False
        if not alloc.next_allocation:
            return True
        nxt = self.store.alloc(alloc.next_allocation)
        return nxt is None or nxt.client_status in (ClientStatus.RUNNING, ClientStatus.COMPLETE)

    def _drain_stop(self, node: Node, allocs: list[Allocation], now: float, forced: bool) -> None:
        txn = self.store.txn()
        why = "node drain: deadline reached" if forced else "node drain"
        jobs: dict[tuple[str, str], Job] = {}
        for a in allocs:
            txn.put_alloc(
                a.model_copy(
                    update={
                        "desired_status": DesiredStatus.STOP,
                        "desired_description": why,
                        "modify_index": txn.index,
                        "modify_time": now,
                    }
                )
            )
            job = self.store.job(a.job_id, a.namespace)
            if job is not None:
                jobs[(job.namespace, job.id)] = job
        evs = []
        for job in jobs.values():
            ev = self._new_eval(job, TriggeredBy.NODE_DRAIN, txn.index, now, node_id=node.id)
            txn.put_eval(ev)
            evs.append(ev)
        catalog.sync_txn(self.store, txn)
        self.store.commit(txn)
        for ev in evs:
            self.broker.enqueue(ev)

    def _node_evals(
        self, node: Node, txn: Txn, now: float, *, system: bool = False
    ) -> list[Evaluation]:
        """An evaluation for every job with allocations on ``node`` (enqueued after commit),
        and with ``system``, for every system job too: the node may now need one."""
        seen: set[tuple[str, str]] = set()
        evs: list[Evaluation] = []
        if system:
            for system_job in self.store.jobs():
                if system_job.type == "system" and not system_job.stop:
                    seen.add((system_job.namespace, system_job.id))
                    ev = self._new_eval(
                        system_job, TriggeredBy.NODE_UPDATE, txn.index, now, node_id=node.id
                    )
                    txn.put_eval(ev)
                    evs.append(ev)
        for alloc in self.store.allocs_by_node(node.id):
            key = (alloc.namespace, alloc.job_id)
            if key in seen or alloc.terminal():
                continue
            seen.add(key)
            job = self.store.job(alloc.job_id, alloc.namespace)
            if job is None:
                continue
            ev = self._new_eval(job, TriggeredBy.NODE_UPDATE, txn.index, now, node_id=node.id)
            txn.put_eval(ev)
            evs.append(ev)
        self._pending_enqueue.extend(evs)
        return evs

    def _after_node_change(self) -> None:
        """Enqueue node evaluations and wake blocked ones: capacity may have changed."""
        pending, self._pending_enqueue = self._pending_enqueue, []
        for ev in pending:
            self.broker.enqueue(ev)
        self.unblock_evals()

    def unblock_evals(self) -> None:
        blocked = self.broker.unblock()
        if not blocked:
            return
        now = self.clock()
        txn = self.store.txn()
        evs = []
        for ev in blocked:
            current = self.store.evaluation(ev.id) or ev
            if current.status != EvalStatus.BLOCKED:
                continue
            pending = current.model_copy(
                update={
                    "status": EvalStatus.PENDING,
                    "modify_index": txn.index,
                    "modify_time": now,
                    "status_description": "capacity changed",
                }
            )
            txn.put_eval(pending)
            evs.append(pending)
        self.store.commit(txn)
        for ev in evs:
            self.broker.enqueue(ev)

    async def _heartbeat_watcher(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.heartbeat_ttl / 4))
            try:
                self.check_heartbeats()
            except Exception:
                log.exception("heartbeat check failed")

    def check_heartbeats(self) -> list[str]:
        """Mark nodes whose heartbeat is older than TTL + grace as down."""
        now = self.clock()
        limit = self.config.heartbeat_ttl + self.config.heartbeat_grace
        expired = [
            n
            for n in self.store.nodes()
            if n.status == NodeStatus.READY and now - self._heartbeats.get(n.id, now) > limit
        ]
        if not expired:
            return []
        txn = self.store.txn()
        for node in expired:
            down = node.model_copy(
                update={
                    "status": NodeStatus.DOWN,
                    "status_description": f"missed heartbeats for {limit:g}s",
                    "status_updated_at": now,
                    "modify_index": txn.index,
                }
            )
            txn.put_node(down)
            self._node_evals(down, txn, now)
            catalog.deregister_node(self.store, txn, node.id)
            # Allocations already told to stop whose agent never said they did: nobody
            # will, now.  They are lost (and free), or they would count as running forever.
            for alloc in self.store.allocs_by_node(node.id):
                if alloc.desired_status == DesiredStatus.STOP and not alloc.client_status.terminal:
                    txn.put_alloc(
                        alloc.model_copy(
                            update={
                                "client_status": ClientStatus.LOST,
                                "client_description": "node down before the allocation stopped",
                                "modify_index": txn.index,
                                "modify_time": now,
                            }
                        )
                    )
            log.warning("node %s (%s) is down: no heartbeat for %.0fs", node.name, node.id, limit)
        self.store.commit(txn)
        pending, self._pending_enqueue = self._pending_enqueue, []
        for ev in pending:
            self.broker.enqueue(ev)
        return [n.id for n in expired]

    # ------------------------------------------------------------------ agents' reports
    def client_update(self, node_id: str, updates: list[AllocClientUpdate]) -> int:
        """One agent's reports, in a transaction of their own."""
        return self.client_update_many([(node_id, updates)])

    async def client_update_batched(
        self,
        node_id: str,
        updates: list[AllocClientUpdate],
        *,
        session: str = "",
        seq: int = 0,
    ) -> int:
        """One agent's reports, committed with whatever other reports arrive within
        ``report_batch_window`` (a group commit: one transaction, one fsync, as Nomad
        batches ``Node.UpdateAlloc`` into one Raft apply).  Returns once the batch is
        durable, so an acknowledged report is never lost.

        ``session`` and ``seq`` (the agent's run and its count of report requests) order
        one agent's reports: an agent may have two requests with reports in flight (a
        report and a sync carrying reports, or a retry after a timeout), and one taken
        after a newer one would write an older state over a newer one.  Such a request
        is refused whole (:class:`Conflict`), before anything of it is written; the agent
        sends those allocations' current states again."""
        self.check_reports_own(node_id, updates)
        self.check_report_order(node_id, session, seq)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._reports.append((node_id, updates, future))
        if self._report_task is None or self._report_task.done():
            self._report_task = loop.create_task(self._report_batcher(), name="report-batcher")
        self._report_wakeup.set()
        return await future

    def check_reports_own(self, node_id: str, updates: list[AllocClientUpdate]) -> None:
        """Refuse (:class:`Forbidden`) a request in which ``node_id`` reports on an
        allocation placed on another node: a node speaks only for itself.  (An
        allocation the store no longer holds is let through; the commit skips it.)"""
        store = self.store
        for u in updates:
            alloc = store.alloc(u.id)
            if alloc is not None and alloc.node_id != node_id:
                raise Forbidden(
                    f"node {node_id} reported on allocation {u.id}, which is placed on node "
                    f"{alloc.node_id}: a node may report only on its own allocations; "
                    "nothing of this request was written"
                )

    def check_report_order(self, node_id: str, session: str, seq: int) -> None:
        """Take the report request ``seq`` of the agent run ``session`` on ``node_id``, or
        raise :class:`Conflict` when a newer one of the same run was taken already.  No
        ``session``: unordered (a hand-made request), always taken.  Kept in memory only:
        after a server restart the first request of each run is taken as it comes."""
        if not session:
            return
        last = self._report_order.get(node_id)
        if last is not None and last[0] == session and seq <= last[1]:
            raise Conflict(
                f"report {seq} of agent run {session} on node {node_id} arrived after report "
                f"{last[1]}: not written; send the allocations' current states again"
            )
        self._report_order[node_id] = (session, seq)

    async def _report_batcher(self) -> None:
        while True:
            await self._report_wakeup.wait()
            self._report_wakeup.clear()
            if self.config.report_batch_window > 0:
                await asyncio.sleep(self.config.report_batch_window)
            batch, self._reports = self._reports, []
            if batch:
                self._commit_reports(batch)

    def _commit_reports(
        self, batch: list[tuple[str, list[AllocClientUpdate], asyncio.Future[int]]]
    ) -> None:
        try:
            index = self.client_update_many([(node_id, updates) for node_id, updates, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                future = batch[0][2]
                if not future.done():
                    future.set_exception(exc)
                return
            # Nothing was committed (the hooks after the commit do not raise): retry each
            # request alone, so one bad report fails only its own request.
            log.warning("a batch of %d reports failed; retrying one by one: %s", len(batch), exc)
            for item in batch:
                self._commit_reports([item])
            return
        for _node_id, _updates, future in batch:
            if not future.done():
                future.set_result(index)

    def client_update_many(self, reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
        """Agents' reports ``(node_id, updates)``, in one transaction."""
        store = self.store
        now = self.clock()
        txn = store.txn()
        txn.client_update = True
        failed_jobs: dict[tuple[str, str], Job] = {}
        watch_jobs: set[tuple[str, str]] = set()
        freed = False
        written = txn.puts[ALLOCS]
        for node_id, updates in reports:
            for u in updates:
                # a report earlier in the batch may have written this allocation already
                alloc = written.get(u.id) or store.alloc(u.id)
                if alloc is None or alloc.node_id != node_id:
                    continue
                if alloc.client_status == ClientStatus.LOST:
                    # The server gave up on it and replaced it; what the agent says of it now
                    # (its copy stopping after a reconnect) only updates the task states.
                    txn.put_alloc(
                        alloc.model_copy(
                            update={
                                "task_states": u.task_states,
                                "modify_index": txn.index,
                                "modify_time": now,
                            }
                        )
                    )
                    continue
                txn.put_alloc(
                    alloc.model_copy(
                        update={
                            "client_status": u.client_status,
                            "client_description": u.client_description,
                            "task_states": u.task_states,
                            "ports": u.ports or alloc.ports,
                            "checks": u.checks if u.checks is not None else alloc.checks,
                            "deployment_status": _merge_health(alloc, u),
                            "modify_index": txn.index,
                            "modify_time": now,
                        }
                    )
                )
                watch_jobs.add((alloc.namespace, alloc.job_id))
                if u.client_status.terminal and not alloc.client_status.terminal:
                    freed = True
                    if (
                        u.client_status == ClientStatus.FAILED
                        and alloc.desired_status == DesiredStatus.RUN
                    ):
                        job = store.job(alloc.job_id, alloc.namespace)
                        if job is not None and not job.stop:
                            failed_jobs[(job.namespace, job.id)] = job
        evs = []
        for job in failed_jobs.values():
            ev = self._new_eval(job, TriggeredBy.ALLOC_FAILURE, txn.index, now)
            txn.put_eval(ev)
            evs.append(ev)
        outcome = self._watch_reported(txn, watch_jobs, failed_jobs, now)
        evs.extend(outcome.evals)
        catalog.sync_txn(store, txn)  # running instances (re)registered, finished ones removed
        index = store.commit(txn)
        try:
            for ev in evs:
                self.broker.enqueue(ev)
            self._revert(outcome.reverts)
            if freed:
                self.unblock_evals()
        except Exception:
            # committed: the reports are durable whatever happens to what follows them
            log.exception("after agents' reports at index %d", index)
        trim_after(sum(len(updates) for _node_id, updates in reports))
        return index

    def _watch_reported(
        self,
        txn: Txn,
        jobs: set[tuple[str, str]],
        already: dict[tuple[str, str], Job],
        now: float,
    ) -> deployments.Outcome:
        """After agents' reports: move the jobs' running deployments along, and evaluate a
        job whose groups wait (depends_on) for what just changed."""
        store = self.store
        dep_ids: list[str] = []
        outcome = deployments.Outcome()
        for ns, job_id in jobs:
            dep = self.deployments.active_for(job_id, ns)
            if dep is not None:
                dep_ids.append(dep.id)
            job = store.job(job_id, ns)
            if job is None or job.stop or (ns, job_id) in already:
                continue
            if _has_waiting_group(store, job):
                ev = self._new_eval(job, TriggeredBy.ALLOC_STATUS, txn.index, now)
                txn.put_eval(ev)
                outcome.evals.append(ev)
        if dep_ids:
            outcome.merge(self.deployments.refresh(txn, dep_ids, now))
        return outcome

    def _revert(self, reverts: list[deployments.Revert]) -> None:
        for r in reverts:
            try:
                self.revert_job(r.job_id, r.version, reason=r.reason, namespace=r.namespace)
            except Exception:
                log.exception("could not revert job %s to version %d", r.job_id, r.version)

    # ------------------------------------------------------------------ deployments
    def promote_deployment(
        self, deployment_id: str, groups: list[str] | None = None
    ) -> tuple[str, int]:
        dep = self._deployment(deployment_id)
        now = self.clock()
        txn = self.store.txn()
        outcome = self.deployments.promote(txn, dep, groups, now)
        index = self.store.commit(txn)
        for ev in outcome.evals:
            self.broker.enqueue(ev)
        return outcome.evals[0].id, index

    def fail_deployment(self, deployment_id: str) -> tuple[str, int]:
        dep = self._deployment(deployment_id)
        now = self.clock()
        txn = self.store.txn()
        outcome = self.deployments.fail(txn, dep, now)
        index = self.store.commit(txn)
        for ev in outcome.evals:
            self.broker.enqueue(ev)
        self._revert(outcome.reverts)
        return outcome.evals[0].id, index

    def _deployment(self, deployment_id: str) -> Deployment:
        dep = self.store.deployment(deployment_id)
        if dep is None:
            raise NotFound(f"deployment {deployment_id} not found")
        return dep

    def deployments_tick(self) -> None:
        """Refresh every running deployment: progress deadlines, and anything a missed
        report left behind."""
        active = [d.id for d in self.store.deployments() if d.active()]
        if not active:
            return
        now = self.clock()
        txn = self.store.txn()
        outcome = self.deployments.refresh(txn, active, now, deadlines=True)
        self.store.commit(txn)
        for ev in outcome.evals:
            self.broker.enqueue(ev)
        self._revert(outcome.reverts)

    async def _deployment_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.deployment_interval)
            try:
                self.deployments_tick()
            except Exception:
                log.exception("deployment watcher failed")

    # ------------------------------------------------------------------ scheduling
    async def _worker(self, n: int) -> None:
        """One scheduling worker: it never dies of an evaluation or of the store (see
        podium.server.retry); only cancellation ends it."""
        while True:
            ev = await self.broker.dequeue()
            started = time.perf_counter()
            try:
                self._work(ev)
            except Exception:  # a bug in the failure path itself: log it, keep working
                log.exception("scheduling worker %d: evaluation %s", n, ev.id)
            # Let the API breathe between evaluations: as long as this one held the loop (up
            # to EVAL_YIELD_MAX), so a request needing a few loop turns is not served one
            # turn per evaluation while a backlog of big evaluations runs (measured: API
            # p99 several seconds at 5,000 nodes with one turn between them).
            await asyncio.sleep(min(time.perf_counter() - started, EVAL_YIELD_MAX))

    def process_eval(self, ev: Evaluation, attempts: int = 3) -> None:
        """Schedule one evaluation and commit its plan (re-planning if the plan went stale)."""
        for _ in range(attempts):
            current = self.store.evaluation(ev.id) or ev
            if current.terminal():
                return
            started = time.perf_counter()
            # nothing below awaits until the plan is committed: the live tables will do
            snap = self.store.view()
            now = self.clock()
            result = schedule(snap, current, now, new_id=new_id)
            result.plan.snapshot_index = snap.index
            outcome = self.applier.apply(result, now)
            stats = self.stats
            stats.seconds += time.perf_counter() - started
            stats.evals += 1
            if not outcome.rejected_nodes:
                stats.placements += outcome.committed_placements
            else:
                stats.plan_rejections += 1
                log.info(
                    "plan for %s went stale on %d nodes; re-planning",
                    ev.id,
                    len(outcome.rejected_nodes),
                )
                continue
            for new_ev in result.new_evals:
                stored = self.store.evaluation(new_ev.id) or new_ev
                if stored.status == EvalStatus.BLOCKED:
                    # one blocked evaluation per job: a newer one replaces the older
                    older = self.broker.drop_blocked(stored.namespace, stored.job_id)
                    if older is not None and older.id != stored.id:
                        self._cancel(older, "superseded by a newer blocked evaluation")
                    self.broker.block(stored)
                elif stored.status == EvalStatus.PENDING:
                    self.broker.enqueue(stored)
            if outcome.committed_stops:
                # stopping frees capacity only when tasks exit; client_update unblocks then
                pass
            return
        self._fail_eval(ev, f"plan rejected {attempts} times: the cluster kept changing")

    def _fail_eval(self, ev: Evaluation, why: str) -> None:
        txn = self.store.txn()
        txn.put_eval(
            ev.model_copy(
                update={
                    "status": EvalStatus.FAILED,
                    "status_description": why,
                    "modify_index": txn.index,
                    "modify_time": self.clock(),
                }
            )
        )
        self.store.commit(txn)

    def _work(self, ev: Evaluation) -> None:
        """Process ``ev``; on failure, retry it later or park it (``_eval_failed``)."""
        try:
            self.process_eval(ev)
            self._eval_failures.pop(ev.id, None)
        except Exception as exc:
            self._eval_failed(ev, exc)
        finally:
            self.broker.ack(ev)
            self._cancel_superseded_safely()

    def _eval_failed(self, ev: Evaluation, exc: Exception) -> None:
        """Retry ``ev`` with backoff (a failed store write: for as long as writes fail; any
        other error: up to ``eval_retry.attempts`` tries), then park it as failed."""
        current = self.store.evaluation(ev.id)
        if current is not None and current.terminal():  # its outcome was committed after all
            self._eval_failures.pop(ev.id, None)
            return
        failures = self._eval_failures.setdefault(ev.id, Failures())
        policy = self.eval_retry
        if isinstance(exc, StoreError):
            failures.store += 1
            failures.last = f"store error: {exc}"
            log.warning("evaluation %s: %s", ev.id, failures.last)
        else:
            failures.scheduler += 1
            failures.last = f"scheduler error: {type(exc).__name__}: {exc}"
            log.error("evaluation %s failed", ev.id, exc_info=exc)
            if failures.scheduler >= policy.attempts:
                why = f"failed {failures.scheduler} times; last: {failures.last}"
                try:
                    self._fail_eval(current or ev, why)
                    self._eval_failures.pop(ev.id, None)
                    log.error("evaluation %s parked as failed: %s", ev.id, why)
                    return
                except StoreError as store_exc:  # park it once the store writes again
                    log.warning("evaluation %s: cannot park it: %s", ev.id, store_exc)
        delay = policy.delay(failures.scheduler + failures.store)
        retry_at = self.clock() + delay
        log.warning("evaluation %s: retrying in %.1fs", ev.id, delay)
        if failures.store == 0:  # the store writes: say so where people look
            with contextlib.suppress(StoreError):
                self._note_retry(current or ev, failures, retry_at)
        again = self.store.evaluation(ev.id) or ev
        self.broker.enqueue(again.model_copy(update={"wait_until": retry_at}))

    def _note_retry(self, ev: Evaluation, failures: Failures, retry_at: float) -> None:
        """Record the failed try on the evaluation (``podium eval status`` shows it), with
        its retry time, which a restarted server honours too (the broker holds it)."""
        txn = self.store.txn()
        txn.put_eval(
            ev.model_copy(
                update={
                    "status_description": (
                        f"try {failures.scheduler} of {self.eval_retry.attempts} failed "
                        f"({failures.last}); retrying"
                    ),
                    "wait_until": retry_at,
                    "modify_index": txn.index,
                    "modify_time": self.clock(),
                }
            )
        )
        self.store.commit(txn)

    def _cancel_superseded_safely(self) -> None:
        try:
            self._cancel_superseded()
        except StoreError as exc:  # they stay pending in the store; cancel them next time
            log.warning("cannot cancel superseded evaluations: %s", exc)

    def _cancel(self, ev: Evaluation, why: str) -> None:
        current = self.store.evaluation(ev.id)
        if current is None or current.terminal():
            return
        txn = self.store.txn()
        txn.put_eval(
            current.model_copy(
                update={
                    "status": EvalStatus.CANCELED,
                    "status_description": why,
                    "modify_index": txn.index,
                    "modify_time": self.clock(),
                }
            )
        )
        self.store.commit(txn)

    def _cancel_superseded(self) -> None:
        old = self.broker.take_superseded()
        if not old:
            return
        try:
            self._commit_superseded(old)
        except StoreError:
            self.broker.supersede(old)  # tried again after the next evaluation
            raise

    def _commit_superseded(self, old: list[Evaluation]) -> None:
        txn = self.store.txn()
        for ev in old:
            current = self.store.evaluation(ev.id)
            if current is None or current.terminal():
                continue
            txn.put_eval(
                current.model_copy(
                    update={
                        "status": EvalStatus.CANCELED,
                        "status_description": "superseded by a newer evaluation",
                        "modify_index": txn.index,
                        "modify_time": self.clock(),
                    }
                )
            )
        self.store.commit(txn)

    # ------------------------------------------------------------------ garbage collection
    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.gc_interval)
            try:
                self.gc()
            except Exception:
                log.exception("garbage collection failed")

    def _gc_deployments(self, txn: Txn) -> int:
        """Deployments of purged jobs, and ended ones beyond the newest few per job."""
        store = self.store
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
            for dep in deps[self.config.eval_gc_keep :]:
                txn.delete_deployment(dep.id)
                removed += 1
        return removed

    def gc(self) -> int:
        """Remove terminal evaluations beyond the newest few per job, the allocations of
        purged jobs once their tasks have exited, and any allocation that has been
        finished for longer than ``alloc_gc_age`` and stopped (its agent then forgets it
        and removes its directory).  Returns how many objects went."""
        store = self.store
        now = self.clock()
        txn = store.txn()
        removed = 0
        by_job: dict[tuple[str, str], list[Evaluation]] = {}
        for ev in store.evaluations():
            if ev.terminal():
                by_job.setdefault((ev.namespace, ev.job_id), []).append(ev)
        for evs in by_job.values():
            evs.sort(key=lambda e: e.modify_index, reverse=True)
            for ev in evs[self.config.eval_gc_keep :]:
                txn.delete_eval(ev.id)
                removed += 1
        for alloc in store.allocs():
            if not alloc.client_terminal():
                continue
            purged = store.job(alloc.job_id, alloc.namespace) is None
            old = (
                alloc.desired_status == DesiredStatus.STOP
                and now - alloc.modify_time > self.config.alloc_gc_age
            )
            if purged or old:
                txn.delete_alloc(alloc.id)
                removed += 1
        removed += self._gc_deployments(txn)
        if removed:
            catalog.sync_txn(store, txn)
            store.commit(txn)
        return removed
