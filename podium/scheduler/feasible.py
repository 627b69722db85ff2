"""Feasibility: may this node run this group at all, and does it have room now?

Three kinds of check, kept apart on purpose (Nomad draws the same lines):

* **Static filters** depend only on the node and the group: datacenters,
  node pool, constraints (job, group and tasks) and drivers.  Their answer
  cannot change while one evaluation runs, so :class:`GroupNeeds` caches it
  per node: a group of 500 instances asks each node once, not 500 times.
* **Placement-dependent rules** (``distinct_hosts``, ``distinct_property``,
  ``max_per_node``, static ports) depend on where the job's other instances
  are, so :class:`PlacementState` answers them from counts it keeps current
  as the plan places; only groups that use them pay for them.
* **Resources** change with every placement the plan makes, so they are
  checked against :class:`NodeState`, which holds a node's capacity and the
  resources in use -- summed once per schedule call from the snapshot and
  then updated incrementally as the plan places.

Every rejection carries a reason string; :class:`MetricCounter` counts them so
``podium job status`` can say *why* nothing fit ("2 exhausted memory, 1
missing driver exec") instead of just "no".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

from podium.models import Allocation, AllocMetric, Constraint, Group, JobSpec, Node, Spread
from podium.models.dockerpolicy import DockerNeeds, DockerPolicy
from podium.models.taskconfig import DockerConfig
from podium.scheduler.constraints import PLACEMENT_OPERATORS, check, resolve
from podium.scheduler.devices import DeviceAsk, DeviceUsage, group_asks
from podium.scheduler.snapshot import Snapshot

StaticFilter = Callable[[Node, "GroupNeeds"], str | None]
"""A check that depends only on the node and the group; returns a reason or None."""

NodeRule = tuple[str, str, str, str]
"""A constraint or affinity ready to check: (attribute, operator, value, reason text)."""

USE_NODE_CLASSES = True
"""Cache static verdicts per computed node class (benchmarks switch it off to measure it)."""

_UNIQUE_TARGETS = (
    "${node.id}",
    "${node.unique.",
    "${node.name}",
    "${attr.unique.",
    "${meta.unique.",
)
"""Targets that differ between nodes of one class: rules naming them are checked per node."""


class NodeInfo:
    """What a schedule call needs of a node that only changes when the node object does.

    ``klass`` is Nomad's *computed node class*: nodes with the same datacenter,
    pool, attributes, meta and healthy drivers get the same key, so a static
    filter's verdict computed for one of them holds for all (5,000 nodes of a
    handful of shapes cost a handful of constraint checks per evaluation).
    """

    __slots__ = ("cap_cpu", "cap_memory", "klass", "node", "schedulable")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.schedulable = node.schedulable()
        self.cap_cpu = max(0, node.resources.cpu - node.reserved.cpu)
        self.cap_memory = max(0, node.resources.memory - node.reserved.memory)
        drivers = sorted(n for n, d in node.drivers.items() if d.detected and d.healthy)
        self.klass = "\x1f".join(
            [
                node.datacenter,
                node.node_pool,
                repr(sorted(node.attributes.items())),
                repr(sorted(node.meta.items())),
                ",".join(drivers),
                repr(sorted((k, v.read_only) for k, v in node.host_volumes.items())),
            ]
        )


_INFO: dict[int, NodeInfo] = {}
_INFO_MAX = 200_000


def node_info(node: Node) -> NodeInfo:
    """The node's :class:`NodeInfo`, computed once per node object.

    Nodes in the store are immutable (replaced on every write), so the object's
    identity is the cache key; the entry holds the object, so the id cannot be
    reused while it is cached.
    """
    info = _INFO.get(id(node))
    if info is not None and info.node is node:
        return info
    if len(_INFO) >= _INFO_MAX:
        _INFO.clear()
    info = _INFO[id(node)] = NodeInfo(node)
    return info


def constraint_reason(c: Constraint) -> str:
    """How a failed constraint reads in metrics: ``constraint ${attr.cpu.arch} = arm64``."""
    if c.operator == "distinct_hosts":
        return "distinct_hosts"
    if c.operator == "distinct_property":
        return f"distinct_property {c.attribute}"
    if c.operator in ("is_set", "is_not_set") or not c.value:
        return f"constraint {c.attribute} {c.operator}"
    return f"constraint {c.attribute} {c.operator} {c.value}"


def _first_failing(rules: Sequence[NodeRule], node: Node) -> str | None:
    for attribute, operator, value, reason in rules:
        if not check(operator, resolve(attribute, node), resolve(value, node)):
            return reason
    return None


def outside_datacenters(node: Node, needs: GroupNeeds) -> str | None:
    """The node's datacenter must match one of the job's (glob patterns; ``*`` is all)."""
    patterns = needs.datacenters
    if not patterns:
        return None
    dc = node.datacenter
    for pattern in patterns:
        if fnmatchcase(dc, pattern):
            return None
    return needs.datacenter_reason


def outside_node_pool(node: Node, needs: GroupNeeds) -> str | None:
    """The node must be in the job's pool; pool ``all`` takes any node."""
    pool = needs.node_pool
    if pool == "all" or node.node_pool == pool:
        return None
    return f"node pool not {pool}"


