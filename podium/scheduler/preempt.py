"""Preemption: when a placement fits nowhere, which lower-priority allocations to stop.

Consulted only after the ranker (or the system scheduler's per-node check) found no
node with room, and only when the cluster's scheduler configuration lets the job's
type preempt (:class:`~podium.models.schedconfig.PreemptionConfig`), so a plan whose
placements all fit never pays for it: not even the configuration is read.

The rules (Nomad's, with the order of preference written down):

* only allocations of jobs whose priority is at least
  :data:`~podium.models.schedconfig.PRIORITY_DELTA` (10) below the placing job's are
  candidates: never a job within 10 points, never a higher one;
* only allocations still meant to run and holding resources, and none another
  preemption of the same plan already took;
* a node is a candidate when it passes every rule of the group but room (static
  filters, ``distinct_*``, ``max_per_node``, static ports): preemption frees cpu and
  memory, nothing else;
* on each candidate node the set of victims is the smallest by this order, compared
  element by element:

  1. the **highest priority** in the set, lowest first: an allocation of priority
     ``p`` is taken only when everything below ``p`` on that node cannot free enough;
  2. the **number** of allocations, fewest first;
  3. the **sum of their priorities**, lowest first (of two equally small sets, the
     one of lower-priority jobs);
  4. the **overshoot**: what the set frees beyond the need, as fractions of the
     node's cpu and memory capacity added together, least first;
  5. then the victims' ids (so the same inputs give the same plan);

* between nodes the same order decides, then the node id.  Within a set, of
  allocations alike in priority and resources, the most recently created go first
  (they have done the least work).

Finding the exact smallest set is a small covering problem; the search enumerates
sets by size over *kinds* of allocation (same priority, cpu and memory), which keeps
it tiny for the usual node of a few job shapes.  Past :data:`SEARCH_BUDGET` sets on a
node it stops: the best set seen of the size being tried wins, or, when none was seen, a
greedy pick (lowest priority first, larger first, then drops whatever the rest covers
without), which is what Nomad does throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from podium.models import Allocation, DesiredStatus, EvalStatus, Evaluation, Node, TriggeredBy
from podium.models.plan import Preemption
from podium.models.schedconfig import PRIORITY_DELTA
from podium.scheduler.evals import follow_up_eval
from podium.scheduler.feasible import GroupNeeds, NodeState, NodeUsage, PlacementState, node_info
from podium.scheduler.snapshot import Snapshot

SEARCH_BUDGET = 2000
"""Candidate sets examined per node before the greedy pick takes over."""

PREEMPTED = "preempted"
"""Prefix of a preempted allocation's ``desired_description``."""

Key = tuple[int, int, int, float, tuple[str, ...]]
"""(highest priority, count, sum of priorities, overshoot, ids): smaller is preferred."""


@dataclass(frozen=True, slots=True)
class Victim:
    """An allocation that may be preempted, with its job's priority."""

    alloc: Allocation
    priority: int

    @property
    def cpu(self) -> int:
        return self.alloc.resources.cpu

    @property
    def memory(self) -> int:
        return self.alloc.resources.memory


def _order(v: Victim) -> tuple[int, int, float, str]:
    """Preference within a kind: newest first (then by id)."""
    return (v.priority, -v.alloc.create_index, -v.alloc.create_time, v.alloc.id)


def _key(
    chosen: Sequence[Victim], need_cpu: int, need_memory: int, cap_cpu: int, cap_memory: int
) -> Key:
    freed_cpu = sum(v.cpu for v in chosen)
    freed_memory = sum(v.memory for v in chosen)
    over = 0.0
    if cap_cpu:
        over += max(0, freed_cpu - max(need_cpu, 0)) / cap_cpu
    if cap_memory:
        over += max(0, freed_memory - max(need_memory, 0)) / cap_memory
    return (
        max(v.priority for v in chosen),
        len(chosen),
        sum(v.priority for v in chosen),
        round(over, 9),
        tuple(sorted(v.alloc.id for v in chosen)),
    )


def _min_count(sizes: list[int], need: int) -> int:
    """How many of ``sizes`` (largest first) it takes at least to reach ``need``."""
    if need <= 0:
        return 0
    total = 0
    for i, size in enumerate(sorted(sizes, reverse=True)):
        total += size
        if total >= need:
            return i + 1
    return len(sizes) + 1


