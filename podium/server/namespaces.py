"""Namespaces on the server: which namespace a registration lands in, what a namespace's
jobs ask for and hold, quotas as admission, and creating and deleting namespaces.

A quota is checked when a job's spec is registered (a new job, an update, a scale, a
revert: all go through :meth:`podium.server.core.Server.register_job`, which calls
:func:`admit` before it builds its transaction, so a refusal stores nothing).  What is
counted is what the namespace's jobs *ask for*, not what happens to run: for every job
that is not stopped, each group's ``count`` times the group's resources (the sum of its
tasks'), and ``count`` instances.  A system job asks for one instance per node that is
ready and eligible now (an upper bound: its constraints are not evaluated); nodes that
join later are not refused, so a system job can go past a quota that way, and the next
registration in that namespace that asks for more is refused.  A registration that asks
for no more than the job already did is always admitted, so an over-quota namespace
can always be scaled down.
"""

from __future__ import annotations

from dataclasses import dataclass

from podium.errors import Conflict, NotFound
from podium.models import Eligibility, Job, JobSpec, NodeStatus
from podium.models.namespace import (
    ALL_NAMESPACES,
    DEFAULT_NAMESPACE,
    Namespace,
    NamespaceInfo,
    Quota,
    Usage,
    check_namespace,
)
from podium.server import scaling_log
from podium.state import Snapshot, StateStore

_UNITS = {"cpu": "MHz", "memory": "MB", "count": "instances"}


class QuotaExceeded(Conflict):
    """A registration would take a namespace past one of its quotas (HTTP 409)."""


class NamespaceMissing(NotFound):
    """A write names a namespace that does not exist (HTTP 404)."""


def resolve_spec_namespace(spec: JobSpec, requested: str | None) -> tuple[str, JobSpec]:
    """The namespace a registration of ``spec`` lands in, and the spec as stored (without
    its ``namespace:``: the job carries it).

    The request's namespace (``?namespace=``, the CLI's ``-n``/``PODIUM_NAMESPACE``)
    applies to a file that names none; a file that names one lands there when the
    request names none or the same one; a file and a request that name different
    namespaces are refused (a ValueError, HTTP 400): silently moving a job, either way,
    would run it where its author did not look."""
    if requested is not None:
        check_namespace(requested, "the request's namespace")
    named = spec.namespace
    if named is not None and requested is not None and named != requested:
        raise ValueError(
            f"job {spec.job}: the job file says namespace {named!r} but the request names "
            f"namespace {requested!r} (-n/--namespace or PODIUM_NAMESPACE): make them agree, "
            "or leave namespace out of the file"
        )
    namespace = named or requested or DEFAULT_NAMESPACE
    if named is not None:
        spec = spec.model_copy(update={"namespace": None})
    return namespace, spec


def check_request_namespace(namespace: str, *, many: bool = False) -> str:
    """A request's ``namespace`` parameter, checked: ``*`` only where ``many``."""
    if namespace == ALL_NAMESPACES:
        if many:
            return namespace
        raise ValueError(
            "namespace '*' means every namespace and is for listings only: name the "
            "namespace of this object (-n NAME)"
        )
    return check_namespace(namespace, "the request's namespace")


def _eligible_nodes(store: Snapshot) -> int:
    return sum(
        1
        for n in store.nodes()
        if n.status == NodeStatus.READY and n.eligibility == Eligibility.ELIGIBLE
    )


def spec_ask(spec: JobSpec, eligible_nodes: int) -> Usage:
    """What one job's spec asks for (see the module's docstring for system jobs)."""
    cpu = memory = count = 0
    for group in spec.groups.values():
        n = eligible_nodes if spec.type.value == "system" else group.count
        cpu += n * sum(t.resources.cpu for t in group.tasks.values())
        memory += n * sum(t.resources.memory for t in group.tasks.values())
        count += n
    return Usage(cpu=cpu, memory=memory, count=count)


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(cpu=a.cpu + b.cpu, memory=a.memory + b.memory, count=a.count + b.count)


def desired(store: Snapshot, namespace: str, *, without: str | None = None) -> Usage:
    """What ``namespace``'s jobs that are not stopped ask for (leaving out job ``without``)."""
    nodes = _eligible_nodes(store)
    total = Usage()
    for job in store.jobs(namespace):
        if not job.stop and job.id != without and not job.template():
            total = _add(total, spec_ask(job.spec, nodes))
    return total


def usage(store: Snapshot, namespace: str) -> Usage:
    """What ``namespace``'s live allocations (neither stopped nor finished) hold."""
    total = Usage()
    for alloc in store.allocs():
        if alloc.namespace == namespace and not alloc.terminal():
            total.cpu += alloc.resources.cpu
            total.memory += alloc.resources.memory
            total.count += 1
    return total


def _figure(key: str, value: int) -> str:
    return f"{value:,} {_UNITS[key]}"


