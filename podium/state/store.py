"""The state store: every object the servers know, stamped with one global index.

Shape (after Nomad's go-memdb over Raft): the authoritative tables are held in
memory, and every write transaction is first made durable by a
:class:`~podium.state.backend.Backend` (SQLite by default; nothing for the
in-memory store of tests; etcd later) and only then applied and announced.  So:

- reads are memory-speed and never touch the disk;
- an acknowledged write has been committed to the backend (it survives kill -9);
- each commit bumps one increasing ``index`` and stamps it on what it wrote, so
  blocking queries and watches resume from an index;
- snapshots are cheap: secondary indexes hold immutable frozensets that writes
  replace (copy-on-write), so a snapshot copies only the top-level dicts.

All writes run on the server's event loop thread; the store is not thread-safe
for writers, and it need not be.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from podium.models import (
    Allocation,
    ClientStatus,
    Deployment,
    DesiredStatus,
    EncryptedVariable,
    Evaluation,
    Job,
    JobSpec,
    JobVersion,
    Node,
    ServiceRegistration,
)
from podium.models.acl import ACLBootstrap, ACLPolicy, NodeSecret, StoredToken
from podium.models.compact import compact_alloc
from podium.models.namespace import DEFAULT_NAMESPACE, Namespace
from podium.models.scaling import JobScalingEvents
from podium.models.schedconfig import DEFAULT_SCHEDULER_CONFIG, SchedulerConfiguration
from podium.state.backend import Backend, NullBackend
from podium.state.errors import StoreDamaged, StoreError
from podium.state.events import DEFAULT_CAPACITY, EventBuffer

JOBS = "jobs"
VERSIONS = "job_versions"
ALLOCS = "allocs"
NODES = "nodes"
EVALS = "evals"
DEPLOYMENTS = "deployments"
SERVICES = "services"
VARIABLES = "variables"
NAMESPACES = "namespaces"
ACL_TOKENS = "acl_tokens"
ACL_POLICIES = "acl_policies"
ACL_META = "acl_meta"
NODE_SECRETS = "node_secrets"
SCALING_EVENTS = "scaling_events"
"""Per job (``namespace/job_id``), its groups' newest scaling events (docs/autoscaling.md)."""
ACL_TABLES = (ACL_TOKENS, ACL_POLICIES, ACL_META, NODE_SECRETS)
"""Trust: ACL tokens (by accessor), policies (by name), the bootstrap record, and each
node's secret (by node id); secrets only ever as hashes."""
SCHED_CONFIG = "scheduler_config"
"""The cluster's scheduler configuration: one row, key ``config`` (preemption per type)."""
TABLES = (
    JOBS,
    VERSIONS,
    ALLOCS,
    NODES,
    EVALS,
    DEPLOYMENTS,
    SERVICES,
    VARIABLES,
    NAMESPACES,
    *ACL_TABLES,
    SCALING_EVENTS,
    SCHED_CONFIG,
)

TXN_META = "_txn"
"""Not a table: what a transaction says of itself, carried to the backend as deletes of
keys no row has (inert in every backend), so that a follower applying the commit from the
log (:meth:`StateStore.apply_committed`) applies it exactly as its committer did.  The one
key so far is ``client_update`` (see :attr:`Txn.client_update`)."""
CLIENT_UPDATE = "client_update"

_MODELS: dict[str, Any] = {
    JOBS: Job,
    VERSIONS: JobVersion,
    ALLOCS: Allocation,
    NODES: Node,
    EVALS: Evaluation,
    DEPLOYMENTS: Deployment,
    SERVICES: ServiceRegistration,
    VARIABLES: EncryptedVariable,
    NAMESPACES: Namespace,
    ACL_TOKENS: StoredToken,
    ACL_POLICIES: ACLPolicy,
    ACL_META: ACLBootstrap,
    NODE_SECRETS: NodeSecret,
    SCALING_EVENTS: JobScalingEvents,
    SCHED_CONFIG: SchedulerConfiguration,
}

JobKey = tuple[str, str]


def _job_key(namespace: str, job_id: str) -> JobKey:
    return (namespace, job_id)


def _key_str(table: str, obj: Any) -> str:
    if table == JOBS:
        return f"{obj.namespace}/{obj.id}"
    if table == SCALING_EVENTS:
        return f"{obj.namespace}/{obj.job_id}"
    if table == VERSIONS:
        # Rows written before namespaces were keyed ``default/...`` and carry no
        # namespace field, which reads as ``default``: the same key.
        return f"{obj.namespace}/{obj.job_id}/{obj.version}"
    if table == VARIABLES:
        return f"{obj.namespace}/{obj.path}"
    if table == NAMESPACES:
        return str(obj.name)
    if table == ACL_TOKENS:
        return str(obj.accessor_id)
    if table == ACL_POLICIES:
        return str(obj.name)
    if table == NODE_SECRETS:
        return str(obj.node_id)
    return str(obj.id)


