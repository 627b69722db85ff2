"""An in-memory cluster for driving the scheduler without a server.

:class:`Harness` is a :class:`~podium.scheduler.snapshot.Snapshot` over plain
dictionaries that can also *apply* a scheduler result by the plan applier's own
rule (:mod:`podium.scheduler.commit`: all or nothing), play the agents' part (mark
allocations running, failed, complete), and loop ``schedule -> apply`` until
the plan comes back empty.  Tests use it to state a scenario in a few lines;
simulations and benchmarks use it to run thousands of evaluations.

The builders (:func:`make_node`, :func:`make_job`, ...) fill in every field a
scenario does not care about, and :func:`id_sequence` gives reproducible ids so
two runs can be compared byte for byte.

It lives in the package, not under ``tests/``, because it is only standard
library and models, and later simulations import it too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from podium.models import (
    Allocation,
    AllocHealth,
    ClientStatus,
    Deployment,
    DesiredStatus,
    DriverInfo,
    Eligibility,
    EvalStatus,
    Evaluation,
    Group,
    Job,
    JobSpec,
    JobType,
    Node,
    NodeResources,
    NodeStatus,
    PlanResult,
    ReschedulePolicy,
    Resources,
    SchedulerResult,
    Task,
    TriggeredBy,
    next_job,
)
from podium.models.schedconfig import (
    DEFAULT_SCHEDULER_CONFIG,
    PreemptionConfig,
    SchedulerConfiguration,
)
from podium.scheduler import schedule
from podium.scheduler.commit import PLAN_ATTEMPTS, commit_plan
from podium.scheduler.reconcile import instance_name


def id_sequence(prefix: str = "id") -> Callable[[], str]:
    """``prefix-000001``, ``prefix-000002``, ...: a reproducible ``new_id``."""
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):06d}"


class _AllocTable(dict[str, Allocation]):
    """Allocations by id that keep each node's resources in use up to date on every write,
    as the state store does, so reading a node's usage costs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.usage: dict[str, tuple[int, int]] = {}

    def _add(self, alloc: Allocation, sign: int) -> None:
        if alloc.uses_resources():
            cpu, memory = self.usage.get(alloc.node_id, (0, 0))
            self.usage[alloc.node_id] = (
                cpu + sign * alloc.resources.cpu,
                memory + sign * alloc.resources.memory,
            )

    def __setitem__(self, key: str, alloc: Allocation) -> None:
        old = self.get(key)
        if old is not None:
            self._add(old, -1)
        self._add(alloc, 1)
        super().__setitem__(key, alloc)


class _CommitView:
    """The harness as the commit rule reads it (:class:`~podium.scheduler.commit.CommitView`):
    a missing allocation or deployment is None, where :meth:`Harness.alloc` raises."""

    def __init__(self, h: Harness) -> None:
        self._h = h

    def node(self, node_id: str) -> Node | None:
        return self._h.node(node_id)

    def alloc(self, alloc_id: str) -> Allocation | None:
        return self._h._allocs.get(alloc_id)

    def node_usage(self, node_id: str) -> tuple[int, int]:
        return self._h.node_usage(node_id)

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        return self._h.allocs_by_node(node_id)

    def deployment(self, deployment_id: str) -> Deployment | None:
        return self._h.deployments.get(deployment_id)

    def job(self, job_id: str, namespace: str = "default") -> Job | None:
        return self._h.job(job_id, namespace)


# -- builders ---------------------------------------------------------------


def make_node(
    name: str,
    *,
    cpu: int = 4000,
    memory: int = 8192,
    drivers: Iterable[str] = ("exec", "mock"),
    status: NodeStatus = NodeStatus.READY,
    eligibility: Eligibility = Eligibility.ELIGIBLE,
    drain: bool = False,
    node_id: str | None = None,
    reserved_cpu: int = 0,
    reserved_memory: int = 0,
    datacenter: str = "dc1",
    node_pool: str = "default",
    attributes: Mapping[str, str] | None = None,
    meta: Mapping[str, str] | None = None,
) -> Node:
    """A ready, eligible node named ``name`` (its id is ``node-{name}`` unless given)."""
    return Node(
        id=node_id or f"node-{name}",
        name=name,
        datacenter=datacenter,
        node_pool=node_pool,
        attributes=dict(attributes or {}),
        meta=dict(meta or {}),
        status=status,
        eligibility=eligibility,
        drain=drain,
        resources=NodeResources(cpu=cpu, memory=memory),
        reserved=NodeResources(cpu=reserved_cpu, memory=reserved_memory),
        drivers={d: DriverInfo(detected=True, healthy=True) for d in drivers},
    )


