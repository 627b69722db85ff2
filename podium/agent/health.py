"""Deployment health of one allocation, judged on its node (Nomad's alloc health watcher).

An allocation placed by a deployment is *healthy* once every task has been
running (and, with ``health_check: checks``, every check of the group's
services passing) without interruption for ``min_healthy_time``; it is
*unhealthy* when a task fails, or when ``healthy_deadline`` passes first.  The
verdict is given once and reported to the server with the allocation's
status; the server's deployment watcher acts on it.

:class:`HealthTracker` is pure: the runner feeds it task states and check
results with the time, and it answers the verdict (if any) and when to look
again.  The agent arms a timer for that moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from podium.models import (
    Allocation,
    AllocHealth,
    CheckResult,
    CheckStatus,
    JobSpec,
    TaskState,
    TaskStateName,
    format_duration,
)


@dataclass
class HealthTracker:
    min_healthy_time: float
    healthy_deadline: float
    use_checks: bool
    expected_checks: frozenset[str]
    """The check names the group's services declare (results must exist for each)."""
    started: float
    canary: bool = False
    healthy_since: float | None = None
    restarts_seen: int = 0
    verdict: AllocHealth | None = None

    @classmethod
    def for_alloc(cls, alloc: Allocation, spec: JobSpec, now: float) -> HealthTracker | None:
        """A tracker when ``alloc`` belongs to a deployment, else None."""
        if alloc.deployment_id is None or alloc.group not in spec.groups:
            return None
        strategy = spec.update_strategy(alloc.group)
        if strategy is None:
            return None
        group = spec.groups[alloc.group]
        names = frozenset(c.name for s in group.services for c in s.checks)
        known = alloc.deployment_status
        tracker = cls(
            min_healthy_time=strategy.min_healthy_time,
            healthy_deadline=strategy.healthy_deadline,
            use_checks=strategy.health_check == "checks",
            expected_checks=names,
            started=now,
            canary=known.canary if known is not None else False,
        )
        if known is not None and known.healthy is not None:
            tracker.verdict = known  # judged before this agent restarted
        return tracker

    def _decide(self, now: float, healthy: bool, why: str) -> None:
        self.verdict = AllocHealth(
            healthy=healthy, timestamp=now, canary=self.canary, description=why
        )

    def observe(
        self,
        now: float,
        tasks: Mapping[str, TaskState],
        checks: Mapping[str, CheckResult],
    ) -> float | None:
        """Update the verdict from what the node sees now; the time to look again, if any."""
        if self.verdict is not None:
            return None
        for name, state in sorted(tasks.items()):
            if state.failed:
                self._decide(now, False, f"task {name} failed")
                return None
        restarts = sum(s.restarts for s in tasks.values())
        if restarts != self.restarts_seen:
            self.restarts_seen = restarts
            self.healthy_since = None  # a restart starts the healthy time again
        waiting = self._waiting_for(tasks, checks)
        if not waiting:
            if self.healthy_since is None:
                # Healthy since the last task started (task states), or since it is seen
                # passing its checks (a check's passing streak has no start time of its own).
                started = [st.started_at for st in tasks.values() if st.started_at is not None]
                by_state = not self.use_checks or (not self.expected_checks and not checks)
                since = max(started) if started and by_state else now
                self.healthy_since = min(since, now)
            if now - self.healthy_since >= self.min_healthy_time:
                self._decide(
                    now,
                    True,
                    f"healthy for {format_duration(self.min_healthy_time)}",
                )
                return None
        else:
            self.healthy_since = None
        deadline = self.started + self.healthy_deadline
        if now >= deadline:
            self._decide(
                now,
                False,
                f"not healthy within healthy_deadline "
                f"({format_duration(self.healthy_deadline)}): {waiting or 'not healthy long enough'}",
            )
            return None
        if self.healthy_since is not None:
            return min(deadline, self.healthy_since + self.min_healthy_time)
        return deadline

    def _waiting_for(
        self, tasks: Mapping[str, TaskState], checks: Mapping[str, CheckResult]
    ) -> str:
        """What keeps the allocation from counting as healthy now ('' when nothing)."""
        for name, state in sorted(tasks.items()):
            if state.state != TaskStateName.RUNNING:
                return f"task {name} is {state.state.value}"
        if not self.use_checks:
            return ""
        for name in sorted(self.expected_checks):
            result = checks.get(name)
            if result is None:
                return f"check {name} has not run"
            if result.status != CheckStatus.PASSING:
                detail = f" ({result.output.strip()[:80]})" if result.output.strip() else ""
                return f"check {name} is {result.status.value}{detail}"
        for name, result in sorted(checks.items()):
            if result.status != CheckStatus.PASSING and name not in self.expected_checks:
                return f"check {name} is {result.status.value}"
        return ""