@dataclass
class Txn:
    """One atomic write.  Build it, then hand it to :meth:`StateStore.commit`.

    ``index`` is the index the transaction will commit at: stamp it on the
    objects you put (``create_index``/``modify_index``).
    """

    index: int
    client_update: bool = False
    """Only agents' reports of their own allocations: this does not wake the nodes'
    allocation syncs (an agent needs no echo of what it just said)."""
    puts: dict[str, dict[str, Any]] = field(default_factory=lambda: {t: {} for t in TABLES})
    deletes: dict[str, set[str]] = field(default_factory=lambda: {t: set() for t in TABLES})

    def put_job(self, job: Job) -> None:
        self.puts[JOBS][_key_str(JOBS, job)] = job

    def put_version(self, version: JobVersion) -> None:
        self.puts[VERSIONS][_key_str(VERSIONS, version)] = version

    def put_alloc(self, alloc: Allocation) -> None:
        self.puts[ALLOCS][alloc.id] = alloc

    def put_node(self, node: Node) -> None:
        self.puts[NODES][node.id] = node

    def put_eval(self, evaluation: Evaluation) -> None:
        self.puts[EVALS][evaluation.id] = evaluation

    def delete_job(self, namespace: str, job_id: str, versions: Iterable[int]) -> None:
        self.deletes[JOBS].add(f"{namespace}/{job_id}")
        for v in versions:
            self.deletes[VERSIONS].add(f"{namespace}/{job_id}/{v}")

    def delete_alloc(self, alloc_id: str) -> None:
        self.deletes[ALLOCS].add(alloc_id)

    def delete_eval(self, eval_id: str) -> None:
        self.deletes[EVALS].add(eval_id)

    def put_deployment(self, deployment: Deployment) -> None:
        self.puts[DEPLOYMENTS][deployment.id] = deployment

    def delete_deployment(self, deployment_id: str) -> None:
        self.deletes[DEPLOYMENTS].add(deployment_id)

    def put_service(self, registration: ServiceRegistration) -> None:
        self.puts[SERVICES][registration.id] = registration
        self.deletes[SERVICES].discard(registration.id)

    def delete_service(self, registration_id: str) -> None:
        self.deletes[SERVICES].add(registration_id)
        self.puts[SERVICES].pop(registration_id, None)

    def put_variable(self, variable: EncryptedVariable) -> None:
        self.puts[VARIABLES][_key_str(VARIABLES, variable)] = variable

    def delete_variable(self, namespace: str, path: str) -> None:
        self.deletes[VARIABLES].add(f"{namespace}/{path}")

    def put_namespace(self, namespace: Namespace) -> None:
        self.puts[NAMESPACES][namespace.name] = namespace
        self.deletes[NAMESPACES].discard(namespace.name)

    def delete_namespace(self, name: str) -> None:
        self.deletes[NAMESPACES].add(name)
        self.puts[NAMESPACES].pop(name, None)

    def put_scheduler_config(self, config: SchedulerConfiguration) -> None:
        self.puts[SCHED_CONFIG][config.id] = config

    def put_acl(self, table: str, obj: Any) -> None:
        """An ACL token, policy or bootstrap record, or a node secret (``table``)."""
        key = _key_str(table, obj)
        self.puts[table][key] = obj
        self.deletes[table].discard(key)

    def delete_acl(self, table: str, key: str) -> None:
        self.deletes[table].add(key)
        self.puts[table].pop(key, None)

    def put_scaling_events(self, events: JobScalingEvents) -> None:
        key = _key_str(SCALING_EVENTS, events)
        self.puts[SCALING_EVENTS][key] = events
        self.deletes[SCALING_EVENTS].discard(key)

    def delete_scaling_events(self, namespace: str, job_id: str) -> None:
        key = f"{namespace}/{job_id}"
        self.deletes[SCALING_EVENTS].add(key)
        self.puts[SCALING_EVENTS].pop(key, None)

    def empty(self) -> bool:
        return not any(self.puts.values()) and not any(self.deletes.values())

    def tables(self) -> set[str]:
        return {t for t in TABLES if self.puts[t] or self.deletes[t]}


def parse_rows(rows: Iterable[tuple[str, str, bytes]]) -> list[tuple[str, Any]]:
    """The stored rows ``(table, key, json)`` as ``(table, model)``; pure (any thread).

    Raises :class:`~podium.state.errors.StoreDamaged` for a row of an unknown table or
    one that does not parse."""
    return [(table, _parse(table, key, data)) for table, key, data in rows]


def _parse(table: str, key: str, data: bytes) -> Any:
    model = _MODELS.get(table)
    if model is None:
        raise StoreDamaged(f"the store holds rows of an unknown table {table!r}")
    try:
        return model.model_validate_json(data)
    except ValueError as exc:  # pydantic's ValidationError is one
        first = str(exc).splitlines()[0]
        raise StoreDamaged(f"stored {table} row {key!r} is unreadable: {first}") from exc


def txn_of(
    index: int, puts: dict[str, list[tuple[str, bytes]]], deletes: dict[str, list[str]]
) -> Txn:
    """The transaction a backend committed at ``index`` (its rows as the backend holds
    them), for :meth:`StateStore.apply_committed`; pure (parse on any thread)."""
    txn = Txn(index=index)
    for table, rows in puts.items():
        target = txn.puts.get(table)
        if target is None:
            raise StoreDamaged(f"commit {index} writes rows of an unknown table {table!r}")
        for key, data in rows:
            target[key] = _parse(table, key, data)
    for table, keys in deletes.items():
        if table == TXN_META:
            txn.client_update = CLIENT_UPDATE in keys
            continue
        gone = txn.deletes.get(table)
        if gone is None:
            raise StoreDamaged(f"commit {index} deletes rows of an unknown table {table!r}")
        gone.update(keys)
    return txn