def make_group(
    count: int = 1,
    *,
    cpu: int = 100,
    memory: int = 128,
    driver: str = "mock",
    tasks: int = 1,
    config: Mapping[str, Any] | None = None,
    reschedule: ReschedulePolicy | None = None,
    meta: Mapping[str, str] | None = None,
    **fields: Any,
) -> Group:
    """A group of ``tasks`` identical tasks (``task``, ``task1``, ...) asking ``cpu``/``memory`` each.

    ``fields`` are further :class:`Group` fields as in a job file, e.g.
    ``constraints=[{"attribute": "${meta.rack}", "value": "r1"}]``, ``max_per_node=1``
    or ``network={"ports": {"http": {"static": 8080}}}``.
    """
    names = ["task"] + [f"task{i}" for i in range(1, tasks)]
    return Group.model_validate(
        {
            "count": count,
            "reschedule": reschedule or ReschedulePolicy(),
            "meta": dict(meta or {}),
            "tasks": {
                n: Task(
                    driver=driver,
                    config=dict(config or {}),
                    resources=Resources(cpu=cpu, memory=memory),
                )
                for n in names
            },
            **fields,
        }
    )


def make_job(
    job_id: str = "web",
    *,
    type: JobType | str = JobType.SERVICE,
    groups: Mapping[str, Group] | None = None,
    priority: int = 50,
    job_fields: Mapping[str, Any] | None = None,
    **group_kwargs: Any,
) -> JobSpec:
    """A job spec; without ``groups``, one group named like the job built by :func:`make_group`.

    ``job_fields`` are further :class:`JobSpec` fields as in a job file
    (``datacenters``, ``node_pool``, ``constraints``, ``affinities``, ``spread``).
    """
    if groups is None:
        groups = {job_id: make_group(**group_kwargs)}
    # Validate through the model so policy defaults are filled in as for a real job file.
    return JobSpec.model_validate(
        {
            "job": job_id,
            "type": JobType(type),
            "priority": priority,
            "groups": {k: g.model_dump() for k, g in groups.items()},
            **dict(job_fields or {}),
        }
    )


def make_eval(
    job_id: str,
    *,
    eval_id: str,
    triggered_by: TriggeredBy = TriggeredBy.JOB_REGISTER,
    node_id: str | None = None,
    priority: int = 50,
    type: str = "service",
    now: float = 0.0,
) -> Evaluation:
    return Evaluation(
        id=eval_id,
        priority=priority,
        type=type,
        triggered_by=triggered_by,
        job_id=job_id,
        node_id=node_id,
        create_time=now,
        modify_time=now,
    )


def make_alloc(
    job: Job,
    group: str,
    index: int,
    node: Node,
    *,
    alloc_id: str,
    client_status: ClientStatus = ClientStatus.RUNNING,
    desired_status: DesiredStatus = DesiredStatus.RUN,
    job_version: int | None = None,
    time: float = 0.0,
) -> Allocation:
    """An allocation of ``job``'s ``group`` at ``index`` on ``node``, sized from the spec."""
    spec = job.spec.groups[group]
    return Allocation(
        id=alloc_id,
        eval_id="eval-setup",
        name=instance_name(job.id, group, index),
        job_id=job.id,
        job_version=job.version if job_version is None else job_version,
        group=group,
        index=index,
        node_id=node.id,
        node_name=node.name,
        resources=Resources(
            cpu=sum(t.resources.cpu for t in spec.tasks.values()),
            memory=sum(t.resources.memory for t in spec.tasks.values()),
        ),
        task_resources={n: t.resources.model_copy() for n, t in spec.tasks.items()},
        desired_status=desired_status,
        client_status=client_status,
        create_time=time,
        modify_time=time,
    )


# -- the in-memory cluster --------------------------------------------------