def job_constraints(node: Node, needs: GroupNeeds) -> str | None:
    return _first_failing(needs.job_constraints, node)


def missing_driver(node: Node, needs: GroupNeeds) -> str | None:
    """Every task's driver must be detected and healthy on the node."""
    for driver in needs.drivers:
        if not node.driver_ok(driver):
            return f"missing driver {driver}"
    return None


def docker_refused(node: Node, needs: GroupNeeds) -> str | None:
    """A docker task's host binds, cap_add and privileged mode must be allowed by the
    node's docker driver (the policy it advertises; a node that advertises none, an agent
    older than the check, is left to its driver)."""
    if not needs.docker:
        return None
    info = node.drivers.get("docker")
    policy = DockerPolicy.from_attributes(info.attributes) if info is not None else None
    if policy is None:
        return None
    for task_needs in needs.docker:
        reason = policy.refusal(task_needs)
        if reason is not None:
            return reason
    return None


def refused_exec_user(node: Node, needs: GroupNeeds) -> str | None:
    """An exec task's ``user`` must not be root (uid 0) nor on the node's denylist
    (``driver.exec.user_denylist``, which the agent fingerprints)."""
    if not needs.exec_users:
        return None
    denied = {"root", "0", *node.attributes.get("driver.exec.user_denylist", "").split(",")}
    for user in needs.exec_users:
        if (str(int(user)) if user.isdigit() else user) in denied:
            return f"exec: user {user} is refused"
    return None


def group_constraints(node: Node, needs: GroupNeeds) -> str | None:
    """The group's constraints and those of all its tasks."""
    return _first_failing(needs.group_constraints, node)


def missing_host_volume(node: Node, needs: GroupNeeds) -> str | None:
    """Every host volume the group asks for must be declared by the node's agent, and
    writable unless the group asks to read it only (docs/volumes.md)."""
    for source, read_only in needs.host_volumes:
        have = node.host_volumes.get(source)
        if have is None:
            return f"missing host volume {source}"
        if have.read_only and not read_only:
            return f"host volume {source} is read-only"
    return None


STATIC_FILTERS: tuple[StaticFilter, ...] = (
    outside_datacenters,
    outside_node_pool,
    job_constraints,
    missing_driver,
    docker_refused,
    refused_exec_user,
    missing_host_volume,
    group_constraints,
)
"""Applied in order (Nomad's order: job constraints, drivers, group constraints);
the first reason found is the one counted.  The ranker never needs to know how
many there are because it only sees the cached verdict.
"""


@dataclass(frozen=True, slots=True)
class DistinctProperty:
    attribute: str
    limit: int
    job_scope: bool
    """A job-level constraint counts the job's allocations; a group-level one the group's."""
    reason: str


@dataclass(frozen=True, slots=True)
class SpreadRule:
    attribute: str
    weight: int
    targets: dict[str, float]
    """Value -> share (0..1) of the group's count; ``*`` holds the share left over, if any."""


def _rules(constraints: Iterable[Constraint], seen: set[tuple[str, str, str]]) -> list[NodeRule]:
    out: list[NodeRule] = []
    for c in constraints:
        key = (c.attribute, c.operator, c.value)
        if c.operator in PLACEMENT_OPERATORS or key in seen:
            continue
        seen.add(key)
        out.append((c.attribute, c.operator, c.value, constraint_reason(c)))
    return out


