"""The server: the composition root of the control plane.

It builds the parts and wires them to one store, one evaluation broker and one clock;
the parts do the work, each in a module of its own:

- :mod:`~podium.server.jobs`: register, plan, revert, scale, stop;
- :mod:`~podium.server.nodes`: node registration, heartbeats and their expiry, drains;
- :mod:`~podium.server.reports`: agents' task-state reports, group-committed;
- :mod:`~podium.server.worker`: the scheduling worker, with :mod:`~podium.server.retry`;
- :mod:`~podium.server.gc`: garbage collection;
- :mod:`~podium.server.deployments`: the deployment watcher;
- :mod:`~podium.server.autoscaler`: the autoscaler (docs/autoscaling.md).

What serves the API (every call below) is apart from what only the leader may run
(:class:`~podium.server.leader.LeaderDuties`: the workers, heartbeat expiry, the
drainer, the deployment watcher's tick and GC), which ``start`` starts and
``leader`` starts and stops on its own.  The public methods are the ones the HTTP
layer (:mod:`podium.server.api`) calls; every write is one store transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from podium.errors import NotFound
from podium.models import AllocClientUpdate, Deployment, Evaluation, JobSpec, Node
from podium.models.acl import NodeSecret
from podium.models.views import JobPlanResult
from podium.scheduler import schedule
from podium.scheduler.commit import PLAN_ATTEMPTS
from podium.server import deployments, namespaces
from podium.server.applier import PlanApplier
from podium.server.autoscaler import Autoscaler
from podium.server.broker import EvalBroker
from podium.server.children import collect as collect_children
from podium.server.cluster import ClusterView, Solo
from podium.server.config import ServerConfig
from podium.server.dispatch import Dispatcher
from podium.server.evals import new_eval, new_id
from podium.server.gc import collect as collect_garbage
from podium.server.jobs import Jobs, RegisterResult
from podium.server.keyring import Keyring
from podium.server.leader import LeaderDuties
from podium.server.metrics import ServerMetrics
from podium.server.nodes import Nodes
from podium.server.periodic import TICK as PERIODIC_TICK
from podium.server.periodic import PeriodicDispatcher
from podium.server.reports import Reports
from podium.server.retry import Failures, RetryPolicy
from podium.server.shed import LoadShedder
from podium.server.trust import Trust
from podium.server.variables import Variables
from podium.server.worker import EVAL_YIELD_MAX, SchedulerStats, Worker
from podium.state import StateStore

__all__ = [
    "EVAL_YIELD_MAX",
    "RegisterResult",
    "SchedulerStats",
    "Server",
    "ServerConfig",
    "new_id",
]


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
        """The server's time; the parts read it through ``_now``, so that replacing it
        here (a test moving time) moves it for all of them."""
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
        self.deployments = deployments.DeploymentWatcher(store, new_eval)
        self.namespaces = namespaces.Namespaces(store)
        now = self._now
        self.jobs = Jobs(store, self.broker, self.config, now)
        self.nodes = Nodes(store, self.broker, self.config, now)
        self.reports = Reports(
            store,
            self.broker,
            self.config,
            now,
            self.deployments,
            self.jobs,
            commit=lambda reports: self.client_update_many(reports),
        )
        self.worker = Worker(store, self.broker, self.applier, now, self.process_eval)
        self.autoscaler = Autoscaler(store, self.jobs, now)
        """Moves autoscaled groups' counts (a leader's loop; the API gives it its way to
        the agents: podium.server.api)."""
        self.periodic = PeriodicDispatcher(store, self.broker, now)
        """Launches periodic jobs' children (a leader's duty; podium.server.periodic)."""
        self.dispatcher = Dispatcher(store, self.broker, now)
        """Dispatches parameterized jobs (podium.server.dispatch)."""
        self.leader = LeaderDuties(
            store,
            self.broker,
            self.config,
            worker=self.worker.run,
            refresh_heartbeats=self.nodes.refresh_heartbeats,
            check_heartbeats=self.check_heartbeats,
            drain_tick=self.drain_tick,
            deployments_tick=self.deployments_tick,
            gc=self.gc,
            loops=[("autoscaler", self.autoscaler.run)],
            periodic=(PERIODIC_TICK, self.periodic.tick, self.periodic.reset),
        )
        """The loops only the leader runs; started by :meth:`start`, and on their own by
        ``leader.start()`` / ``await leader.stop()``."""
        self.cluster: ClusterView = Solo(self)
        self.heartbeat_url: str | None = None
        """The heartbeat lane's URL (:mod:`podium.server.lane`), None without one."""
        self.lane_counts = {"heard": 0, "handed": 0}
        """Heartbeats on the lane: heard there, handed to the loop (written by the lane's
        thread alone; read by the metrics)."""
        """Who leads and who the servers are (:class:`podium.server.ha.HighAvailability`
        replaces it for servers on etcd, and starts the duties only while it leads)."""
        self.started = False
        self.metrics = ServerMetrics(self)
        """This server's Prometheus registry and the hooks its hot paths feed
        (podium.server.metrics; served at ``/v1/metrics``)."""
        self.shedder = LoadShedder(self.config.shed_lag)
        """The event loop's recent lag, and what the API turned away while it was behind
        (podium.server.shed)."""

    def _now(self) -> float:
        return self.clock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, lead: bool = True) -> None:
        """Restore the broker from the store and start the background loops (this server
        takes the leader's duties: a single server is its own leader).  ``lead=False``:
        not now (a server on etcd takes them when elected)."""
        if lead:
            self.leader.start()
        self.metrics.loop_lag.start()
        self.started = True

    async def stop(self) -> None:
        self.metrics.loop_lag.stop()
        self.shedder.stop()
        self.broker.close()
        await self.reports.close()  # reports accepted before the stop are committed
        await self.leader.stop()

    @property
    def stats(self) -> SchedulerStats:
        """Counters over the scheduling worker (read by ``podium sim``)."""
        return self.worker.stats

    @property
    def eval_retry(self) -> RetryPolicy:
        """How failed evaluations are retried, then parked (podium.server.retry)."""
        return self.worker.retry

    @eval_retry.setter
    def eval_retry(self, policy: RetryPolicy) -> None:
        self.worker.retry = policy

    @property
    def _eval_failures(self) -> dict[str, Failures]:
        return self.worker.failures

    @property
    def _tasks(self) -> list[asyncio.Task[None]]:
        """The leader's loops while they run."""
        return self.leader.tasks

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
        """See :meth:`podium.server.jobs.Jobs.register`."""
        return self.jobs.register(
            spec,
            check_index,
            description=description,
            force_reschedule=force_reschedule,
            namespace=namespace,
        )

    def plan_job(
        self, spec: JobSpec, *, diff: bool = True, namespace: str | None = None
    ) -> JobPlanResult:
        """See :meth:`podium.server.jobs.Jobs.plan`."""
        return self.jobs.plan(spec, diff=diff, namespace=namespace)

    def revert_job(
        self,
        job_id: str,
        version: int,
        enforce_prior_version: int | None = None,
        reason: str = "",
        namespace: str = "default",
    ) -> RegisterResult:
        """See :meth:`podium.server.jobs.Jobs.revert`."""
        return self.jobs.revert(job_id, version, enforce_prior_version, reason, namespace)

    def scale_job(
        self, job_id: str, group: str, count: int, namespace: str = "default", message: str = ""
    ) -> RegisterResult:
        """See :meth:`podium.server.jobs.Jobs.scale` (refused outside the group's bounds)."""
        return self.jobs.scale(job_id, group, count, namespace, message=message)

    def stop_job(
        self, job_id: str, purge: bool = False, namespace: str = "default"
    ) -> tuple[str, int]:
        return self.jobs.stop(job_id, purge, namespace)

    # ------------------------------------------------------------------ nodes
    def register_node(self, node: Node, secret: NodeSecret | None = None) -> int:
        """See :meth:`podium.server.nodes.Nodes.register`."""
        return self.nodes.register(node, secret)

    def heartbeat(self, node_id: str) -> int:
        return self.nodes.heartbeat(node_id)

    def hear(self, node_id: str) -> int | None:
        """A heartbeat heard off the event loop, by the heartbeat lane's thread
        (:mod:`podium.server.lane`): the store's index, or None when it needs the loop
        (this server does not lead, or the node is unknown or down: :meth:`heartbeat`)."""
        if not (self.leader.running and self.cluster.is_leader()):
            return None
        return self.nodes.hear(node_id)

    def heartbeat_answer(self, index: int) -> dict[str, object]:
        """What a heartbeat (or a registration) is answered: the TTL, and the heartbeat
        lane's URL where this server runs one (agents send their heartbeats there)."""
        answer: dict[str, object] = {"index": index, "heartbeat_ttl": self.config.heartbeat_ttl}
        if self.heartbeat_url:
            answer["heartbeat_url"] = self.heartbeat_url
        return answer

    def set_eligibility(self, node_id: str, eligible: bool) -> int:
        return self.nodes.set_eligibility(node_id, eligible)

    def drain_node(
        self,
        node_id: str,
        *,
        enable: bool = True,
        deadline: float = 3600.0,
        ignore_system: bool = False,
    ) -> int:
        """See :meth:`podium.server.nodes.Nodes.drain`."""
        return self.nodes.drain(
            node_id, enable=enable, deadline=deadline, ignore_system=ignore_system
        )

    def drain_tick(self) -> None:
        """One pass of the drainer (:meth:`podium.server.nodes.Nodes.drain_tick`)."""
        self.nodes.drain_tick()

    def check_heartbeats(self) -> list[str]:
        """Mark nodes whose heartbeat is older than TTL + grace as down."""
        return self.nodes.check_heartbeats()

    def unblock_evals(self) -> None:
        self.nodes.unblock_evals()

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
        """See :meth:`podium.server.reports.Reports.batched`."""
        return await self.reports.batched(node_id, updates, session=session, seq=seq)

    def check_reports_own(self, node_id: str, updates: list[AllocClientUpdate]) -> None:
        self.reports.check_own(node_id, updates)

    def check_report_order(self, node_id: str, session: str, seq: int) -> None:
        self.reports.check_order(node_id, session, seq)

    def client_update_many(self, reports: list[tuple[str, list[AllocClientUpdate]]]) -> int:
        """Agents' reports ``(node_id, updates)``, in one transaction."""
        return self.reports.commit_many(reports)

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
        self.jobs.revert_all(outcome.reverts)
        return outcome.evals[0].id, index

    def _deployment(self, deployment_id: str) -> Deployment:
        dep = self.store.deployment(deployment_id)
        if dep is None:
            raise NotFound(f"deployment {deployment_id} not found")
        return dep

    def deployments_tick(self) -> None:
        """Refresh every running deployment: progress deadlines, and anything a missed
        report left behind (one of the leader's duties)."""
        active = [d.id for d in self.store.deployments() if d.active()]
        if not active:
            return
        now = self.clock()
        txn = self.store.txn()
        outcome = self.deployments.refresh(txn, active, now, deadlines=True)
        self.store.commit(txn)
        for ev in outcome.evals:
            self.broker.enqueue(ev)
        self.jobs.revert_all(outcome.reverts)

    # ------------------------------------------------------------------ scheduling
    def process_eval(self, ev: Evaluation, attempts: int = PLAN_ATTEMPTS) -> None:
        """Schedule one evaluation and commit its plan (re-planning if the plan went
        stale), with this module's ``schedule`` (looked up at each call)."""
        self.worker.process(
            ev, lambda snap, e, now: schedule(snap, e, now, new_id=new_id), attempts
        )

    # ------------------------------------------------------------------ garbage collection
    def gc(self) -> int:
        """Remove what the store no longer needs (:func:`podium.server.gc.collect`);
        returns how many objects went."""
        now = self.clock()
        removed = collect_garbage(self.store, self.config, now)
        return removed + collect_children(self.store, self.config.alloc_gc_age, now)
