"""What the UI's pages show, computed from models: pure functions, no I/O.

The server's UI routes read their store and hand the models here; the templates get
plain rows (counts summed, bars in percent, the topology's boxes), so the arithmetic is
tested without a browser and a template holds no logic beyond loops and conditions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from podium.models import Allocation, Deployment, Evaluation, Node
from podium.models.views import GroupSummary, JobListItem

STATES = ("queued", "pending", "running", "complete", "failed", "lost")
"""Client states in the order the pages show them (queued: not placed yet)."""


def counts(summary: Iterable[GroupSummary]) -> dict[str, int]:
    """Allocations by state summed over groups, every state present."""
    out = dict.fromkeys(STATES, 0)
    for s in summary:
        for state in STATES:
            out[state] += getattr(s, state)
    return out


@dataclass(frozen=True)
class JobRow:
    id: str
    namespace: str
    type: str
    status: str
    version: int
    groups: list[str]
    counts: dict[str, int]
    total: int


def job_rows(items: Iterable[JobListItem], *, status: str = "", search: str = "") -> list[JobRow]:
    """The jobs page's rows: ``status`` keeps one job status, ``search`` keeps ids that
    contain it (case-insensitive)."""
    needle = search.strip().lower()
    rows = []
    for item in items:
        if status and item.status.value != status:
            continue
        if needle and needle not in item.id.lower():
            continue
        c = counts(item.summary.values())
        rows.append(
            JobRow(
                id=item.id,
                namespace=item.namespace,
                type=item.type,
                status=item.status.value,
                version=item.version,
                groups=sorted(item.summary),
                counts=c,
                total=sum(c.values()),
            )
        )
    return rows


@dataclass(frozen=True)
class Bar:
    """One resource bar: ``used`` of ``total`` in a unit, and the share in percent."""

    label: str
    used: int
    total: int
    unit: str

    @property
    def percent(self) -> int:
        if self.total <= 0:
            return 0
        return max(0, min(100, round(100 * self.used / self.total)))


@dataclass(frozen=True)
class NodeRow:
    node: Node
    cpu: Bar
    memory: Bar
    allocs: int
    """Allocations that still hold resources on the node."""


def node_row(node: Node, usage: tuple[int, int], allocs: Sequence[Allocation]) -> NodeRow:
    cpu, memory = usage
    return NodeRow(
        node=node,
        cpu=Bar("CPU", cpu, node.resources.cpu, "MHz"),
        memory=Bar("Memory", memory, node.resources.memory, "MB"),
        allocs=sum(1 for a in allocs if a.uses_resources()),
    )


def hue(key: str) -> int:
    """A stable colour (an HSL hue) per job, so one job's allocations look alike on
    every node of the topology."""
    return int(hashlib.blake2s(key.encode(), digest_size=2).hexdigest(), 16) % 360


@dataclass(frozen=True)
class Block:
    """One allocation on the topology: its share of the node's CPU and memory."""

    alloc: Allocation
    cpu_percent: float
    memory_percent: float
    hue: int


@dataclass
class NodeBox:
    node: Node
    blocks: list[Block] = field(default_factory=list)
    cpu: Bar | None = None
    memory: Bar | None = None


def topology(nodes: Iterable[Node], allocs_by_node: dict[str, list[Allocation]]) -> list[NodeBox]:
    """Every node as a box filled by its live allocations' reserved CPU and memory
    (Nomad's topology view), by datacenter then name."""
    boxes = []
    for node in sorted(nodes, key=lambda n: (n.datacenter, n.name, n.id)):
        live = sorted(
            (a for a in allocs_by_node.get(node.id, []) if a.uses_resources()),
            key=lambda a: (a.namespace, a.job_id, a.name),
        )
        total_cpu = node.resources.cpu or 1
        total_mem = node.resources.memory or 1
        blocks = [
            Block(
                alloc=a,
                cpu_percent=round(100 * a.resources.cpu / total_cpu, 2),
                memory_percent=round(100 * a.resources.memory / total_mem, 2),
                hue=hue(f"{a.namespace}/{a.job_id}"),
            )
            for a in live
        ]
        used_cpu = sum(a.resources.cpu for a in live)
        used_mem = sum(a.resources.memory for a in live)
        boxes.append(
            NodeBox(
                node=node,
                blocks=blocks,
                cpu=Bar("CPU", used_cpu, node.resources.cpu, "MHz"),
                memory=Bar("Memory", used_mem, node.resources.memory, "MB"),
            )
        )
    return boxes


@dataclass(frozen=True)
class GroupProgress:
    group: str
    desired: int
    placed: int
    healthy: int
    unhealthy: int
    canaries: int
    promoted: bool

    @property
    def percent(self) -> int:
        return 0 if self.desired <= 0 else min(100, round(100 * self.healthy / self.desired))


def deployment_progress(deployment: Deployment) -> list[GroupProgress]:
    """Per group: how far the rollout is (healthy of desired), for a progress bar."""
    return [
        GroupProgress(
            group=name,
            desired=g.desired_total,
            placed=g.placed_allocs,
            healthy=g.healthy_allocs,
            unhealthy=g.unhealthy_allocs,
            canaries=g.desired_canaries,
            promoted=g.promoted,
        )
        for name, g in sorted(deployment.groups.items())
    ]


@dataclass(frozen=True)
class PlacementFailure:
    evaluation: Evaluation
    group: str
    text: str
    """In numbers: "3 nodes evaluated: 2 exhausted memory, ..." (AllocMetric.describe)."""
    queued: int


def placement_failures(evals: Iterable[Evaluation]) -> list[PlacementFailure]:
    """Why groups could not be placed, from the newest evaluation that says so (an
    evaluation that later placed everything has no failed metrics, so a job that
    recovered shows none)."""
    newest = sorted(evals, key=lambda e: e.modify_index, reverse=True)
    for ev in newest:
        if ev.status.value in ("complete", "blocked") and ev.failed_tg_allocs:
            return [
                PlacementFailure(
                    evaluation=ev,
                    group=group,
                    text=metric.describe(),
                    queued=ev.queued_allocations.get(group, metric.coalesced_failures + 1),
                )
                for group, metric in sorted(ev.failed_tg_allocs.items())
            ]
        if ev.status.value == "complete":
            return []
    return []