def require_namespace(store: Snapshot, namespace: str) -> Namespace:
    found = store.namespace(namespace)
    if found is None:
        raise NamespaceMissing(
            f"namespace {namespace!r} does not exist: create it with "
            f"`podium namespace apply {namespace}`"
        )
    return found


def admit(store: Snapshot, namespace: str, spec: JobSpec, current: Job | None) -> None:
    """Refuse (QuotaExceeded) registering ``spec`` over ``current`` in ``namespace``
    when it asks for more than the job did and the namespace's total would pass a quota;
    refuse (NamespaceMissing) a namespace that does not exist.  Reads only."""
    ns = require_namespace(store, namespace)
    quota = ns.quota
    if quota == Quota() or spec.periodic is not None or spec.parameterized is not None:
        return  # a template is never placed: each of its children is admitted as it comes
    nodes = _eligible_nodes(store)
    new = spec_ask(spec, nodes)
    old = (
        spec_ask(current.spec, nodes)
        if current is not None and not current.stop and not current.template()
        else Usage()
    )
    others = desired(store, namespace, without=spec.job)
    for key in ("cpu", "memory", "count"):
        limit = getattr(quota, key)
        if limit is None:
            continue
        more = getattr(new, key) - getattr(old, key)
        if more <= 0 or getattr(others, key) + getattr(new, key) <= limit:
            continue
        left = max(0, limit - getattr(others, key) - getattr(old, key))
        raise QuotaExceeded(
            f"namespace {namespace} quota {key}: job {spec.job} asks {_figure(key, more)} "
            f"more; {_figure(key, left)} of {_figure(key, limit)} left "
            f"(`podium namespace info {namespace}` shows what its jobs ask for)"
        )


@dataclass
class Namespaces:
    """Creating, changing, reading and deleting namespaces (one transaction each)."""

    store: StateStore

    def info(self, name: str) -> NamespaceInfo:
        ns = self.store.namespace(check_namespace(name))
        if ns is None:
            raise NotFound(f"namespace {name!r} not found")
        return self._info(ns)

    def _info(self, ns: Namespace) -> NamespaceInfo:
        live = sum(1 for j in self.store.jobs(ns.name) if not j.stop)
        return NamespaceInfo(
            **ns.model_dump(),
            usage=usage(self.store, ns.name),
            desired=desired(self.store, ns.name),
            jobs=live,
        )

    def list(self, names: set[str] | None = None) -> list[NamespaceInfo]:
        """Every namespace (only those in ``names`` when given: the ACL filter's hook)."""
        return [
            self._info(ns) for ns in self.store.namespaces() if names is None or ns.name in names
        ]

    def apply(self, name: str, description: str | None, quota: Quota | None) -> NamespaceInfo:
        """Create ``name`` or change it; what is not given (None) stays as it was."""
        store = self.store
        current = store.namespace(check_namespace(name))
        txn = store.txn()
        base = current or Namespace(name=name, create_index=txn.index)
        updated = base.model_copy(
            update={
                "description": base.description if description is None else description,
                "quota": base.quota if quota is None else quota,
                "modify_index": txn.index,
            }
        )
        Namespace.model_validate(updated.model_dump())  # the description's checks
        if current is None or updated != current:
            txn.put_namespace(updated)
            store.commit(txn)
        return self.info(name)

    def delete(self, name: str) -> int:
        """Delete ``name``; refused (Conflict) while it holds jobs that are not stopped,
        allocations still running or variables.  Its stopped jobs are purged with it."""
        store = self.store
        check_namespace(name)
        if name == DEFAULT_NAMESPACE:
            raise ValueError("namespace 'default' always exists and cannot be deleted")
        if store.namespace(name) is None:
            raise NotFound(f"namespace {name!r} not found")
        jobs = store.jobs(name)
        running = sorted(j.id for j in jobs if not j.stop)
        live = [a for a in store.allocs() if a.namespace == name and not a.client_terminal()]
        variables = store.variables("", name)
        left = []
        if running:
            left.append(f"{len(running)} job(s) not stopped ({_some(running)})")
        if live:
            left.append(f"{len(live)} allocation(s) still running or stopping")
        if variables:
            left.append(f"{len(variables)} variable(s) ({_some([v.path for v in variables])})")
        if left:
            raise Conflict(
                f"namespace {name} still holds " + "; ".join(left) + ": stop its jobs "
                f"(`podium job stop -n {name} JOB`) and delete its variables first"
            )
        txn = store.txn()
        for job in jobs:
            versions = [v.version for v in store.job_versions(job.id, name)]
            txn.delete_job(name, job.id, versions)
            scaling_log.forget(store, txn, name, job.id)
        txn.delete_namespace(name)
        return store.commit(txn)


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (", …" if len(names) > 5 else "")


def many_namespaces(namespace: str) -> str | None:
    """A listing's ``namespace`` parameter: None for ``*`` (every namespace), else the
    name, checked.  Listings answer objects that each carry their ``namespace``, so an
    access check can filter a ``*`` answer item by item."""
    if namespace == ALL_NAMESPACES:
        return None
    return check_request_namespace(namespace)
