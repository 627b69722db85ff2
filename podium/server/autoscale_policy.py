"""The autoscaler's decision, as a pure function: (policy, state, reading, now) → decision.

Kubernetes' Horizontal Pod Autoscaler's algorithm, with its anti-flapping rules:

1. ``desired = ceil(count * value / target)``: the count that would bring the per-instance
   value to the target (with no instance yet and a query metric: ``ceil(value / target)``);
2. no change while ``|value / target - 1| <= tolerance`` (10% by default: HPA's
   ``--horizontal-pod-autoscaler-tolerance``);
3. instances without a sample (placed, not yet running) count, as in HPA, as using
   nothing when the group would grow and as being exactly at the target when it would
   shrink; when that turns the direction round, or brings the value within tolerance,
   nothing changes;
4. the recommendation is clamped to ``[min, max]``;
5. growing happens at once; shrinking goes to the *highest* recommendation of the last
   ``cooldown`` (HPA's scale-down stabilisation window, here the cooldown), and never
   before the autoscaler has watched the group for a whole cooldown (a new leader does
   not shrink on the first sample it sees);
6. no change within ``cooldown`` of the group's last change (the autoscaler's, or a
   manual ``podium job scale``), except to bring a count back within its bounds.

The state (the window of recommendations, when watching began) is the caller's to keep;
the function returns the next one.  Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from podium.models.scaling import Scaling


@dataclass(frozen=True)
class Reading:
    """A metric's value: ``total`` over ``samples`` instances (cpu, memory: per-allocation
    percents of the reservation), or one value (a query: ``samples=1``, ``per_instance``
    False, so missing instances are not filled in)."""

    total: float
    samples: int
    per_instance: bool = True

    @property
    def value(self) -> float:
        return self.total / self.samples if self.samples else 0.0


@dataclass(frozen=True)
class GroupState:
    count: int
    """The group's count now (the job's current spec)."""
    observed_since: float
    """When the autoscaler began watching the group (this leader, this policy)."""
    last_change: float | None = None
    """When the group's count last changed (a scaling event); None: never."""
    window: tuple[tuple[float, int], ...] = ()
    """(time, recommendation) of the evaluations within the last cooldown."""


@dataclass(frozen=True)
class Decision:
    count: int | None
    """The new count; None: keep it."""
    reason: str
    window: tuple[tuple[float, int], ...] = field(default=())
    recommendation: int | None = None
    """The clamped recommendation of this evaluation (None when there was none)."""


def _pct(metric: str, value: float) -> str:
    return f"{value:.0f}%" if metric in ("cpu", "memory") else f"{value:g}"


def decide(scaling: Scaling, state: GroupState, reading: Reading | None, now: float) -> Decision:
    """The decision for one evaluation of one group (module docstring)."""
    policy = scaling.policy
    count = state.count
    if policy is None:
        return Decision(None, "no scaling policy")
    if not scaling.enabled:
        return Decision(None, "scaling disabled (scaling.enabled: false)")
    lo, hi = scaling.min, scaling.max
    if not lo <= count <= hi:
        to = scaling.clamp(count)
        return Decision(to, f"autoscaler: count {count} outside [{lo}, {hi}] -> {to}")
    cooldown = policy.cooldown
    window = tuple((t, r) for t, r in state.window if t > now - cooldown)
    if reading is None or reading.samples == 0:
        return Decision(None, "no metric value", window)

    metric, target, tol = policy.metric, policy.target, policy.tolerance
    value = reading.value
    ratio = value / target
    base = count if count > 0 or reading.per_instance else 1
    if abs(ratio - 1.0) <= tol:
        raw = count
    else:
        raw = math.ceil(base * ratio - 1e-9)
        missing = count - reading.samples if reading.per_instance else 0
        if missing > 0:
            filled = value * reading.samples
            # growing, the missing ones use nothing yet; shrinking, exactly the target
            filled_value = (filled if ratio > 1 else filled + missing * target) / count
            new_ratio = filled_value / target
            if abs(new_ratio - 1.0) <= tol or (new_ratio > 1) != (ratio > 1):
                raw = count
            else:
                raw = math.ceil(count * new_ratio - 1e-9)
    rec = scaling.clamp(raw)
    window = (*window, (now, rec))
    plural = "" if reading.samples == 1 else "s"
    over = f" over {reading.samples} allocation{plural}" if reading.per_instance else ""
    said = f"{metric} {_pct(metric, value)} of target {_pct(metric, target)}{over}"

    if rec > count:
        to = rec
    elif rec < count:
        if now - state.observed_since < cooldown:
            return Decision(None, f"{said}: watched for less than the cooldown", window, rec)
        to = min(count, max(r for _, r in window))
    else:
        why = "within tolerance" if raw == count else "at its bounds"
        return Decision(None, f"{said}: {why}", window, rec)
    if to == count:
        return Decision(None, f"{said}: holding {count} (stabilisation window)", window, rec)
    if state.last_change is not None and now - state.last_change < cooldown:
        left = cooldown - (now - state.last_change)
        return Decision(None, f"{said}: cooldown ({left:.1f}s left)", window, rec)
    bound = " (max)" if to == hi else " (min)" if to == lo else ""
    return Decision(to, f"autoscaler: {said} -> {to}{bound}", window, rec)
