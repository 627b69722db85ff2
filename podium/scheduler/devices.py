"""Device assignment: which instances (GPUs) of a node an allocation's tasks get.

Pure, like the rest of the scheduler.  A group's tasks ask for devices by name
(``gpu``, ``nvidia/gpu``, ``nvidia/gpu/<model>``) and count, with constraints and
affinities on the device group's attributes.  On a node, an instance is free when it
is healthy and no allocation that still holds resources there (its tasks have not
exited) was given it, nor an earlier placement of the same plan; instances of
allocations the plan stops are free for their successors (Nomad frees them at plan
time too, so that a rolling update of a job holding every GPU of a node can proceed).

:func:`assign` answers for one node: the instances, or why not -- a *filter* reason
when the node could never serve the request (no such device, too few healthy ones,
constraints unmet) or an *exhausted* dimension (``devices nvidia/gpu``) when they are
all taken now.  :func:`held_on_node` and :func:`conflicts` are the commit rule's
re-check (``podium.scheduler.commit``): a plan that would give an instance already in
use is refused whole, as one that over-commits memory is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from podium.models.alloc import Allocation
from podium.models.devices import AllocatedDevices, DeviceGroup
from podium.models.job import DeviceConstraint, DeviceRequest, Group
from podium.models.node import Node
from podium.scheduler.constraints import check

InstanceKey = tuple[str, str]
"""(device group id ``vendor/type/model``, instance id)."""


@dataclass(frozen=True, slots=True)
class DeviceAsk:
    task: str
    request: DeviceRequest


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    exhausted: bool
    """True: the node has such devices but they are taken now (a dimension exhausted);
    False: the node can never serve the request (a filter)."""


def group_asks(group: Group) -> tuple[DeviceAsk, ...]:
    return tuple(
        DeviceAsk(name, req) for name, task in group.tasks.items() for req in task.resources.devices
    )


def held(allocs: Iterable[Allocation], skip: Iterable[str] = ()) -> set[InstanceKey]:
    """The instances held by ``allocs`` that still use resources, but for ``skip`` ids."""
    skipped = set(skip)
    out: set[InstanceKey] = set()
    for alloc in allocs:
        if not alloc.devices or alloc.id in skipped or not alloc.uses_resources():
            continue
        for given in alloc.devices:
            for device_id in given.device_ids:
                out.add((given.id, device_id))
    return out


def _meets(group: DeviceGroup, rules: Iterable[DeviceConstraint]) -> bool:
    return all(
        check(r.operator, group.attribute(r.attribute), group.attribute(r.value)) for r in rules
    )


def _affinity(group: DeviceGroup, request: DeviceRequest) -> int:
    return sum(
        a.weight
        for a in request.affinities
        if check(a.operator, group.attribute(a.attribute), group.attribute(a.value))
    )


def assign(
    node: Node, asks: Iterable[DeviceAsk], used: set[InstanceKey]
) -> list[AllocatedDevices] | Refusal:
    """Instances of ``node`` for every ask, none in ``used`` (which is not changed)."""
    taken: set[InstanceKey] = set()
    out: list[AllocatedDevices] = []
    for ask in asks:
        req = ask.request
        named = [g for g in node.devices if g.matches(req.name)]
        if not named:
            return Refusal(f"missing device {req.name}", exhausted=False)
        fitting = [g for g in named if _meets(g, req.constraints)]
        if not fitting:
            return Refusal(f"device {req.name}: constraints not met", exhausted=False)
        healthy = [g for g in fitting if sum(i.healthy for i in g.instances) >= req.count]
        if not healthy:
            return Refusal(f"fewer than {req.count} healthy device {req.name}", exhausted=False)
        # the preferred group first (affinities), then the node's order
        ranked = sorted(healthy, key=lambda g: -_affinity(g, req))
        chosen: AllocatedDevices | None = None
        for g in ranked:
            free = [
                i
                for i in g.instances
                if i.healthy and (g.id, i.id) not in used and (g.id, i.id) not in taken
            ]
            if len(free) >= req.count:
                picked = free[: req.count]
                taken.update((g.id, i.id) for i in picked)
                chosen = AllocatedDevices(
                    task=ask.task,
                    vendor=g.vendor,
                    type=g.type,
                    name=g.name,
                    device_ids=[i.id for i in picked],
                    indexes=[i.index for i in picked],
                    plugin=g.plugin,
                )
                break
        if chosen is None:
            return Refusal(f"devices {req.name}", exhausted=True)
        out.append(chosen)
    return out


class DeviceUsage:
    """The instances in use per node during one schedule call, updated as it places."""

    def __init__(
        self, allocs_by_node: Callable[[str], list[Allocation]], released: Iterable[str] = ()
    ) -> None:
        self._allocs_by_node = allocs_by_node
        self._released = set(released)
        self._used: dict[str, set[InstanceKey]] = {}

    def used(self, node_id: str) -> set[InstanceKey]:
        got = self._used.get(node_id)
        if got is None:
            allocs = self._allocs_by_node(node_id)
            got = self._used[node_id] = held(allocs, self._released)
        return got

    def check(self, node: Node, asks: tuple[DeviceAsk, ...]) -> Refusal | None:
        result = assign(node, asks, self.used(node.id))
        return result if isinstance(result, Refusal) else None

    def take(self, node: Node, asks: tuple[DeviceAsk, ...]) -> list[AllocatedDevices]:
        """Assign and book the instances (the caller has checked they are free)."""
        result = assign(node, asks, self.used(node.id))
        if isinstance(result, Refusal):
            raise ValueError(f"node {node.id}: {result.reason}")
        used = self.used(node.id)
        for given in result:
            used.update((given.id, d) for d in given.device_ids)
        return result


def conflicts(node: Node, placing: Iterable[Allocation], held_now: set[InstanceKey]) -> str | None:
    """Why the devices given to ``placing`` on ``node`` cannot commit, or None: an
    instance given twice (already held, or twice in the plan), unknown to the node,
    or unhealthy."""
    known = {(g.id, i.id): i.healthy for g in node.devices for i in g.instances}
    seen = set(held_now)
    for alloc in placing:
        for given in alloc.devices:
            for device_id in given.device_ids:
                key = (given.id, device_id)
                if key in seen:
                    return f"device {given.id} {device_id} is already assigned"
                if not known.get(key, False):
                    return f"device {given.id} {device_id} is not a healthy device of the node"
                seen.add(key)
    return None