def _spread_rule(spread: Spread) -> SpreadRule:
    targets = {t.value: t.percent / 100.0 for t in spread.targets}
    if targets:
        left = 1.0 - sum(targets.values())
        if left > 1e-9 and "*" not in targets:
            targets["*"] = left
    return SpreadRule(spread.attribute, spread.weight, targets)


def _docker_needs(group: Group) -> tuple[DockerNeeds, ...]:
    out = []
    for task in group.tasks.values():
        if task.driver != "docker":
            continue
        try:
            cfg = DockerConfig.model_validate(task.config)
        except ValueError:
            continue  # the spec layer reports it; the driver refuses it
        task_needs = DockerNeeds.of(cfg)
        if task_needs.any:
            out.append(task_needs)
    return tuple(out)


def _host_volume_needs(group: Group) -> tuple[tuple[str, bool], ...]:
    """Per host volume: whether every use of it is read-only (the group's request, or
    every task's mount of it)."""
    out: dict[str, bool] = {}
    for name, vol in group.volumes.items():
        mounts = [m for t in group.tasks.values() for m in t.volume_mounts if m.volume == name]
        read_only = vol.read_only or (bool(mounts) and all(m.read_only for m in mounts))
        out[vol.source] = out.get(vol.source, True) and read_only
    return tuple(sorted(out.items()))


