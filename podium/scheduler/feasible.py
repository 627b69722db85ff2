"""Feasibility: may this node run this group at all, and does it have room now?

Two kinds of check, kept apart on purpose (Nomad draws the same line):

* **Static filters** depend only on the node and the group (drivers today;
  constraints, datacenters and node pools later).  Their answer cannot change
  while one evaluation runs, so :class:`GroupNeeds` caches it per node: a
  group of 500 instances asks each node once, not 500 times.
* **Resources** change with every placement the plan makes, so they are
  checked against :class:`NodeState`, which holds a node's capacity and the
  resources in use -- summed once per schedule call from the snapshot and
  then updated incrementally as the plan places.

Every rejection carries a reason string; :class:`MetricCounter` counts them so
``podium job status`` can say *why* nothing fit ("2 exhausted memory, 1
missing driver exec") instead of just "no".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from podium.models import AllocMetric, Group, Node
from podium.scheduler.snapshot import Snapshot

StaticFilter = Callable[[Node, "GroupNeeds"], str | None]
"""A check that depends only on the node and the group; returns a reason or None."""


def missing_driver(node: Node, needs: GroupNeeds) -> str | None:
    """Every task's driver must be detected and healthy on the node."""
    for driver in needs.drivers:
        if not node.driver_ok(driver):
            return f"missing driver {driver}"
    return None


STATIC_FILTERS: tuple[StaticFilter, ...] = (missing_driver,)
"""Applied in order; the first reason found is the one counted.

Constraints, datacenters and node pools slot in here; the ranker never needs to
know how many there are because it only sees the cached verdict.
"""


@dataclass(slots=True)
class GroupNeeds:
    """What one instance of a group asks of a node, precomputed once per schedule call."""

    name: str
    cpu: int
    memory: int
    drivers: tuple[str, ...]
    filters: Sequence[StaticFilter] = STATIC_FILTERS
    _verdicts: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(
        cls, name: str, group: Group, filters: Sequence[StaticFilter] = STATIC_FILTERS
    ) -> GroupNeeds:
        cpu = sum(t.resources.cpu for t in group.tasks.values())
        memory = sum(t.resources.memory for t in group.tasks.values())
        drivers = tuple(sorted({t.driver for t in group.tasks.values()}))
        return cls(name=name, cpu=cpu, memory=memory, drivers=drivers, filters=filters)

    def static_reason(self, node: Node) -> str | None:
        """Why ``node`` can never run this group (cached per node), or None."""
        verdicts = self._verdicts
        try:
            return verdicts[node.id]
        except KeyError:
            pass
        reason: str | None = None
        for check in self.filters:
            reason = check(node, self)
            if reason is not None:
                break
        verdicts[node.id] = reason
        return reason


class NodeState:
    """A node as one schedule call sees it: capacity and resources in use.

    ``used_*`` starts as the sum over the node's allocations that still use
    resources (:meth:`Allocation.uses_resources`: anything whose tasks have
    not exited, stopped or not) and grows as the plan places there.  Stops in
    the same plan do *not* free anything, because the old process is still
    running until the agent reports it gone; the plan applier counts the same
    way, so a plan we produce is one it accepts.
    """

    __slots__ = ("cap_cpu", "cap_memory", "id", "node", "schedulable", "used_cpu", "used_memory")

    def __init__(self, node: Node, used_cpu: int, used_memory: int) -> None:
        self.node = node
        self.id = node.id
        self.schedulable = node.schedulable()
        self.cap_cpu = max(0, node.resources.cpu - node.reserved.cpu)
        self.cap_memory = max(0, node.resources.memory - node.reserved.memory)
        self.used_cpu = used_cpu
        self.used_memory = used_memory

    def exhausted(self, cpu: int, memory: int) -> str | None:
        """The first dimension that would overflow if ``cpu``/``memory`` were added here."""
        if self.used_cpu + cpu > self.cap_cpu:
            return "cpu"
        if self.used_memory + memory > self.cap_memory:
            return "memory"
        return None

    def reserve(self, cpu: int, memory: int) -> None:
        self.used_cpu += cpu
        self.used_memory += memory


class NodeUsage:
    """Lazily built :class:`NodeState` per node, shared by every group of one schedule call.

    Lazy because a service placement looks at a handful of nodes out of
    thousands: summing allocations only for nodes actually visited keeps one
    schedule call proportional to the work it does, not to cluster size.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._states: dict[str, NodeState] = {}

    def state(self, node: Node) -> NodeState:
        st = self._states.get(node.id)
        if st is None:
            cpu = 0
            memory = 0
            # A node that cannot take work is never checked for room: skip the sum.
            if node.schedulable():
                for alloc in self._snapshot.allocs_by_node(node.id):
                    if alloc.uses_resources():
                        cpu += alloc.resources.cpu
                        memory += alloc.resources.memory
            st = NodeState(node, cpu, memory)
            self._states[node.id] = st
        return st


class MetricCounter:
    """Counts one placement attempt's rejections cheaply; becomes an AllocMetric on failure.

    A plain object rather than :class:`AllocMetric` itself because it is
    updated in the hottest loop, and only failed attempts are ever reported.
    """

    __slots__ = ("evaluated", "exhausted", "filtered")

    def __init__(self) -> None:
        self.evaluated = 0
        self.filtered: dict[str, int] = {}
        self.exhausted: dict[str, int] = {}

    def filter(self, reason: str) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + 1

    def exhaust(self, dimension: str) -> None:
        self.exhausted[dimension] = self.exhausted.get(dimension, 0) + 1

    def to_metric(self, nodes_available: int) -> AllocMetric:
        """Reasons in a stable order (most frequent first, then by name).

        The order nodes were visited in is a shuffle; without sorting, two
        runs with different eval ids would word the same situation differently.
        """
        metric = AllocMetric(nodes_evaluated=self.evaluated, nodes_available=nodes_available)
        for reason, n in sorted(self.filtered.items(), key=lambda kv: (-kv[1], kv[0])):
            metric.nodes_filtered += n
            metric.constraint_filtered[reason] = n
        for dim, n in sorted(self.exhausted.items(), key=lambda kv: (-kv[1], kv[0])):
            metric.nodes_exhausted += n
            metric.dimension_exhausted[dim] = n
        return metric