class _Tables:
    """The in-memory state plus secondary indexes (immutable values, replaced on write)."""

    def __init__(self) -> None:
        self.jobs: dict[JobKey, Job] = {}
        self.versions: dict[JobKey, dict[int, JobVersion]] = {}
        self.allocs: dict[str, Allocation] = {}
        self.nodes: dict[str, Node] = {}
        self.evals: dict[str, Evaluation] = {}
        self.allocs_by_job: dict[JobKey, frozenset[str]] = {}
        self.allocs_by_node: dict[str, frozenset[str]] = {}
        self.evals_by_job: dict[JobKey, frozenset[str]] = {}
        self.usage: dict[str, tuple[int, int]] = {}
        """(cpu, memory) per node held by allocations that still use resources."""
        self.deployments: dict[str, Deployment] = {}
        self.deployments_by_job: dict[JobKey, frozenset[str]] = {}
        self.services: dict[str, ServiceRegistration] = {}
        self.services_by_name: dict[JobKey, frozenset[str]] = {}
        """(namespace, service name) -> registration ids."""
        self.services_by_alloc: dict[str, frozenset[str]] = {}
        self.variables: dict[str, EncryptedVariable] = {}
        """``namespace/path`` -> sealed variable."""
        self.namespaces: dict[str, Namespace] = {}
        self.acl: dict[str, dict[str, Any]] = {t: {} for t in ACL_TABLES}
        """Per ACL table, key -> object (see :data:`ACL_TABLES`)."""
        self.by_secret: dict[str, dict[str, str]] = {ACL_TOKENS: {}, NODE_SECRETS: {}}
        """Secret hash -> token accessor, and -> node id."""
        self.scaling_events: dict[JobKey, JobScalingEvents] = {}
        self.sched_config: SchedulerConfiguration = DEFAULT_SCHEDULER_CONFIG

    def add_usage(self, alloc: Allocation, sign: int) -> None:
        if alloc.uses_resources():
            cpu, memory = self.usage.get(alloc.node_id, (0, 0))
            self.usage[alloc.node_id] = (
                cpu + sign * alloc.resources.cpu,
                memory + sign * alloc.resources.memory,
            )

    def copy(self) -> _Tables:
        t = _Tables()
        t.jobs = dict(self.jobs)
        # version dicts are replaced, never mutated, once published
        t.versions = dict(self.versions)
        t.allocs = dict(self.allocs)
        t.nodes = dict(self.nodes)
        t.evals = dict(self.evals)
        t.allocs_by_job = dict(self.allocs_by_job)
        t.allocs_by_node = dict(self.allocs_by_node)
        t.evals_by_job = dict(self.evals_by_job)
        t.usage = dict(self.usage)
        t.deployments = dict(self.deployments)
        t.deployments_by_job = dict(self.deployments_by_job)
        t.services = dict(self.services)
        t.services_by_name = dict(self.services_by_name)
        t.services_by_alloc = dict(self.services_by_alloc)
        t.variables = dict(self.variables)
        t.namespaces = dict(self.namespaces)
        t.acl = {k: dict(v) for k, v in self.acl.items()}
        t.by_secret = {k: dict(v) for k, v in self.by_secret.items()}
        t.scaling_events = dict(self.scaling_events)
        t.sched_config = self.sched_config
        return t


def _index_update(
    index: dict[Any, frozenset[str]], key: Any, add: str | None = None, remove: str | None = None
) -> None:
    """Replace one immutable secondary-index entry (copy-on-write)."""
    cur = index.get(key, frozenset())
    new = set(cur)
    if add is not None:
        new.add(add)
    if remove is not None:
        new.discard(remove)
    if new:
        index[key] = frozenset(new)
    else:
        index.pop(key, None)