@dataclass(slots=True)
class GroupNeeds:
    """What one instance of a group asks of a node, precomputed once per schedule call."""

    name: str
    cpu: int
    memory: int
    drivers: tuple[str, ...]
    filters: Sequence[StaticFilter] = STATIC_FILTERS
    exec_users: tuple[str, ...] = ()
    """The users exec tasks name (checked against the node's denylist)."""
    datacenters: tuple[str, ...] = ()
    """Glob patterns; empty when the job runs in every datacenter."""
    datacenter_reason: str = ""
    node_pool: str = "all"
    job_constraints: tuple[NodeRule, ...] = ()
    group_constraints: tuple[NodeRule, ...] = ()
    distinct_hosts: Literal["job", "group"] | None = None
    distinct_properties: tuple[DistinctProperty, ...] = ()
    max_per_node: int | None = None
    static_ports: dict[str, int] = field(default_factory=dict)
    """Port label -> static port number."""
    affinities: tuple[tuple[NodeRule, int], ...] = ()
    affinity_total: int = 0
    spreads: tuple[SpreadRule, ...] = ()
    spread_total: int = 0
    per_node: bool = False
    """A rule names something unique to a node: verdicts are cached per node, not per class."""
    affinity_per_node: bool = False
    docker: tuple[DockerNeeds, ...] = ()
    """What the group's docker tasks ask beyond a plain container (host binds, cap_add)."""
    host_volumes: tuple[tuple[str, bool], ...] = ()
    """(host volume name, read only) the group asks for (docs/volumes.md)."""
    devices: tuple[DeviceAsk, ...] = ()
    """The tasks' device requests (docs/devices.md): checked per node as the plan places."""
    _verdicts: dict[str, str | None] = field(default_factory=dict)
    _affinity: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        name: str,
        group: Group,
        job: JobSpec | None = None,
        filters: Sequence[StaticFilter] = STATIC_FILTERS,
    ) -> GroupNeeds:
        cpu = sum(t.resources.cpu for t in group.tasks.values())
        memory = sum(t.resources.memory for t in group.tasks.values())
        drivers = tuple(sorted({t.driver for t in group.tasks.values()}))
        needs = cls(name=name, cpu=cpu, memory=memory, drivers=drivers, filters=filters)
        needs.docker = _docker_needs(group)
        needs.host_volumes = _host_volume_needs(group)
        needs.devices = group_asks(group)
        needs.exec_users = tuple(
            sorted({t.user.strip() for t in group.tasks.values() if t.driver == "exec" and t.user})
        )

        job_level: list[Constraint] = list(job.constraints) if job is not None else []
        group_level: list[Constraint] = list(group.constraints)
        for task in group.tasks.values():
            group_level.extend(task.constraints)
        seen: set[tuple[str, str, str]] = set()
        needs.job_constraints = tuple(_rules(job_level, seen))
        needs.group_constraints = tuple(_rules(group_level, seen))

        props: list[DistinctProperty] = []
        for scope_is_job, constraints in ((True, job_level), (False, group_level)):
            for c in constraints:
                if c.operator == "distinct_hosts" and c.value.strip().lower() != "false":
                    if scope_is_job:
                        needs.distinct_hosts = "job"
                    elif needs.distinct_hosts is None:
                        needs.distinct_hosts = "group"
                elif c.operator == "distinct_property":
                    try:
                        limit = int(c.value) if c.value.strip() else 1
                    except ValueError:
                        limit = 1
                    props.append(
                        DistinctProperty(
                            c.attribute, max(limit, 1), scope_is_job, constraint_reason(c)
                        )
                    )
        needs.distinct_properties = tuple(props)
        needs.max_per_node = group.max_per_node
        needs.static_ports = {
            label: port.static
            for label, port in group.network.ports.items()
            if port.static is not None
        }

        affinities = list(job.affinities) if job is not None else []
        affinities += group.affinities
        for task in group.tasks.values():
            affinities += task.affinities
        needs.affinities = tuple(
            ((a.attribute, a.operator, a.value, ""), a.weight) for a in affinities if a.weight
        )
        needs.affinity_total = sum(abs(w) for _, w in needs.affinities)
        spreads = list(job.spread) if job is not None else []
        spreads += group.spread
        needs.spreads = tuple(_spread_rule(s) for s in spreads if s.weight > 0)
        needs.spread_total = sum(s.weight for s in needs.spreads)

        if job is not None:
            dcs = tuple(job.datacenters)
            if "*" not in dcs:
                needs.datacenters = dcs
                needs.datacenter_reason = f"datacenter not in [{', '.join(dcs)}]"
            needs.node_pool = job.node_pool
        rules = [*needs.job_constraints, *needs.group_constraints]
        needs.per_node = (
            not USE_NODE_CLASSES
            or filters is not STATIC_FILTERS
            or any(t.startswith(_UNIQUE_TARGETS) for a, _, v, _ in rules for t in (a, v))
        )
        needs.affinity_per_node = not USE_NODE_CLASSES or any(
            t.startswith(_UNIQUE_TARGETS) for (a, _, v, _), _ in needs.affinities for t in (a, v)
        )
        return needs

    @property
    def placement_dependent(self) -> bool:
        """Whether feasibility also depends on where this plan has placed (never cached)."""
        return bool(
            self.distinct_hosts
            or self.distinct_properties
            or self.max_per_node is not None
            or self.static_ports
        )

    @property
    def scored(self) -> bool:
        """Whether affinities or spreads make every feasible node worth scoring (as in Nomad)."""
        return bool(self.affinities or self.spreads)

    def static_reason(self, node: Node, info: NodeInfo | None = None) -> str | None:
        """Why ``node`` can never run this group, or None.

        Cached per computed node class (:class:`NodeInfo`), or per node when a
        rule names something unique to the node.
        """
        verdicts = self._verdicts
        if info is None and not self.per_node:
            info = node_info(node)
        key = node.id if info is None or self.per_node else info.klass
        try:
            return verdicts[key]
        except KeyError:
            pass
        reason: str | None = None
        for check_node in self.filters:
            reason = check_node(node, self)
            if reason is not None:
                break
        verdicts[key] = reason
        return reason

    def affinity_score(self, node: Node) -> float:
        """Sum of the matching affinities' weights over the sum of all |weights|: [-1, 1]."""
        cache = self._affinity
        key = node.id if self.affinity_per_node else node_info(node).klass
        score = cache.get(key)
        if score is None:
            total = 0
            for (attribute, operator, value, _), weight in self.affinities:
                if check(operator, resolve(attribute, node), resolve(value, node)):
                    total += weight
            score = total / self.affinity_total if self.affinity_total else 0.0
            cache[key] = score
        return score


