"""What must hold after a simulation, whatever the load did.

- every instance placed exactly once: one non-terminal allocation per
  (job, group, index), indexes within the group's count, and (with no
  failures injected) the count matched;
- no node over-committed: the allocations that still hold resources fit
  the node's capacity (resources minus reserved);
- no placement on an ineligible or down node, nor on a node the store
  does not know;
- with a durable store read back by a fresh backend (``etcd_reload_matches`` for the
  store on etcd): the same index and the same allocations as the server holds in memory,
  so nothing the server acknowledged is missing from the store.
"""

from __future__ import annotations

from podium.models import NodeStatus
from podium.state import ALLOCS, Backend, StateStore


def check(store: StateStore, ineligible: set[str], *, exact_counts: bool = True) -> list[str]:
    """Broken invariants, as sentences (empty: all hold)."""
    problems: list[str] = []
    nodes = {n.id: n for n in store.nodes()}
    for node in nodes.values():
        cap = node.capacity()
        cpu = memory = 0
        for a in store.allocs_by_node(node.id):
            if a.uses_resources():
                cpu += a.resources.cpu
                memory += a.resources.memory
        if cpu > cap.cpu or memory > cap.memory:
            problems.append(
                f"node {node.name} over-committed: cpu {cpu}/{cap.cpu}, memory {memory}/{cap.memory}"
            )
    for job in store.jobs():
        if job.type == "system" or job.stop:
            continue
        seen: dict[tuple[str, int], str] = {}
        for a in store.allocs_by_job(job.id, job.namespace):
            where = nodes.get(a.node_id)
            if where is None:
                problems.append(f"{a.name} placed on unknown node {a.node_id}")
            elif a.node_id in ineligible:
                problems.append(f"{a.name} placed on ineligible node {where.name}")
            elif not a.terminal() and where.status != NodeStatus.READY:
                problems.append(
                    f"{a.name} runs on node {where.name}, which is {where.status.value}"
                )
            if a.terminal():
                continue
            key = (a.group, a.index)
            if key in seen:
                problems.append(f"{job.id}: instance {a.group}[{a.index}] placed twice")
            seen[key] = a.id
            group = job.spec.groups.get(a.group)
            if group is None or not 0 <= a.index < group.count:
                problems.append(f"{job.id}: allocation {a.name} outside the group's count")
        for name, group in job.spec.groups.items():
            live = sum(1 for g, _ in seen if g == name)
            if live != group.count and (exact_counts or live > group.count):
                problems.append(f"{job.id}.{name}: {live} live instances, count {group.count}")
    return problems


def reload_matches(store: StateStore, fresh: Backend, name: str) -> list[str]:
    """What a fresh backend's ``load()`` of the same store returns against the server's
    in-memory ``store``: the same index and the same allocation ids (nothing acknowledged
    lost, nothing extra).  Call it when nothing commits meanwhile."""
    index, rows = fresh.load()
    loaded = {key for table, key, _ in rows if table == ALLOCS}
    held = {a.id for a in store.allocs()}
    problems = []
    if index != store.index:
        problems.append(f"{name}: a fresh load is at index {index}, the server at {store.index}")
    if loaded != held:
        problems.append(
            f"{name}: a fresh load holds {len(loaded):,} allocations, the server {len(held):,} "
            f"({len(held - loaded):,} missing from the store, {len(loaded - held):,} extra)"
        )
    return problems