class Harness:
    """A cluster in dictionaries: a Snapshot, a plan applier and a fake fleet of agents.

    It is its own snapshot: hand it to :func:`schedule` directly.  Stored
    objects are replaced, never mutated, so a result computed from it stays
    valid after later changes.
    """

    def __init__(self, *, id_prefix: str = "id", now: float = 1000.0) -> None:
        self._index = 1
        self._nodes: dict[str, Node] = {}
        self._jobs: dict[tuple[str, str], Job] = {}
        self._versions: dict[tuple[str, str, int], JobSpec] = {}
        self._allocs = _AllocTable()
        self._by_job: dict[tuple[str, str], dict[str, None]] = {}
        self._by_node: dict[str, dict[str, None]] = {}
        self.evals: dict[str, Evaluation] = {}
        self.deployments: dict[str, Deployment] = {}
        self.results: list[SchedulerResult] = []
        """Every result applied, in order."""
        self.plan_results: list[PlanResult] = []
        """What each apply committed (and rejected), in the same order."""
        self.new_id = id_sequence(id_prefix)
        self.now = now
        """The clock used when a method is not given ``now``; tests move it forward by hand."""
        self.config = DEFAULT_SCHEDULER_CONFIG
        """The cluster's scheduler configuration (see :meth:`set_preemption`)."""

    # -- Snapshot ------------------------------------------------------------

    @property
    def index(self) -> int:
        return self._index

    def job(self, job_id: str, namespace: str = "default") -> Job | None:
        return self._jobs.get((namespace, job_id))

    def job_spec(self, job_id: str, version: int, namespace: str = "default") -> JobSpec | None:
        return self._versions.get((namespace, job_id, version))

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def node(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def allocs_by_job(self, job_id: str, namespace: str = "default") -> list[Allocation]:
        ids = self._by_job.get((namespace, job_id), {})
        return [self._allocs[i] for i in ids]

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        return [self._allocs[i] for i in self._by_node.get(node_id, {})]

    def evaluation(self, eval_id: str) -> Evaluation | None:
        return self.evals.get(eval_id)

    def scheduler_config(self) -> SchedulerConfiguration:
        return self.config

    def set_preemption(self, *types: str) -> SchedulerConfiguration:
        """Let exactly the job types ``types`` preempt (``service``, ``batch``, ``system``)."""
        self.config = SchedulerConfiguration(
            preemption_config=PreemptionConfig.of_types(list(types)),
            create_index=self.config.create_index or self._index + 1,
            modify_index=self._bump(),
        )
        return self.config

    def latest_deployment(self, job_id: str, namespace: str = "default") -> Deployment | None:
        found = [
            d for d in self.deployments.values() if d.job_id == job_id and d.namespace == namespace
        ]
        if not found:
            return None
        return max(found, key=lambda d: (d.create_index, d.job_version, d.id))

    def set_deployment(self, deployment_id: str, **changes: Any) -> Deployment:
        """Change a deployment as the server's watcher would (status, promoted groups)."""
        dep = self.deployments[deployment_id].model_copy(
            update={**changes, "modify_index": self._bump()}
        )
        self.deployments[deployment_id] = dep
        return dep

    def promote(self, deployment_id: str) -> Deployment:
        dep = self.deployments[deployment_id].model_copy(deep=True)
        for group in dep.groups.values():
            group.promoted = True
        self.deployments[deployment_id] = dep
        return dep

    def set_health(
        self, alloc_id: str, healthy: bool | None, *, now: float | None = None
    ) -> Allocation:
        """What an agent reports once it judged an allocation's deployment health."""
        now = self.now if now is None else now
        alloc = self._allocs[alloc_id]
        ds = alloc.deployment_status or AllocHealth()
        alloc = alloc.model_copy(
            update={
                "deployment_status": ds.model_copy(update={"healthy": healthy, "timestamp": now}),
                "modify_index": self._bump(),
            }
        )
        self._allocs[alloc_id] = alloc
        return alloc

    # -- writes --------------------------------------------------------------

    def _bump(self) -> int:
        self._index += 1
        return self._index

    def add_node(self, node: Node) -> Node:
        """Insert or replace a node."""
        index = self._bump()
        node = node.model_copy(update={"modify_index": index})
        if node.id not in self._nodes:
            node.create_index = index
        self._nodes[node.id] = node
        return node

    def add_nodes(self, count: int, *, prefix: str = "n", **kwargs: Any) -> list[Node]:
        return [self.add_node(make_node(f"{prefix}{i}", **kwargs)) for i in range(count)]

    def set_node(self, node_id: str, **changes: Any) -> Node:
        """Change fields of a node, e.g. ``status=NodeStatus.DOWN`` or ``drain=True``."""
        node = self._nodes[node_id].model_copy(update={**changes, "modify_index": self._bump()})
        self._nodes[node_id] = node
        return node

    def remove_node(self, node_id: str) -> None:
        """Forget a node (garbage-collected); its allocations stay, now on a missing node."""
        self._bump()
        del self._nodes[node_id]

    def register(self, spec: JobSpec, *, now: float | None = None) -> Job:
        """Register a job; a changed spec becomes a new version (an unchanged one does not)."""
        now = self.now if now is None else now
        key = ("default", spec.id)
        old = self._jobs.get(key)
        if old is not None and old.spec == spec and not old.stop:
            return old
        job, _ = next_job(spec, old, self._bump(), now)
        self._jobs[key] = job
        self._versions[("default", spec.id, job.version)] = spec
        return job

    def stop_job(self, job_id: str) -> Job:
        key = ("default", job_id)
        job = self._jobs[key].model_copy(update={"stop": True, "modify_index": self._bump()})
        self._jobs[key] = job
        return job

    def purge_job(self, job_id: str) -> None:
        """Forget the job (its allocations stay, as in a real store until GC)."""
        self._bump()
        del self._jobs[("default", job_id)]

    def put_alloc(self, alloc: Allocation) -> Allocation:
        """Insert or replace an allocation as-is (scenario setup)."""
        return self._store(alloc, self._bump())

    def _store(self, alloc: Allocation, index: int) -> Allocation:
        stored = self._allocs.get(alloc.id)
        return self._write(
            alloc.model_copy(
                update={
                    "modify_index": index,
                    "create_index": stored.create_index if stored is not None else index,
                }
            )
        )

    def _write(self, alloc: Allocation) -> Allocation:
        """Store an allocation as given (indexes included) and index it by job and node."""
        self._allocs[alloc.id] = alloc
        self._by_job.setdefault((alloc.namespace, alloc.job_id), {})[alloc.id] = None
        self._by_node.setdefault(alloc.node_id, {})[alloc.id] = None
        return alloc

    def alloc(self, alloc_id: str) -> Allocation:
        return self._allocs[alloc_id]

    def allocs(self) -> list[Allocation]:
        return list(self._allocs.values())

    def client_update(
        self, alloc_id: str, status: ClientStatus, *, now: float | None = None
    ) -> Allocation:
        """What an agent reports: the allocation's client status changed at ``now``."""
        now = self.now if now is None else now
        alloc = self._allocs[alloc_id].model_copy(
            update={"client_status": status, "modify_time": now, "modify_index": self._bump()}
        )
        self._allocs[alloc_id] = alloc
        return alloc

    def run_pending(self, *, now: float | None = None) -> int:
        """Every pending allocation meant to run starts running; stopped ones finish.

        Plays all agents at once: after it, stopped allocations no longer hold
        resources, as on a real node once the processes exit.
        """
        changed = 0
        for alloc in list(self._allocs.values()):
            if alloc.client_terminal():
                continue
            if alloc.desired_status == DesiredStatus.STOP:
                self.client_update(alloc.id, ClientStatus.COMPLETE, now=now)
                changed += 1
            elif alloc.client_status == ClientStatus.PENDING:
                self.client_update(alloc.id, ClientStatus.RUNNING, now=now)
                changed += 1
        return changed

    # -- applying plans ------------------------------------------------------

    def node_usage(self, node_id: str) -> tuple[int, int]:
        """(cpu, memory) held on the node by allocations whose tasks have not exited."""
        return self._allocs.usage.get(node_id, (0, 0))

    def overcommitted(self) -> list[str]:
        """Node ids whose in-use resources exceed their capacity (should always be empty)."""
        bad = []
        for node in self._nodes.values():
            cpu, memory = self.node_usage(node.id)
            cap = node.capacity()
            if cpu > cap.cpu or memory > cap.memory:
                bad.append(node.id)
        return bad

    def apply(self, result: SchedulerResult, *, now: float | None = None) -> PlanResult:
        """Commit a result by the plan applier's own rule (:func:`commit_plan`).

        Every node the plan places on is re-checked against what is stored now;
        if any no longer fits, nothing at all is written (not the placements that
        still fit elsewhere, not the evaluation's outcome) and the outcome names
        the rejected nodes: the caller re-plans, as :meth:`run_eval` does.
        Otherwise the whole plan, the evaluation's outcome and its follow-up
        evaluations (into :attr:`evals`) commit at one new index.
        """
        now = self.now if now is None else now
        verdict = commit_plan(_CommitView(self), result, now, self._index + 1)
        self.results.append(result)
        if not verdict.accepted:
            outcome = PlanResult(index=self._index, rejected_nodes=verdict.rejected_nodes)
        else:
            self._index = verdict.index
            for alloc in verdict.allocs.values():
                self._write(alloc)
            self.deployments.update(verdict.deployments)
            for ev in verdict.evals:
                self.evals[ev.id] = ev
            outcome = PlanResult(
                index=verdict.index,
                committed_placements=verdict.placed,
                committed_stops=verdict.stopped,
                committed_preemptions=verdict.preempted,
            )
        self.plan_results.append(outcome)
        return outcome

    # -- running evaluations -------------------------------------------------

    def evaluate(
        self,
        job_id: str,
        *,
        triggered_by: TriggeredBy = TriggeredBy.JOB_REGISTER,
        now: float | None = None,
        node_id: str | None = None,
        candidate_limit: int | None = None,
    ) -> SchedulerResult:
        """Create an evaluation for ``job_id``, schedule it and apply the result."""
        now = self.now if now is None else now
        job = self.job(job_id)
        ev = make_eval(
            job_id,
            eval_id=self.new_id(),
            triggered_by=triggered_by,
            node_id=node_id,
            priority=job.priority if job is not None else 50,
            type=job.type if job is not None else "service",
            now=now,
        )
        return self.run_eval(ev, now=now, candidate_limit=candidate_limit)

    def run_eval(
        self,
        evaluation: Evaluation,
        *,
        now: float | None = None,
        candidate_limit: int | None = None,
    ) -> SchedulerResult:
        """Schedule an existing evaluation (say a follow-up from :attr:`evals`) and apply it.

        A plan the commit rule refuses (it went stale) is planned again on the
        latest state, up to :data:`PLAN_ATTEMPTS` times in all; then the
        evaluation is stored failed, as the server's worker does.  The last
        result is returned either way.
        """
        now = self.now if now is None else now
        for _ in range(PLAN_ATTEMPTS):
            result = schedule(
                self, evaluation, now, new_id=self.new_id, candidate_limit=candidate_limit
            )
            if not self.apply(result, now=now).rejected_nodes:
                return result
        # As the server's worker does: a plan that keeps going stale fails the evaluation.
        failed = evaluation.model_copy(
            update={
                "status": EvalStatus.FAILED,
                "status_description": (
                    f"plan rejected {PLAN_ATTEMPTS} times: the cluster kept changing"
                ),
                "modify_index": self._bump(),
                "modify_time": now,
            }
        )
        self.evals[failed.id] = failed
        return result

    def due_evals(self, *, now: float | None = None) -> list[Evaluation]:
        """Pending evaluations whose ``wait_until`` has come, oldest first."""
        now = self.now if now is None else now
        return sorted(
            (
                e
                for e in self.evals.values()
                if e.status == EvalStatus.PENDING and (e.wait_until or 0.0) <= now
            ),
            key=lambda e: (e.wait_until or 0.0, e.create_index, e.id),
        )

    def converge(
        self,
        job_id: str,
        *,
        now: float | None = None,
        max_rounds: int = 10,
        run_agents: bool = True,
        candidate_limit: int | None = None,
    ) -> list[SchedulerResult]:
        """Evaluate the job until a plan comes back empty; every result, the empty one last.

        With ``run_agents`` the fake agents act between rounds (placed
        allocations start, stopped ones finish), as a live cluster would.
        Raises ``RuntimeError`` when ``max_rounds`` pass without converging:
        a scheduler that keeps changing its mind is a bug.
        """
        results: list[SchedulerResult] = []
        for _ in range(max_rounds):
            result = self.evaluate(job_id, now=now, candidate_limit=candidate_limit)
            results.append(result)
            if result.plan.empty():
                return results
            if run_agents:
                self.run_pending(now=now)
        raise RuntimeError(f"job {job_id!r} did not converge in {max_rounds} rounds")

    def live(self, job_id: str, group: str | None = None) -> list[Allocation]:
        """The job's allocations that are meant to run and have not ended, by index."""
        return sorted(
            (
                a
                for a in self.allocs_by_job(job_id)
                if not a.terminal() and (group is None or a.group == group)
            ),
            key=lambda a: (a.group, a.index, a.id),
        )