class Snapshot:
    """A consistent, read-only view of the state at one index.

    Implements :class:`podium.scheduler.snapshot.Snapshot` (structurally).
    """

    def __init__(self, tables: _Tables, index: int) -> None:
        self._t = tables
        self._index = index

    @property
    def index(self) -> int:
        return self._index

    # -- jobs
    def job(self, job_id: str, namespace: str = "default") -> Job | None:
        return self._t.jobs.get(_job_key(namespace, job_id))

    def jobs(self, namespace: str | None = None) -> list[Job]:
        """Every job, or only ``namespace``'s."""
        if namespace is None:
            return list(self._t.jobs.values())
        return [j for j in self._t.jobs.values() if j.namespace == namespace]

    # -- namespaces
    def namespace(self, name: str) -> Namespace | None:
        """A namespace; ``default`` exists even when it was never written."""
        found = self._t.namespaces.get(name)
        if found is None and name == DEFAULT_NAMESPACE:
            return Namespace(name=DEFAULT_NAMESPACE, description="the default namespace")
        return found

    def namespaces(self) -> list[Namespace]:
        """Every namespace by name, ``default`` included."""
        names = set(self._t.namespaces) | {DEFAULT_NAMESPACE}
        return [ns for ns in map(self.namespace, sorted(names)) if ns is not None]

    def job_versions(self, job_id: str, namespace: str = "default") -> list[JobVersion]:
        versions = self._t.versions.get(_job_key(namespace, job_id), {})
        return [versions[v] for v in sorted(versions, reverse=True)]

    def job_version(
        self, job_id: str, version: int, namespace: str = "default"
    ) -> JobVersion | None:
        return self._t.versions.get(_job_key(namespace, job_id), {}).get(version)

    def job_spec(self, job_id: str, version: int, namespace: str = "default") -> JobSpec | None:
        v = self._t.versions.get(_job_key(namespace, job_id), {}).get(version)
        return v.spec if v is not None else None

    # -- nodes
    def nodes(self) -> list[Node]:
        return list(self._t.nodes.values())

    def node(self, node_id: str) -> Node | None:
        return self._t.nodes.get(node_id)

    # -- allocations
    def alloc(self, alloc_id: str) -> Allocation | None:
        return self._t.allocs.get(alloc_id)

    def allocs(self) -> list[Allocation]:
        return list(self._t.allocs.values())

    def allocs_by_job(self, job_id: str, namespace: str = "default") -> list[Allocation]:
        ids = self._t.allocs_by_job.get(_job_key(namespace, job_id), frozenset())
        return [self._t.allocs[i] for i in ids]

    def alloc_ids_by_job(self, job_id: str, namespace: str = "default") -> frozenset[str]:
        """The job's allocation ids: a new set object whenever any of its allocations is
        written, so a reader may cache what it derived from them by the set's identity."""
        return self._t.allocs_by_job.get(_job_key(namespace, job_id), frozenset())

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        ids = self._t.allocs_by_node.get(node_id, frozenset())
        return [self._t.allocs[i] for i in ids]

    def node_usage(self, node_id: str) -> tuple[int, int]:
        """(cpu, memory) held on the node by allocations whose tasks have not exited."""
        return self._t.usage.get(node_id, (0, 0))

    # -- evaluations
    def evaluation(self, eval_id: str) -> Evaluation | None:
        return self._t.evals.get(eval_id)

    def evaluations(self) -> list[Evaluation]:
        return list(self._t.evals.values())

    def evals_by_job(self, job_id: str, namespace: str = "default") -> list[Evaluation]:
        ids = self._t.evals_by_job.get(_job_key(namespace, job_id), frozenset())
        return [self._t.evals[i] for i in ids]

    # -- deployments
    def deployment(self, deployment_id: str) -> Deployment | None:
        return self._t.deployments.get(deployment_id)

    def deployments(self) -> list[Deployment]:
        return list(self._t.deployments.values())

    def deployments_by_job(self, job_id: str, namespace: str = "default") -> list[Deployment]:
        """Newest first."""
        ids = self._t.deployments_by_job.get(_job_key(namespace, job_id), frozenset())
        found = [self._t.deployments[i] for i in ids]
        found.sort(key=lambda d: (d.create_index, d.job_version, d.id), reverse=True)
        return found

    def latest_deployment(self, job_id: str, namespace: str = "default") -> Deployment | None:
        found = self.deployments_by_job(job_id, namespace)
        return found[0] if found else None

    # -- service catalog
    def service_registrations(self) -> list[ServiceRegistration]:
        return list(self._t.services.values())

    def services_by_name(self, name: str, namespace: str = "default") -> list[ServiceRegistration]:
        ids = self._t.services_by_name.get((namespace, name), frozenset())
        return sorted((self._t.services[i] for i in ids), key=lambda r: r.id)

    def services_by_alloc(self, alloc_id: str) -> list[ServiceRegistration]:
        ids = self._t.services_by_alloc.get(alloc_id, frozenset())
        return sorted((self._t.services[i] for i in ids), key=lambda r: r.id)

    # -- variables (sealed; podium.server opens them)
    def variable(self, path: str, namespace: str = "default") -> EncryptedVariable | None:
        return self._t.variables.get(f"{namespace}/{path}")

    def variables(self, prefix: str = "", namespace: str = "default") -> list[EncryptedVariable]:
        found = [
            v
            for v in self._t.variables.values()
            if v.namespace == namespace and v.path.startswith(prefix)
        ]
        return sorted(found, key=lambda v: v.path)

    # -- trust (ACL tokens and policies, node secrets)
    def acl_token(self, accessor_id: str) -> StoredToken | None:
        found: StoredToken | None = self._t.acl[ACL_TOKENS].get(accessor_id)
        return found

    def acl_token_by_secret(self, secret_hash: str) -> StoredToken | None:
        accessor = self._t.by_secret[ACL_TOKENS].get(secret_hash)
        return self.acl_token(accessor) if accessor is not None else None

    def acl_tokens(self) -> list[StoredToken]:
        return sorted(self._t.acl[ACL_TOKENS].values(), key=lambda t: (t.create_index, t.name))

    def acl_policy(self, name: str) -> ACLPolicy | None:
        found: ACLPolicy | None = self._t.acl[ACL_POLICIES].get(name)
        return found

    def acl_policies(self) -> list[ACLPolicy]:
        return sorted(self._t.acl[ACL_POLICIES].values(), key=lambda p: p.name)

    def acl_bootstrap(self) -> ACLBootstrap | None:
        found: ACLBootstrap | None = self._t.acl[ACL_META].get("bootstrap")
        return found

    def node_secret(self, node_id: str) -> NodeSecret | None:
        found: NodeSecret | None = self._t.acl[NODE_SECRETS].get(node_id)
        return found

    def node_by_secret(self, secret_hash: str) -> str | None:
        return self._t.by_secret[NODE_SECRETS].get(secret_hash)

    # -- scaling events (docs/autoscaling.md)
    def scaling_events(self, job_id: str, namespace: str = "default") -> JobScalingEvents | None:
        return self._t.scaling_events.get(_job_key(namespace, job_id))

    def scheduler_config(self) -> SchedulerConfiguration:
        """The cluster's scheduler configuration (Nomad's defaults until one is stored)."""
        return self._t.sched_config


