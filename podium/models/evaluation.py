"""Evaluations: a reason for the scheduler to look at a job again."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class EvalStatus(StrEnum):
    PENDING = "pending"
    BLOCKED = "blocked"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELED = "canceled"


class TriggeredBy(StrEnum):
    JOB_REGISTER = "job-register"
    JOB_DEREGISTER = "job-deregister"
    JOB_SCALE = "job-scale"
    NODE_UPDATE = "node-update"
    NODE_DRAIN = "node-drain"
    ALLOC_FAILURE = "alloc-failure"
    RESCHEDULE = "alloc-reschedule"
    QUEUED_ALLOCS = "queued-allocs"
    MANUAL = "manual"
    DEPLOYMENT_WATCHER = "deployment-watcher"
    ALLOC_STATUS = "alloc-status"
    """An allocation a waiting group depends on changed (depends_on)."""
    ALLOC_STOP = "alloc-stop"
    """An operator stopped one allocation (``podium alloc stop``): replace it."""
    PREEMPTION = "preemption"
    """A higher-priority job preempted some of this job's allocations: replace them."""
    PERIODIC_JOB = "periodic-job"
    """A periodic job's launch (its child's first evaluation)."""


UNITS = {"cpu": "MHz", "memory": "MB"}
"""The unit of each resource dimension, as people read it."""


class AllocMetric(BaseModel):
    """Why a placement went where it did, or nowhere: counted per reason.

    ``asked`` is what one instance of the group asks for (``cpu`` MHz,
    ``memory`` MB, its tasks summed) and ``largest_free``, for each dimension
    no eligible node had enough of, the most of it free on one: together they
    say how far off the request is ("asked 500,000 MB memory; largest free on
    an eligible node: 21,400 MB").  Both are filled only when nodes were
    exhausted.  Exhausted nodes with no dimension in ``largest_free`` had
    enough of each, but never of both at once.
    """

    nodes_evaluated: int = 0
    nodes_filtered: int = 0
    nodes_available: int = 0
    nodes_exhausted: int = 0
    constraint_filtered: dict[str, int] = Field(default_factory=dict)
    dimension_exhausted: dict[str, int] = Field(default_factory=dict)
    coalesced_failures: int = 0
    asked: dict[str, int] = Field(default_factory=dict)
    largest_free: dict[str, int] = Field(default_factory=dict)

    def filter(self, reason: str) -> None:
        self.nodes_filtered += 1
        self.constraint_filtered[reason] = self.constraint_filtered.get(reason, 0) + 1

    def exhaust(self, dimension: str) -> None:
        self.nodes_exhausted += 1
        self.dimension_exhausted[dimension] = self.dimension_exhausted.get(dimension, 0) + 1

    def shortfall(self) -> list[str]:
        """Per exhausted dimension: ``asked 500,000 MB memory; largest free on an eligible
        node: 21,400 MB`` (only the dimensions the scheduler recorded figures for)."""
        out = []
        order = [*self.dimension_exhausted, *self.largest_free]  # the most exhausted first
        for dim in dict.fromkeys(order):
            if dim not in self.asked or dim not in self.largest_free:
                continue
            unit = UNITS.get(dim, "")
            out.append(
                f"asked {self.asked[dim]:,} {unit} {dim}; largest free on an eligible node: "
                f"{self.largest_free[dim]:,} {unit}"
            )
        return out

    def describe(self) -> str:
        """One line in numbers: '3 nodes evaluated: 2 exhausted memory, 1 missing driver exec;
        asked 500,000 MB memory; largest free on an eligible node: 21,400 MB'."""
        if self.nodes_evaluated == 0:
            return "no nodes were available (none registered, ready and eligible)"
        # every reason, the most common first, so the line leads with what matters most
        counted = [(n, reason) for reason, n in self.constraint_filtered.items()]
        counted += [(n, f"exhausted {dim}") for dim, n in self.dimension_exhausted.items()]
        parts = [f"{n} {reason}" for n, reason in sorted(counted, key=lambda c: (-c[0], c[1]))]
        noun = "node" if self.nodes_evaluated == 1 else "nodes"
        text = f"{self.nodes_evaluated} {noun} evaluated"
        if parts:
            text += ": " + ", ".join(parts)
        short = self.shortfall()
        if short:
            text += "; " + "; ".join(short)
        elif self.asked and len(self.dimension_exhausted) > 1:
            text += "; no eligible node has the cpu and the memory asked at once"
        if self.coalesced_failures:
            text += f" ({self.coalesced_failures + 1} instances could not be placed)"
        return text


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    namespace: str = "default"
    priority: int = 50
    type: str = "service"
    triggered_by: TriggeredBy
    job_id: str
    job_modify_index: int = 0
    node_id: str | None = None
    status: EvalStatus = EvalStatus.PENDING
    status_description: str = ""
    wait_until: float | None = None
    previous_eval: str | None = None
    next_eval: str | None = None
    blocked_eval: str | None = None
    failed_tg_allocs: dict[str, AllocMetric] = Field(default_factory=dict)
    force_reschedule: bool = False
    """Replace the job's failed allocations now, whatever their reschedule policy and
    delay say (Nomad's ``job eval -force-reschedule``): a person asked for it, as
    ``podium compose up`` does for services that failed, like ``docker compose up``."""
    queued_allocations: dict[str, int] = Field(default_factory=dict)
    plan_summary: dict[str, int] = Field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0
    create_time: float = 0.0
    modify_time: float = 0.0

    def terminal(self) -> bool:
        return self.status in (EvalStatus.COMPLETE, EvalStatus.FAILED, EvalStatus.CANCELED)
