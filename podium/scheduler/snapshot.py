"""What a scheduler may read: an immutable view of the cluster at one index.

The state store's snapshot implements this protocol; the test harness
implements it over plain dictionaries.  Schedulers never write through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from podium.models import Allocation, Deployment, Evaluation, Job, JobSpec, Node
from podium.models.schedconfig import SchedulerConfiguration


class Snapshot(Protocol):
    @property
    def index(self) -> int:
        """The store index this snapshot reflects."""
        ...

    def job(self, job_id: str, namespace: str = "default") -> Job | None: ...

    def job_spec(self, job_id: str, version: int, namespace: str = "default") -> JobSpec | None:
        """The spec of one stored version (for allocations of older versions)."""
        ...

    def nodes(self) -> Iterable[Node]: ...

    def node(self, node_id: str) -> Node | None: ...

    def allocs_by_job(self, job_id: str, namespace: str = "default") -> list[Allocation]: ...

    def allocs_by_node(self, node_id: str) -> list[Allocation]: ...

    def node_usage(self, node_id: str) -> tuple[int, int]:
        """(cpu, memory) held on the node by allocations whose tasks have not exited,
        kept up to date by the store on every write (reading it is O(1))."""
        ...

    def evaluation(self, eval_id: str) -> Evaluation | None:
        """An evaluation by id (the reconciler checks that a follow-up still waits)."""
        ...

    def latest_deployment(self, job_id: str, namespace: str = "default") -> Deployment | None:
        """The job's newest deployment (any status), or None."""
        ...

    def scheduler_config(self) -> SchedulerConfiguration:
        """The cluster's scheduler configuration (the defaults until one is stored).
        Read only when a placement found no node (preemption), so it costs a plan
        that fits nothing."""
        ...