class PlacementState:
    """Where one job's allocations will run, kept current as the plan places.

    Starts from the allocations the reconciler keeps running and grows with
    every placement, so rules that depend on other allocations
    (``distinct_hosts``, ``distinct_property``, ``max_per_node``, spread)
    and static ports see the plan so far.  Everything is built lazily: a job
    without such rules never pays for it.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        running: Iterable[Allocation],
        released: Iterable[str] = (),
    ) -> None:
        self._snapshot = snapshot
        self.by_node: dict[str, int] = {}
        """Node id -> this job's allocations there."""
        self.by_group: dict[str, dict[str, int]] = {}
        """Group -> node id -> that group's allocations there."""
        self.released: set[str] = set(released)
        """Allocations this plan stops: their static ports do not block."""
        self._values: dict[tuple[str | None, str], dict[str, int]] = {}
        self._attr: dict[str, dict[str, str | None]] = {}
        self._ports: dict[str, dict[int, list[str]]] = {}
        self._spec_ports: dict[tuple[str, str, int, str], tuple[int, ...]] = {}
        self._devices: DeviceUsage | None = None
        for alloc in running:
            self.by_node[alloc.node_id] = self.by_node.get(alloc.node_id, 0) + 1
            per_node = self.by_group.setdefault(alloc.group, {})
            per_node[alloc.node_id] = per_node.get(alloc.node_id, 0) + 1

    @property
    def devices(self) -> DeviceUsage:
        """Device instances in use per node (built on first use: most jobs ask none)."""
        if self._devices is None:
            self._devices = DeviceUsage(self._snapshot.allocs_by_node, self.released)
        return self._devices

    def group_counts(self, group: str) -> dict[str, int]:
        return self.by_group.setdefault(group, {})

    def value_of(self, attribute: str, node: Node) -> str | None:
        """``resolve(attribute, node)``, cached per node for the call."""
        per_node = self._attr.get(attribute)
        if per_node is None:
            per_node = self._attr[attribute] = {}
        try:
            return per_node[node.id]
        except KeyError:
            value = per_node[node.id] = resolve(attribute, node)
            return value

    def value_counts(self, group: str | None, attribute: str) -> dict[str, int]:
        """Attribute value -> allocations of ``group`` (of the whole job when None) on it."""
        key = (group, attribute)
        counts = self._values.get(key)
        if counts is None:
            counts = self._values[key] = {}
            source = self.by_node if group is None else self.by_group.get(group, {})
            for node_id, n in source.items():
                node = self._snapshot.node(node_id)
                value = self.value_of(attribute, node) if node is not None else None
                if value is not None:
                    counts[value] = counts.get(value, 0) + n
        return counts

    def ports_on(self, node_id: str) -> dict[int, list[str]]:
        """Static port -> ids of the non-terminal allocations holding it on the node."""
        held = self._ports.get(node_id)
        if held is None:
            held = self._ports[node_id] = {}
            for alloc in self._snapshot.allocs_by_node(node_id):
                if alloc.terminal():
                    continue
                ports = {p.value for p in alloc.ports.values()}
                ports.update(self._static_ports_of(alloc))
                for port in ports:
                    held.setdefault(port, []).append(alloc.id)
        return held

    def _static_ports_of(self, alloc: Allocation) -> tuple[int, ...]:
        key = (alloc.namespace, alloc.job_id, alloc.job_version, alloc.group)
        ports = self._spec_ports.get(key)
        if ports is None:
            spec = self._snapshot.job_spec(alloc.job_id, alloc.job_version, alloc.namespace)
            group = spec.groups.get(alloc.group) if spec is not None else None
            ports = ()
            if group is not None:
                ports = tuple(
                    p.static for p in group.network.ports.values() if p.static is not None
                )
            self._spec_ports[key] = ports
        return ports

    def dynamic_reason(self, needs: GroupNeeds, node: Node, replaces: str | None) -> str | None:
        """Why ``node`` cannot take one more instance given the placements so far, or None.

        ``replaces`` is the allocation this placement supersedes: its static
        ports are free for its successor.
        """
        if needs.distinct_hosts is not None:
            counts = (
                self.by_node if needs.distinct_hosts == "job" else self.by_group.get(needs.name)
            )
            if counts and counts.get(node.id, 0):
                return "distinct_hosts"
        for prop in needs.distinct_properties:
            value = self.value_of(prop.attribute, node)
            if value is None:
                return prop.reason
            scope = None if prop.job_scope else needs.name
            if self.value_counts(scope, prop.attribute).get(value, 0) >= prop.limit:
                return prop.reason
        limit = needs.max_per_node
        if limit is not None and self.by_group.get(needs.name, {}).get(node.id, 0) >= limit:
            return f"max_per_node {limit}"
        if needs.static_ports:
            held = self.ports_on(node.id)
            released = self.released
            for port in needs.static_ports.values():
                for holder in held.get(port, ()):
                    if holder != replaces and holder not in released:
                        return f"port {port} in use"
        return None

    def record(self, needs: GroupNeeds, node: Node, alloc_id: str = "") -> None:
        """One more instance of ``needs`` on ``node`` (placed by this plan)."""
        node_id = node.id
        self.by_node[node_id] = self.by_node.get(node_id, 0) + 1
        per_node = self.by_group.setdefault(needs.name, {})
        per_node[node_id] = per_node.get(node_id, 0) + 1
        for (group, attribute), counts in self._values.items():
            if group is None or group == needs.name:
                value = self.value_of(attribute, node)
                if value is not None:
                    counts[value] = counts.get(value, 0) + 1
        if needs.static_ports:
            held = self.ports_on(node_id)
            for port in needs.static_ports.values():
                held.setdefault(port, []).append(alloc_id)


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

    def __init__(
        self, node: Node, used_cpu: int, used_memory: int, info: NodeInfo | None = None
    ) -> None:
        if info is None:
            info = node_info(node)
        self.node = node
        self.id = node.id
        self.schedulable = info.schedulable
        self.cap_cpu = info.cap_cpu
        self.cap_memory = info.cap_memory
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

    def state(self, node: Node, info: NodeInfo | None = None) -> NodeState:
        st = self._states.get(node.id)
        if st is None:
            cpu, memory = self._snapshot.node_usage(node.id)
            st = NodeState(node, cpu, memory, info)
            self._states[node.id] = st
        return st