def choose_victims(
    candidates: Iterable[Victim],
    need_cpu: int,
    need_memory: int,
    cap_cpu: int,
    cap_memory: int,
    budget: int = SEARCH_BUDGET,
    beat: Key | None = None,
) -> tuple[Key, list[Victim]] | None:
    """The preferred set of ``candidates`` that frees at least ``need_cpu`` and
    ``need_memory`` (see the module's docstring for the order), or None if even all of
    them cannot, or (given ``beat``, the best set found elsewhere) if no set here can
    beat it on priority and count, which is known before any search.  Pure: the same
    candidates give the same set."""
    by_priority = sorted(candidates, key=_order)
    if not by_priority:
        return None
    # 1. the lowest priority level whose allocations (and all below) free enough
    cpu = memory = 0
    level: int | None = None
    for v in by_priority:
        cpu += v.cpu
        memory += v.memory
        if cpu >= need_cpu and memory >= need_memory:
            level = v.priority
            break
    if level is None:
        return None
    pool = [v for v in by_priority if v.priority <= level]
    kinds: dict[tuple[int, int, int], list[Victim]] = {}
    for v in pool:
        kinds.setdefault((v.priority, v.cpu, v.memory), []).append(v)
    groups = sorted(kinds.items(), key=lambda kv: (kv[0][0], -kv[0][1], -kv[0][2]))
    shapes = [shape for shape, _ in groups]
    counts = [len(vs) for _, vs in groups]
    low = max(
        1,
        _min_count([v.cpu for v in pool], need_cpu),
        _min_count([v.memory for v in pool], need_memory),
    )
    if beat is not None and (level, low) > beat[:2]:
        return None  # every set here is worse than one found elsewhere: skip the search
    left = budget
    picks = [0] * len(groups)
    best: tuple[Key, list[Victim]] | None = None

    def visit(i: int, remaining: int, got_cpu: int, got_memory: int) -> bool:
        """Try every way to take ``remaining`` more from kinds ``i``...; False when the
        budget ran out (``picks[i:]`` are back to 0 either way)."""
        nonlocal best, left
        if remaining == 0:
            left -= 1
            if got_cpu >= need_cpu and got_memory >= need_memory:
                chosen = [v for (n, (_, vs)) in zip(picks, groups, strict=True) for v in vs[:n]]
                key = _key(chosen, need_cpu, need_memory, cap_cpu, cap_memory)
                if best is None or key < best[0]:
                    best = (key, chosen)
            return left > 0
        if i == len(groups):
            return True
        _, c, m = shapes[i]
        for n in range(min(counts[i], remaining), -1, -1):
            picks[i] = n
            if not visit(i + 1, remaining - n, got_cpu + n * c, got_memory + n * m):
                picks[i] = 0
                return False
        picks[i] = 0
        return True

    for size in range(low, len(pool) + 1):
        finished = visit(0, size, 0, 0)
        if best is not None:
            return best
        if not finished:
            break
    return _greedy(pool, need_cpu, need_memory, cap_cpu, cap_memory)


def _greedy(
    pool: list[Victim], need_cpu: int, need_memory: int, cap_cpu: int, cap_memory: int
) -> tuple[Key, list[Victim]] | None:
    """Lowest priority first and, within a priority, the larger first, until enough is
    free; then drop (highest priority first) any the others cover without."""
    ordered = sorted(
        pool,
        key=lambda v: (
            v.priority,
            -(v.cpu / cap_cpu if cap_cpu else 0) - (v.memory / cap_memory if cap_memory else 0),
            v.alloc.id,
        ),
    )
    chosen: list[Victim] = []
    cpu = memory = 0
    for v in ordered:
        if cpu >= need_cpu and memory >= need_memory:
            break
        chosen.append(v)
        cpu += v.cpu
        memory += v.memory
    if cpu < need_cpu or memory < need_memory:
        return None
    for v in sorted(chosen, key=lambda v: (-v.priority, v.cpu + v.memory, v.alloc.id)):
        if cpu - v.cpu >= need_cpu and memory - v.memory >= need_memory:
            chosen.remove(v)
            cpu -= v.cpu
            memory -= v.memory
    return _key(chosen, need_cpu, need_memory, cap_cpu, cap_memory), chosen


