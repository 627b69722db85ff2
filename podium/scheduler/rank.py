"""Ranking: of the nodes that can take an instance, which one should?

The score is Nomad's bin-packing "best fit v3": a node scores higher the fuller
it would be *after* the placement, so small jobs fill partly used machines and
whole machines stay free for big ones.  A job anti-affinity penalty pulls the
score down on nodes that already run instances of the same group, so replicas
spread out when nodes are otherwise equally packed (losing one node then loses
one replica, not all of them).

Scoring every node for every placement would make a placement cost O(cluster).
Like Nomad, we visit nodes in a shuffled order (seeded by the eval id, so the
same inputs give the same plan) and stop after ``limit`` feasible candidates:
``max(2, ceil(log2(n)))`` for service jobs, 2 for batch jobs (the "power of two
choices", which is nearly as good as a full scan for throughput work).  The
walk resumes where the previous placement stopped, so consecutive placements
look at different nodes instead of piling onto the same few.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from podium.models import Node
from podium.scheduler.feasible import (
    GroupNeeds,
    MetricCounter,
    NodeState,
    NodeUsage,
    PlacementState,
    node_info,
)

BINPACK_MAX_SCORE = 18.0
"""The best raw fit score: a node left exactly full (10**0 + 10**0 = 2; 20 - 2 = 18)."""

SKIP_SCORE_THRESHOLD = 0.0
"""Candidates scoring below this (only penalised ones can) are set aside at first..."""

MAX_SKIP = 3
"""...up to this many, so a penalised node is chosen only when better ones run out."""


def binpack_score(cap_cpu: int, cap_memory: int, used_cpu: int, used_memory: int) -> float:
    """Best-fit score in [0, 1] for a node that would use ``used_*`` of ``cap_*``.

    ``10 ** free_fraction`` grows steeply as a node empties, so the sum over
    cpu and memory rewards nodes that end up full in *both* dimensions more
    than nodes full in one and idle in the other.
    """
    free_cpu = 1.0 - used_cpu / cap_cpu if cap_cpu else 0.0
    free_memory = 1.0 - used_memory / cap_memory if cap_memory else 0.0
    raw = 20.0 - (math.pow(10.0, free_cpu) + math.pow(10.0, free_memory))
    if raw > BINPACK_MAX_SCORE:
        raw = BINPACK_MAX_SCORE
    elif raw < 0.0:
        raw = 0.0
    return raw / BINPACK_MAX_SCORE


def with_anti_affinity(fit: float, collisions: int, desired: int) -> float:
    """Combine the fit with the job anti-affinity penalty, as Nomad averages its scores.

    The penalty ``-(collisions + 1) / desired`` is large for small groups (two
    replicas of a count-2 group on one node is bad) and fades for big ones
    (the 40th replica on a node of a count-1000 group hardly matters), so
    bin-packing still wins when spreading would waste capacity.
    """
    if collisions <= 0:
        return fit
    return (fit - (collisions + 1) / max(desired, 1)) / 2.0


def spread_score(needs: GroupNeeds, state: PlacementState, node: Node, desired: int) -> float:
    """How much placing one more instance on ``node`` helps the group's spread blocks: [-1, 1].

    Each block's boost is weighted by its share of the blocks' total weight.
    With targets, a value's desired count is its percent of ``desired``
    (values not named share what the percents leave, else get -1) and the
    boost is ``(wanted - used_after) / wanted``.  Without targets the aim is
    an even spread, judged as Nomad does from the values in use: a value
    below the least used one is boosted, the most used penalised, and when
    all are even every node scores -1 alike.  A node without the attribute
    scores -1.
    """
    total = 0.0
    weight_sum = needs.spread_total
    for rule in needs.spreads:
        share = rule.weight / weight_sum
        value = state.value_of(rule.attribute, node)
        if value is None:
            total -= share
            continue
        counts = state.value_counts(needs.name, rule.attribute)
        used = counts.get(value, 0)
        if rule.targets:
            pct = rule.targets.get(value)
            if pct is None:
                pct = rule.targets.get("*")
            wanted = (pct or 0.0) * desired
            if wanted <= 0.0:
                total -= share
                continue
            total += share * (wanted - (used + 1)) / wanted
            continue
        if not counts:
            continue  # nothing placed yet: every value is as good
        low = min(counts.values())
        high = max(counts.values())
        if used < low:
            boost = 1.0 if low == 0 or used == 0 else (low - used) / low
        elif used > low:
            boost = (low - used) / low if low else -1.0
        elif low == high:
            boost = -1.0
        else:
            boost = (high - low) / low if low else 1.0
        total += share * max(-1.0, min(1.0, boost))
    return total


def default_candidate_limit(n_nodes: int, *, batch: bool) -> int:
    """How many feasible nodes to score per placement when the caller does not say."""
    if batch or n_nodes <= 0:
        return 2
    return max(2, math.ceil(math.log2(n_nodes)))


class NodeOrder:
    """The nodes in a seeded random order, shuffled lazily and visited in a cycle.

    A full shuffle of 5,000 nodes per evaluation would cost more than the
    placements themselves when an evaluation places only a few instances, so
    this runs Fisher-Yates one step at a time: position ``i`` is fixed the first
    time it is asked for.  The resulting order is a uniform shuffle (to within the
    float resolution of ``random()``).
    """

    __slots__ = ("_done", "_items", "_rng")

    def __init__(self, nodes: Sequence[Node], seed: str) -> None:
        self._items = list(nodes)
        self._rng = random.Random(seed)
        self._done = 0

    def __len__(self) -> int:
        return len(self._items)

    def at(self, i: int) -> Node:
        items = self._items
        done = self._done
        if done <= i:
            n = len(items)
            rand = self._rng.random
            while done <= i:
                # int(random() * k) rather than randrange(k): 5x cheaper, and uniform
                # enough for a shuffle (the bias is below 2**-40 for these sizes)
                j = done + int(rand() * (n - done))
                items[done], items[j] = items[j], items[done]
                done += 1
            self._done = done
        return items[i]


class PlacementGroup:
    """Per-group ranking state: what it needs and where its instances already run."""

    __slots__ = ("collisions", "desired", "needs", "state")

    def __init__(self, needs: GroupNeeds, desired: int, state: PlacementState) -> None:
        self.needs = needs
        self.desired = desired
        self.state = state
        self.collisions = state.group_counts(needs.name)
        """Node id -> instances of this group that will keep running there (and placed so far)."""


class Ranker:
    """Picks a node per placement and books the resources it takes.

    One ranker serves a whole schedule call: its walk position and the
    :class:`NodeUsage` it updates carry over between groups, so a plan placing
    two groups never double-books a node.
    """

    def __init__(self, nodes: Sequence[Node], usage: NodeUsage, seed: str, limit: int) -> None:
        self._order = NodeOrder(nodes, seed)
        self._usage = usage
        self._limit = max(1, limit)
        self._pos = 0

    def select(
        self, group: PlacementGroup, metric: MetricCounter, replaces: str | None = None
    ) -> NodeState | None:
        """The best of up to ``limit`` feasible nodes, with its resources reserved; None if none fits.

        Rejections are counted into ``metric``.  When nothing fits, every node
        has been visited once, so the metric describes the whole cluster.
        A group with affinities or spreads scores every feasible node, as in
        Nomad: a preference seen on 2 of 5,000 nodes would be no preference.
        ``replaces`` is the allocation this placement supersedes (its static
        ports do not block).
        """
        order = self._order
        n = len(order)
        if n == 0:
            return None
        needs = group.needs
        cpu = needs.cpu
        memory = needs.memory
        collisions = group.collisions
        desired = group.desired
        limit = n if needs.scored else self._limit
        usage = self._usage
        state = group.state
        dynamic = needs.placement_dependent
        affinities = bool(needs.affinities)
        spreads = bool(needs.spreads)
        devices = bool(needs.devices)

        best: NodeState | None = None
        best_score = -math.inf
        found = 0
        skipped: list[tuple[NodeState, float]] = []
        full: list[NodeState] = []  # rejected as too full: their free space, on failure
        pos = self._pos
        for _ in range(n):
            node = order.at(pos)
            pos += 1
            if pos == n:
                pos = 0
            info = node_info(node)
            if not info.schedulable:
                continue
            metric.evaluated += 1
            reason = needs.static_reason(node, info)
            if reason is not None:
                metric.filter(reason)
                continue
            st = usage.state(node, info)
            if dynamic:
                reason = state.dynamic_reason(needs, node, replaces)
                if reason is not None:
                    metric.filter(reason)
                    continue
            dim = st.exhausted(cpu, memory)
            if dim is not None:
                metric.exhaust(dim)
                full.append(st)
                continue
            if devices:
                refusal = state.devices.check(node, needs.devices)
                if refusal is not None:
                    if refusal.exhausted:
                        metric.exhaust(refusal.reason)
                    else:
                        metric.filter(refusal.reason)
                    continue
            score = binpack_score(
                st.cap_cpu, st.cap_memory, st.used_cpu + cpu, st.used_memory + memory
            )
            hits = collisions.get(st.id, 0)
            if affinities or spreads:
                # Nomad's normalisation: the mean of the scores that apply.
                total = score
                parts = 1
                if hits:
                    total -= (hits + 1) / max(desired, 1)
                    parts += 1
                if affinities:
                    bonus = needs.affinity_score(node)
                    if bonus:
                        total += bonus
                        parts += 1
                if spreads:
                    total += spread_score(needs, state, node, desired)
                    parts += 1
                score = total / parts
            elif hits:
                score = with_anti_affinity(score, hits, desired)
            if hits and score < SKIP_SCORE_THRESHOLD and len(skipped) < MAX_SKIP:
                skipped.append((st, score))
                continue
            found += 1
            if score > best_score:
                best, best_score = st, score
            if found >= limit:
                break
        self._pos = pos

        # The penalised nodes set aside are already scored, so weighing them
        # costs nothing; they win only if nothing better turned up (Nomad
        # offers them only while under the limit, which on small clusters
        # can pick a crowded node over an emptier one it has seen).
        for st, score in skipped:
            if score > best_score:
                best, best_score = st, score

        if best is not None:
            best.reserve(cpu, memory)
            state.record(needs, best.node)
        elif full:
            metric.note_free(full)
        return best