class MetricCounter:
    """Counts one placement attempt's rejections cheaply; becomes an AllocMetric on failure.

    A plain object rather than :class:`AllocMetric` itself because it is
    updated in the hottest loop, and only failed attempts are ever reported.
    :meth:`note_free` records the most cpu and memory free on the nodes that
    were too full; callers collect those nodes in a list as they reject them
    (one append) and call it only when the placement failed.  A failed
    placement visited every eligible node, and each was rejected, so these
    are the largest free amounts on any eligible node.
    """

    __slots__ = ("evaluated", "exhausted", "filtered", "free_cpu", "free_memory")

    def __init__(self) -> None:
        self.evaluated = 0
        self.filtered: dict[str, int] = {}
        self.exhausted: dict[str, int] = {}
        self.free_cpu = -1
        self.free_memory = -1

    def filter(self, reason: str) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + 1

    def exhaust(self, dimension: str) -> None:
        self.exhausted[dimension] = self.exhausted.get(dimension, 0) + 1

    def note_free(self, full: Iterable[NodeState]) -> None:
        """The most cpu and memory free on any of the ``full`` nodes (rejected as too full)."""
        for st in full:
            free = st.cap_cpu - st.used_cpu
            if free > self.free_cpu:
                self.free_cpu = free
            free = st.cap_memory - st.used_memory
            if free > self.free_memory:
                self.free_memory = free

    def to_metric(self, nodes_available: int, cpu: int = 0, memory: int = 0) -> AllocMetric:
        """Reasons in a stable order (most frequent first, then by name).

        The order nodes were visited in is a shuffle; without sorting, two
        runs with different eval ids would word the same situation differently.
        ``cpu``/``memory`` are what one instance asked; a dimension no rejected
        node had enough of gets its largest free amount beside it.
        """
        metric = AllocMetric(nodes_evaluated=self.evaluated, nodes_available=nodes_available)
        for reason, n in sorted(self.filtered.items(), key=lambda kv: (-kv[1], kv[0])):
            metric.nodes_filtered += n
            metric.constraint_filtered[reason] = n
        for dim, n in sorted(self.exhausted.items(), key=lambda kv: (-kv[1], kv[0])):
            metric.nodes_exhausted += n
            metric.dimension_exhausted[dim] = n
        if self.exhausted:
            metric.asked = {"cpu": cpu, "memory": memory}
            if 0 <= self.free_cpu < cpu or (self.free_cpu < 0 and "cpu" in self.exhausted):
                metric.largest_free["cpu"] = max(0, self.free_cpu)
            if 0 <= self.free_memory < memory or (
                self.free_memory < 0 and "memory" in self.exhausted
            ):
                metric.largest_free["memory"] = max(0, self.free_memory)
        return metric