class Preemptor:
    """Finds room by preemption for one plan; remembers what the plan already took.

    Built lazily by a scheduler the first time a placement fits nowhere, and only when
    the job's type may preempt.  ``priority`` is the placing job's.
    """

    def __init__(self, snapshot: Snapshot, usage: NodeUsage, priority: int) -> None:
        self._snapshot = snapshot
        self._usage = usage
        self.priority = priority
        self.taken: set[str] = set()
        """Allocations this plan preempts already (never chosen twice)."""
        self._priorities: dict[tuple[str, str], int | None] = {}

    def _job_priority(self, alloc: Allocation) -> int | None:
        key = (alloc.namespace, alloc.job_id)
        try:
            return self._priorities[key]
        except KeyError:
            job = self._snapshot.job(alloc.job_id, alloc.namespace)
            prio = self._priorities[key] = job.priority if job is not None else None
            return prio

    def candidates(self, node_id: str) -> list[Victim]:
        """The allocations on ``node_id`` this plan may preempt."""
        ceiling = self.priority - PRIORITY_DELTA
        out: list[Victim] = []
        for alloc in self._snapshot.allocs_by_node(node_id):
            if (
                alloc.desired_status != DesiredStatus.RUN
                or not alloc.uses_resources()
                or alloc.id in self.taken
            ):
                continue
            prio = self._job_priority(alloc)
            if prio is not None and prio <= ceiling:
                out.append(Victim(alloc, prio))
        return out

    def on_node(
        self, st: NodeState, cpu: int, memory: int, beat: Key | None = None
    ) -> tuple[Key, list[Victim]] | None:
        """The preferred victims on one node for an instance of ``cpu``/``memory`` (None
        too when ``beat``, a set found on another node, is certainly better)."""
        need_cpu = st.used_cpu + cpu - st.cap_cpu
        need_memory = st.used_memory + memory - st.cap_memory
        if need_cpu <= 0 and need_memory <= 0:
            return None  # it fits: nothing to preempt (the caller asked for no reason)
        if cpu > st.cap_cpu or memory > st.cap_memory:
            return None  # bigger than the node: nothing stopped would help
        return choose_victims(
            self.candidates(st.id), need_cpu, need_memory, st.cap_cpu, st.cap_memory, beat=beat
        )

    def select(
        self,
        nodes: Iterable[Node],
        needs: GroupNeeds,
        state: PlacementState,
        replaces: str | None,
    ) -> tuple[NodeState, list[Victim]] | None:
        """Of every node that passes the group's rules but lacks room, the one where
        the preferred victims are smallest (module docstring), or None."""
        best: tuple[Key, str, NodeState, list[Victim]] | None = None
        dynamic = needs.placement_dependent
        for node in nodes:
            info = node_info(node)
            if not info.schedulable or needs.static_reason(node, info) is not None:
                continue
            if dynamic and state.dynamic_reason(needs, node, replaces) is not None:
                continue
            st = self._usage.state(node, info)
            found = self.on_node(st, needs.cpu, needs.memory, best[0] if best else None)
            if found is None:
                continue
            key, victims = found
            if best is None or (key, node.id) < (best[0], best[1]):
                best = (key, node.id, st, victims)
        if best is None:
            return None
        return best[2], best[3]

    def take(
        self, st: NodeState, victims: list[Victim], by_alloc: str, by_job: str
    ) -> list[Preemption]:
        """Book ``victims`` as preempted on ``st`` (their resources leave the node's
        usage for the rest of the plan) and return the plan's records of them."""
        out: list[Preemption] = []
        for v in victims:
            a = v.alloc
            self.taken.add(a.id)
            st.used_cpu -= a.resources.cpu
            st.used_memory -= a.resources.memory
            out.append(
                Preemption(
                    alloc_id=a.id,
                    node_id=a.node_id,
                    job_id=a.job_id,
                    namespace=a.namespace,
                    job_version=a.job_version,
                    priority=v.priority,
                    group=a.group,
                    name=a.name,
                    cpu=a.resources.cpu,
                    memory=a.resources.memory,
                    preempted_by_alloc=by_alloc,
                    preempted_by_job=by_job,
                    description=(
                        f"{PREEMPTED} by allocation {by_alloc} of job {by_job!r} "
                        f"(priority {self.priority} over {v.priority})"
                    ),
                )
            )
        return out


def preemption_evals(
    snapshot: Snapshot,
    preemptions: Iterable[Preemption],
    cause: Evaluation,
    new_id: Callable[[], str],
    now: float,
) -> list[Evaluation]:
    """One pending evaluation per job that lost allocations, so they are replaced by
    their own policy (elsewhere if there is room, else blocked like any placement that
    does not fit)."""
    seen: set[tuple[str, str]] = set()
    out: list[Evaluation] = []
    for p in preemptions:
        key = (p.namespace, p.job_id)
        if key in seen:
            continue
        seen.add(key)
        job = snapshot.job(p.job_id, p.namespace)
        if job is None:
            continue
        out.append(
            follow_up_eval(
                job,
                cause,
                new_id(),
                now,
                triggered_by=TriggeredBy.PREEMPTION,
                status=EvalStatus.PENDING,
                why=f"created to replace allocations preempted by job {cause.job_id!r}",
            )
        )
    return out
