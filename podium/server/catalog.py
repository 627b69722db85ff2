"""The service catalog: which running instances serve which service, where, and how healthy.

Registrations (:class:`~podium.models.ServiceRegistration`, one per allocation and
service name) are kept by the server from what agents report: the allocation's
address and ports, and its check results.  Every function here adds to a store
transaction that the caller commits, so the catalog changes in the same write
as the allocation it follows:

- an allocation reported ``running`` (and still wanted) is registered, or its
  registration refreshed when its health, tags or port changed;
- an allocation that is stopped (``desired_status: stop``), finished, lost, on a
  node that went down, or of a job that was stopped, leaves the catalog in the
  very transaction that says so.  Its agent only learns of the stop from that
  commit, so nobody is sent to an instance on its way out.

Writes happen only when a registration changes, so a steady stream of reports
does not wake ``/v1/service`` watchers for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from podium.models import (
    Allocation,
    CheckResult,
    CheckStatus,
    ClientStatus,
    DesiredStatus,
    Group,
    NodeStatus,
    ServiceRegistration,
    ServiceSummary,
    TaskStateName,
    registration_id,
)
from podium.state import Snapshot, Txn
from podium.state.store import ALLOCS, JOBS, NODES

_WILDCARD = ("", "0.0.0.0", "::")


def sync_txn(store: Snapshot, txn: Txn) -> None:
    """Bring the catalog in line with every allocation ``txn`` writes or deletes.

    Call it just before committing a transaction that puts allocations (the plan
    applier, the drainer, agents' reports, garbage collection).
    """
    for alloc in list(txn.puts[ALLOCS].values()):
        sync_alloc(store, txn, alloc)
    for alloc_id in txn.deletes[ALLOCS]:
        deregister_alloc(store, txn, alloc_id)


def sync_alloc(store: Snapshot, txn: Txn, alloc: Allocation) -> None:
    """Register, refresh or remove ``alloc``'s services, as it is about to be written."""
    existing = store.services_by_alloc(alloc.id)
    if alloc.client_status != ClientStatus.RUNNING and not existing:
        return  # the common case of a placement, a pending or a finished instance
    group = _group(store, alloc) if _serving(store, txn, alloc) else None
    wanted = {
        reg.id: reg for reg in (registrations(store, alloc, group) if group is not None else [])
    }
    by_id = {reg.id: reg for reg in existing}
    for rid in by_id.keys() - wanted.keys():
        txn.delete_service(rid)
    for rid, reg in wanted.items():
        prev = by_id.get(rid)
        if prev is not None and _same(prev, reg):
            continue
        txn.put_service(
            reg.model_copy(
                update={
                    "create_index": prev.create_index if prev is not None else txn.index,
                    "modify_index": txn.index,
                }
            )
        )


def deregister_alloc(store: Snapshot, txn: Txn, alloc_id: str) -> None:
    for reg in store.services_by_alloc(alloc_id):
        txn.delete_service(reg.id)


def deregister_allocs(store: Snapshot, txn: Txn, allocs: Iterable[Allocation]) -> None:
    for alloc in allocs:
        deregister_alloc(store, txn, alloc.id)


def deregister_node(store: Snapshot, txn: Txn, node_id: str) -> None:
    """The node went down: none of its instances can be vouched for any more."""
    deregister_allocs(store, txn, store.allocs_by_node(node_id))


def sync_node(store: Snapshot, txn: Txn, node_id: str) -> None:
    """The node is back (its heartbeat resumed): register what still runs there again."""
    for alloc in store.allocs_by_node(node_id):
        sync_alloc(store, txn, txn.puts[ALLOCS].get(alloc.id, alloc))


def deregister_job(store: Snapshot, txn: Txn, job_id: str, namespace: str = "default") -> None:
    """The job is being stopped or purged: its instances leave before the plan stops them."""
    deregister_allocs(store, txn, store.allocs_by_job(job_id, namespace))


# --------------------------------------------------------------------------- building


def registrations(
    store: Snapshot, alloc: Allocation, group: Group | None = None
) -> list[ServiceRegistration]:
    """What the catalog should hold for ``alloc`` (as if it were serving)."""
    if group is None:
        group = _group(store, alloc)
    if group is None:
        return []
    address = node_address(store, alloc)
    driver_health = [r for r in alloc.checks.values() if not r.service]
    running = alloc.client_status == ClientStatus.RUNNING and all(
        ts.state == TaskStateName.RUNNING or (ts.state == TaskStateName.DEAD and not ts.failed)
        for ts in alloc.task_states.values()
    )
    out = []
    for svc in group.services:
        port = alloc.ports.get(svc.port) if svc.port else None
        checks: dict[str, CheckResult] = {}
        for check in svc.checks:
            result = alloc.checks.get(check.name)
            checks[check.name] = (
                result if result is not None else CheckResult(name=check.name, service=svc.name)
            )
        for result in driver_health:
            checks[result.name] = result
        healthy = running and all(r.status == CheckStatus.PASSING for r in checks.values())
        out.append(
            ServiceRegistration(
                id=registration_id(alloc.id, svc.name),
                service_name=svc.name,
                namespace=alloc.namespace,
                job_id=alloc.job_id,
                group=alloc.group,
                alloc_id=alloc.id,
                node_id=alloc.node_id,
                address=(_host(port.host_ip) if port is not None else "") or address,
                port=port.value if port is not None else 0,
                tags=list(svc.tags),
                healthy=healthy,
                checks=checks,
            )
        )
    return out


def node_address(store: Snapshot, alloc: Allocation) -> str:
    """Where the allocation's ports are reached: the address its agent advertises.

    The agent stamps it on every port it assigns (``host_ip``); an allocation
    without ports falls back to the host of the node's advertised HTTP address.
    """
    for port in alloc.ports.values():
        host = _host(port.host_ip)
        if host:
            return host
    node = store.node(alloc.node_id)
    if node is not None and node.http_addr:
        host = _host(urlsplit(node.http_addr).hostname or "")
        if host:
            return host
    return "127.0.0.1"


def _host(value: str) -> str:
    return "" if value in _WILDCARD else value


def _serving(store: Snapshot, txn: Txn, alloc: Allocation) -> bool:
    """Whether ``alloc`` belongs in the catalog at all (as ``txn`` leaves things)."""
    if alloc.desired_status != DesiredStatus.RUN or alloc.client_status != ClientStatus.RUNNING:
        return False
    job_key = f"{alloc.namespace}/{alloc.job_id}"
    if job_key in txn.deletes[JOBS]:
        return False
    job = txn.puts[JOBS].get(job_key) or store.job(alloc.job_id, alloc.namespace)
    if job is None or job.stop:
        return False
    node = txn.puts[NODES].get(alloc.node_id) or store.node(alloc.node_id)
    return node is not None and node.status != NodeStatus.DOWN


def _group(store: Snapshot, alloc: Allocation) -> Group | None:
    spec = store.job_spec(alloc.job_id, alloc.job_version, alloc.namespace)
    if spec is None:
        job = store.job(alloc.job_id, alloc.namespace)
        spec = job.spec if job is not None else None
    return spec.groups.get(alloc.group) if spec is not None else None


_COMPARED = {"create_index", "modify_index"}


def _same(a: ServiceRegistration, b: ServiceRegistration) -> bool:
    return a.model_dump(exclude=_COMPARED) == b.model_dump(exclude=_COMPARED)


# --------------------------------------------------------------------------- reading


def instances(
    store: Snapshot, name: str, *, healthy: bool | None = None, namespace: str = "default"
) -> list[ServiceRegistration]:
    """The registrations of one service, optionally only the (un)healthy ones."""
    regs = store.services_by_name(name, namespace)
    if healthy is None:
        return regs
    return [r for r in regs if r.healthy == healthy]


def summaries(store: Snapshot, namespace: str | None = None) -> list[ServiceSummary]:
    """Every service name with its instance counts and tags, by namespace and name
    (only ``namespace``'s when given)."""
    found: dict[tuple[str, str], ServiceSummary] = {}
    tags: dict[tuple[str, str], set[str]] = {}
    for reg in store.service_registrations():
        if namespace is not None and reg.namespace != namespace:
            continue
        key = (reg.namespace, reg.service_name)
        item = found.get(key)
        if item is None:
            item = found[key] = ServiceSummary(name=reg.service_name, namespace=reg.namespace)
            tags[key] = set()
        item.instances += 1
        item.healthy += reg.healthy
        tags[key].update(reg.tags)
    for key, item in found.items():
        item.tags = sorted(tags[key])
    return [found[k] for k in sorted(found)]