class StateStore(Snapshot):
    """The live store.  Reading it directly reads the latest state."""

    def __init__(
        self, backend: Backend | None = None, *, event_buffer: int = DEFAULT_CAPACITY
    ) -> None:
        super().__init__(_Tables(), 0)
        self._backend: Backend = backend or NullBackend()
        self._table_index: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._node_alloc_index: dict[str, int] = {}
        self._alloc_sync_index: dict[str, int] = {}
        """Per allocation, the index of its last write that its agent must hear of: every
        write but the agent's own reports (delta syncs answer what changed past an index)."""
        self._node_removal_index: dict[str, int] = {}
        """Per node, the index at which an allocation last left it (deleted, or moved to
        another node): a delta sync past it need not list the ids of what stayed."""
        self._node_changes: dict[str, list[tuple[int, str]]] = {}
        """Per node, (sync index, allocation id) in index order, one entry per write an
        agent must hear of (stale and departed entries are skipped on reading and
        dropped when the log outgrows the node's allocations twice over): a delta sync
        finds what changed past ``since`` without looking at every allocation on the
        node (200 of them at 1,000,000 placements on 5,000 nodes, on every sync)."""
        self._job_counts: dict[JobKey, dict[str, dict[str, int]]] = {}
        """Per job, its allocations by group and client state (pending ones already told
        to stop left out), kept up to date by each write: a job list reads it instead
        of counting every allocation of every job."""
        self._loaded_index = 0
        self._changed = asyncio.Event()
        self._node_changed: dict[str, asyncio.Event] = {}
        """Per-node events for agents' blocking queries: a commit wakes only the agents
        whose allocations it changed (5,000 agents, not 5,000 wake-ups per commit)."""
        self._closing = False
        self.commit_observer: Callable[[float, float], None] | None = None
        """Called after each commit of this server's with the seconds the whole commit
        took and those of the backend's durable write (SQLite's fsync, etcd's
        transaction): podium.server.metrics' histograms.  None: nothing is timed."""
        self._load()
        self.events = EventBuffer(event_buffer, self._index)
        """The latest commits' events (podium.state.events): the event stream's source."""

    # -- bookkeeping
    @property
    def backend(self) -> Backend:
        return self._backend

    def table_index(self, *tables: str) -> int:
        """The last index at which any of ``tables`` changed."""
        return max((self._table_index[t] for t in tables), default=self._index)

    def node_alloc_index(self, node_id: str) -> int:
        """The last index at which an allocation on ``node_id`` changed (after a restart,
        at least the loaded index: a node whose allocations were all deleted before it
        has no stamp left, yet its agent must hear that they are gone)."""
        return self._node_alloc_index.get(node_id, self._loaded_index)

    def node_removal_index(self, node_id: str) -> int:
        """The last index at which an allocation left ``node_id`` (after a restart, at
        least the loaded index: deletions before it left no stamp)."""
        return max(self._node_removal_index.get(node_id, 0), self._loaded_index)

    def alloc_ids_by_node(self, node_id: str) -> frozenset[str]:
        return self._t.allocs_by_node.get(node_id, frozenset())

    def changed_alloc_ids(self, node_id: str, since: int) -> list[str]:
        """The ids of ``node_id``'s allocations whose sync index is past ``since``."""
        log = self._node_changes.get(node_id)
        if not log:
            return []
        on_node = self.alloc_ids_by_node(node_id)
        sync_index = self._alloc_sync_index
        out = []
        for at, alloc_id in log[bisect_right(log, (since, "\uffff")) :]:
            if alloc_id in on_node and sync_index.get(alloc_id) == at:
                out.append(alloc_id)
        return out

    def job_alloc_counts(
        self, job_id: str, namespace: str = "default"
    ) -> dict[str, dict[str, int]]:
        """The job's allocations by group, then client state (pending allocations told to
        stop are not counted: they never ran and never will)."""
        counts = self._job_counts.get(_job_key(namespace, job_id), {})
        return {group: dict(by_status) for group, by_status in counts.items()}

    def _count(self, alloc: Allocation, delta: int) -> None:
        if (
            alloc.client_status == ClientStatus.PENDING
            and alloc.desired_status == DesiredStatus.STOP
        ):
            return
        key = _job_key(alloc.namespace, alloc.job_id)
        by_status = self._job_counts.setdefault(key, {}).setdefault(alloc.group, {})
        status = alloc.client_status.value
        n = by_status.get(status, 0) + delta
        if n:
            by_status[status] = n
        else:
            del by_status[status]
            if not by_status:
                groups = self._job_counts[key]
                del groups[alloc.group]
                if not groups:
                    del self._job_counts[key]

    def _log_change(self, node_id: str, index: int, alloc_id: str) -> None:
        log = self._node_changes.get(node_id)
        if log is None:
            log = self._node_changes[node_id] = []
        log.append((index, alloc_id))

    def _trim_change_log(self, node_id: str) -> None:
        """Once the node's allocation set is up to date: keep one entry per allocation
        on it when the log has grown past twice their number."""
        log = self._node_changes.get(node_id)
        live = self.alloc_ids_by_node(node_id)
        if log is None or len(log) <= 64 or len(log) <= 2 * len(live):
            return
        sync_index = self._alloc_sync_index
        log[:] = sorted((sync_index[a], a) for a in live if a in sync_index)

    def alloc_sync_index(self, alloc_id: str) -> int:
        """The index of the last write of ``alloc_id`` other than its agent's own reports
        (after a restart: its stored ``modify_index``, which may count a report too)."""
        return self._alloc_sync_index.get(alloc_id, 0)

    def snapshot(self) -> Snapshot:
        """A copy of the tables' top level: stays as it is while later commits land."""
        return Snapshot(self._t.copy(), self._index)

    def view(self) -> Snapshot:
        """The live tables as a snapshot, without copying them: consistent only until the
        next commit, so for synchronous work that takes it and is done before anything
        else on the loop can commit (the scheduler's run and its plan's check).  A copy
        of the top-level dicts grows with the store: at 1,000,000 allocations, ~20 ms on
        every evaluation."""
        return Snapshot(self._t, self._index)

    def txn(self) -> Txn:
        return Txn(index=self._index + 1)

    @property
    def closing(self) -> bool:
        """The store is closing: blocking queries and streams should end."""
        return self._closing

    def close(self) -> None:
        self._backend.close()

    def release_waiters(self) -> None:
        """Answer every blocking query now (the server is shutting down)."""
        self._closing = True
        self._changed.set()
        for event in self._node_changed.values():
            event.set()

    # -- loading
    def _load(self) -> None:
        index, rows = self._backend.load()
        self._install(index, parse_rows(rows))

    def _install(self, index: int, objs: Iterable[tuple[str, Any]]) -> None:
        """Fill the (empty) tables with ``objs``, the state at ``index``."""
        self._index = index
        self._loaded_index = index
        for table, obj in objs:
            self._apply_put(table, obj)
            idx = getattr(obj, "modify_index", 0)
            self._table_index[table] = max(self._table_index[table], idx)
            if table == ALLOCS:
                self._alloc_sync_index[obj.id] = idx
                self._node_alloc_index[obj.node_id] = max(
                    self._node_alloc_index.get(obj.node_id, 0), idx
                )
                self._node_changes.setdefault(obj.node_id, []).append((idx, obj.id))
                self._count(obj, 1)
        for log in self._node_changes.values():
            log.sort()
        self._rebuild_indexes()
        # Deletions leave no stamp behind, so after a restart every table counts as
        # changed at the last index: a blocking query from an older index answers at once.
        for table in TABLES:
            self._table_index[table] = index
        for node_id in self._node_alloc_index:
            self._node_alloc_index[node_id] = index

    def _rebuild_indexes(self) -> None:
        by_job: dict[JobKey, set[str]] = {}
        by_node: dict[str, set[str]] = {}
        self._t.usage = {}
        for a in self._t.allocs.values():
            self._t.add_usage(a, 1)
            by_job.setdefault(_job_key(a.namespace, a.job_id), set()).add(a.id)
            by_node.setdefault(a.node_id, set()).add(a.id)
        evals: dict[JobKey, set[str]] = {}
        for e in self._t.evals.values():
            evals.setdefault(_job_key(e.namespace, e.job_id), set()).add(e.id)
        self._t.allocs_by_job = {k: frozenset(v) for k, v in by_job.items()}
        self._t.allocs_by_node = {k: frozenset(v) for k, v in by_node.items()}
        self._t.evals_by_job = {k: frozenset(v) for k, v in evals.items()}

    def _apply_put(self, table: str, obj: Any) -> None:
        t = self._t
        if table == JOBS:
            t.jobs[_job_key(obj.namespace, obj.id)] = obj
        elif table == VERSIONS:
            key = _job_key(obj.namespace, obj.job_id)
            versions = dict(t.versions.get(key, {}))
            versions[obj.version] = obj
            t.versions[key] = versions
        elif table == ALLOCS:
            t.allocs[obj.id] = compact_alloc(obj)
        elif table == NODES:
            t.nodes[obj.id] = obj
        elif table == EVALS:
            t.evals[obj.id] = obj
        elif table == DEPLOYMENTS:
            if obj.id not in t.deployments:
                _index_update(t.deployments_by_job, _job_key(obj.namespace, obj.job_id), add=obj.id)
            t.deployments[obj.id] = obj
        elif table == SERVICES:
            old = t.services.get(obj.id)
            if old is not None:
                self._unindex_service(old)
            t.services[obj.id] = obj
            _index_update(t.services_by_name, (obj.namespace, obj.service_name), add=obj.id)
            _index_update(t.services_by_alloc, obj.alloc_id, add=obj.id)
        elif table == VARIABLES:
            t.variables[_key_str(VARIABLES, obj)] = obj
        elif table == NAMESPACES:
            t.namespaces[obj.name] = obj
        elif table == SCALING_EVENTS:
            t.scaling_events[_job_key(obj.namespace, obj.job_id)] = obj
        elif table == SCHED_CONFIG:
            t.sched_config = obj
        elif table in ACL_TABLES:
            acl_key = _key_str(table, obj)
            self._acl_delete(table, acl_key)
            t.acl[table][acl_key] = obj
            if table in t.by_secret:
                t.by_secret[table][obj.secret_hash] = acl_key

    def _acl_delete(self, table: str, key: str) -> None:
        old = self._t.acl[table].pop(key, None)
        if old is not None and table in self._t.by_secret:
            self._t.by_secret[table].pop(old.secret_hash, None)

    def _unindex_service(self, reg: ServiceRegistration) -> None:
        _index_update(self._t.services_by_name, (reg.namespace, reg.service_name), remove=reg.id)
        _index_update(self._t.services_by_alloc, reg.alloc_id, remove=reg.id)

    # -- writing
    def commit(self, txn: Txn) -> int:
        """Make ``txn`` durable, apply it, wake watchers; returns the new index.

        Raises what the backend raises (a :class:`~podium.state.errors.StoreError` for a
        failed write), in which case nothing was applied: the backend commits first, and
        memory changes only after it succeeded, so the tables never hold what the disk
        does not.
        """
        if txn.empty():
            return self._index
        started = time.perf_counter()
        if txn.index != self._index + 1:
            raise RuntimeError(f"stale transaction: built at {txn.index}, store at {self._index}")
        puts = {
            table: [(key, obj.model_dump_json().encode()) for key, obj in objs.items()]
            for table, objs in txn.puts.items()
            if objs
        }
        deletes = {table: sorted(keys) for table, keys in txn.deletes.items() if keys}
        if txn.client_update:
            deletes[TXN_META] = [CLIENT_UPDATE]
        observe = self.commit_observer
        if observe is None:
            self._backend.commit(txn.index, puts, deletes)
            self._publish(txn)
            return txn.index
        written = time.perf_counter()
        self._backend.commit(txn.index, puts, deletes)
        wrote = time.perf_counter() - written
        self._publish(txn)
        observe(time.perf_counter() - started, wrote)
        return txn.index

    def apply_committed(self, txn: Txn) -> int:
        """Apply a transaction another server committed (:func:`txn_of` of a commit read
        from the backend's log) exactly as :meth:`commit` applies its own, without writing
        it to the backend again; returns the store's index.  One already applied (this
        server's own commit, seen again in the log) is skipped.  Run on the event loop,
        like every write."""
        if txn.index <= self._index:
            return self._index
        if txn.index != self._index + 1:
            raise StoreError(
                f"commit {txn.index} cannot be applied to a store at {self._index}: "
                "the commits between are missing"
            )
        self._publish(txn)
        return txn.index

    def reset(self, index: int, objs: Iterable[tuple[str, Any]]) -> None:
        """Replace the whole state with ``objs`` (:func:`parse_rows` of the backend's rows),
        the state at ``index``, as a restart would load it, and wake every blocking query:
        for a follower whose next commit was compacted away.  Snapshots and views already
        taken keep the old tables."""
        self._t = _Tables()
        self._table_index = dict.fromkeys(TABLES, 0)
        self._node_alloc_index = {}
        self._alloc_sync_index = {}
        self._node_removal_index = {}
        self._node_changes = {}
        self._job_counts = {}
        self._install(index, objs)
        self.events.reset(index)
        self._changed.set()
        self._changed = asyncio.Event()
        events, self._node_changed = self._node_changed, {}
        for event in events.values():
            event.set()

    def _publish(self, txn: Txn) -> None:
        """Apply a committed ``txn``, bump the indexes, wake the blocking queries: what
        both a commit of this server's and one read from the log do after the backend."""
        self.events.record(txn, *self._departing(txn))
        self._apply(txn)
        self._index = txn.index
        for table in txn.tables():
            self._table_index[table] = txn.index
        self._changed.set()
        self._changed = asyncio.Event()

    def _departing(self, txn: Txn) -> tuple[dict[str, dict[str, Any]], frozenset[str]]:
        """What ``txn`` deletes, as it was before (a delete's event carries the object's
        last state), and the nodes it writes that were not known (``NodeRegistered``)."""
        t = self._t
        gone: dict[str, dict[str, Any]] = {}
        tables: dict[str, Any] = {
            ALLOCS: t.allocs,
            NODES: t.nodes,
            EVALS: t.evals,
            DEPLOYMENTS: t.deployments,
            SERVICES: t.services,
            VARIABLES: t.variables,
        }
        for table, rows in tables.items():
            keys = txn.deletes[table]
            if keys:
                gone[table] = {k: rows[k] for k in keys if k in rows}
        if txn.deletes[JOBS]:
            jobs = gone[JOBS] = {}
            for key in txn.deletes[JOBS]:
                ns, job_id = key.split("/", 1)
                job = t.jobs.get(_job_key(ns, job_id))
                if job is not None:
                    jobs[key] = job
        puts = txn.puts[NODES]
        new_nodes = frozenset(k for k in puts if k not in t.nodes) if puts else frozenset()
        return gone, new_nodes

    def _apply(self, txn: Txn) -> None:
        t = self._t
        job_allocs: dict[JobKey, set[str]] = {}
        node_allocs: dict[str, set[str]] = {}
        job_allocs_del: dict[JobKey, set[str]] = {}
        node_allocs_del: dict[str, set[str]] = {}
        for alloc in txn.puts[ALLOCS].values():
            compact_alloc(alloc)
            old = t.allocs.get(alloc.id)
            if old is not None:
                t.add_usage(old, -1)
                self._count(old, -1)
                if old.node_id != alloc.node_id:
                    node_allocs_del.setdefault(old.node_id, set()).add(alloc.id)
                    self._node_removal_index[old.node_id] = txn.index
            t.add_usage(alloc, 1)
            self._count(alloc, 1)
            t.allocs[alloc.id] = alloc
            job_allocs.setdefault(_job_key(alloc.namespace, alloc.job_id), set()).add(alloc.id)
            node_allocs.setdefault(alloc.node_id, set()).add(alloc.id)
            if not txn.client_update or old is None or old.node_id != alloc.node_id:
                self._alloc_sync_index[alloc.id] = txn.index
                self._node_alloc_index[alloc.node_id] = txn.index
                self._log_change(alloc.node_id, txn.index, alloc.id)
                self._wake_node(alloc.node_id)
        for alloc_id in txn.deletes[ALLOCS]:
            old = t.allocs.pop(alloc_id, None)
            self._alloc_sync_index.pop(alloc_id, None)
            if old is not None:
                t.add_usage(old, -1)
                self._count(old, -1)
                job_allocs_del.setdefault(_job_key(old.namespace, old.job_id), set()).add(old.id)
                node_allocs_del.setdefault(old.node_id, set()).add(old.id)
                self._node_alloc_index[old.node_id] = txn.index
                self._node_removal_index[old.node_id] = txn.index
                self._wake_node(old.node_id)
        for key in job_allocs.keys() | job_allocs_del.keys():
            cur = t.allocs_by_job.get(key, frozenset())
            new = (cur | job_allocs.get(key, set())) - job_allocs_del.get(key, set())
            if new:
                t.allocs_by_job[key] = frozenset(new)
            else:
                t.allocs_by_job.pop(key, None)
        for node_id in node_allocs.keys() | node_allocs_del.keys():
            cur = t.allocs_by_node.get(node_id, frozenset())
            new = (cur | node_allocs.get(node_id, set())) - node_allocs_del.get(node_id, set())
            if new:
                t.allocs_by_node[node_id] = frozenset(new)
            else:
                t.allocs_by_node.pop(node_id, None)
                self._node_changes.pop(node_id, None)
            self._trim_change_log(node_id)

        for table in (JOBS, VERSIONS, NODES):
            for obj in txn.puts[table].values():
                self._apply_put(table, obj)
        for job_str in txn.deletes[JOBS]:
            ns, job_id = job_str.split("/", 1)
            t.jobs.pop(_job_key(ns, job_id), None)
        for version_str in txn.deletes[VERSIONS]:
            ns, rest = version_str.split("/", 1)
            job_id, version = rest.rsplit("/", 1)
            jk = _job_key(ns, job_id)
            versions = dict(t.versions.get(jk, {}))
            versions.pop(int(version), None)
            if versions:
                t.versions[jk] = versions
            else:
                t.versions.pop(jk, None)
        for node_id in txn.deletes[NODES]:
            t.nodes.pop(node_id, None)
        for table in (DEPLOYMENTS, SERVICES, VARIABLES, NAMESPACES, SCHED_CONFIG):
            for obj in txn.puts[table].values():
                self._apply_put(table, obj)
        if txn.deletes[SCHED_CONFIG]:
            t.sched_config = DEFAULT_SCHEDULER_CONFIG
        for name in txn.deletes[NAMESPACES]:
            t.namespaces.pop(name, None)
        for dep_id in txn.deletes[DEPLOYMENTS]:
            dep = t.deployments.pop(dep_id, None)
            if dep is not None:
                _index_update(
                    t.deployments_by_job, _job_key(dep.namespace, dep.job_id), remove=dep_id
                )
        for reg_id in txn.deletes[SERVICES]:
            reg = t.services.pop(reg_id, None)
            if reg is not None:
                self._unindex_service(reg)
        for var_key in txn.deletes[VARIABLES]:
            t.variables.pop(var_key, None)
        for scaling_key in txn.deletes[SCALING_EVENTS]:
            ns, job_id = scaling_key.split("/", 1)
            t.scaling_events.pop(_job_key(ns, job_id), None)
        for obj in txn.puts[SCALING_EVENTS].values():
            self._apply_put(SCALING_EVENTS, obj)
        for table in ACL_TABLES:
            for acl_key in txn.deletes[table]:
                self._acl_delete(table, acl_key)
            for obj in txn.puts[table].values():
                self._apply_put(table, obj)

        eval_add: dict[JobKey, set[str]] = {}
        eval_del: dict[JobKey, set[str]] = {}
        for ev in txn.puts[EVALS].values():
            t.evals[ev.id] = ev
            eval_add.setdefault(_job_key(ev.namespace, ev.job_id), set()).add(ev.id)
        for eval_id in txn.deletes[EVALS]:
            old_ev = t.evals.pop(eval_id, None)
            if old_ev is not None:
                eval_del.setdefault(_job_key(old_ev.namespace, old_ev.job_id), set()).add(eval_id)
        for key in eval_add.keys() | eval_del.keys():
            cur = t.evals_by_job.get(key, frozenset())
            new = (cur | eval_add.get(key, set())) - eval_del.get(key, set())
            if new:
                t.evals_by_job[key] = frozenset(new)
            else:
                t.evals_by_job.pop(key, None)

    # -- watching
    def _wake_node(self, node_id: str) -> None:
        event = self._node_changed.pop(node_id, None)
        if event is not None:
            event.set()

    async def wait_for(
        self,
        min_index: int,
        timeout: float,
        *,
        tables: Iterable[str] = TABLES,
        node_allocs: str | None = None,
    ) -> int:
        """Wait until ``tables`` (or one node's allocations) change past ``min_index``.

        Returns the relevant index (which may still be ``<= min_index`` on timeout).
        """
        tables = tuple(tables)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def current() -> int:
            if node_allocs is not None:
                return self.node_alloc_index(node_allocs)
            return self.table_index(*tables)

        while True:
            idx = current()
            if idx > min_index:
                return idx
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                return idx
            if node_allocs is not None:
                event = self._node_changed.get(node_allocs)
                if event is None:
                    event = self._node_changed[node_allocs] = asyncio.Event()
            else:
                event = self._changed
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races with the event firing.
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                return current()
