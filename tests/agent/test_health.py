"""Deployment health of one allocation, judged from task states and checks with the time."""

from __future__ import annotations

from typing import Any

from podium.agent.health import HealthTracker
from podium.models import (
    Allocation,
    AllocHealth,
    CheckResult,
    CheckStatus,
    JobSpec,
    TaskState,
    TaskStateName,
)

from .conftest import make_alloc


def _spec(health_check: str = "checks", checks: bool = True) -> JobSpec:
    group: dict[str, Any] = {
        "count": 2,
        "update": {
            "max_parallel": 1,
            "health_check": health_check,
            "min_healthy_time": "10s",
            "healthy_deadline": "1m",
        },
        "network": {"ports": {"http": {}}},
        "tasks": {"web": {"driver": "mock"}},
    }
    if checks:
        group["services"] = [
            {"name": "web", "port": "http", "checks": [{"type": "http", "path": "/"}]}
        ]
    return JobSpec.model_validate({"job": "j", "groups": {"g": group}})


def _alloc(deployment: str | None = "d1", status: AllocHealth | None = None) -> Allocation:
    return make_alloc("a1", "j", job_version=1, deployment_id=deployment, deployment_status=status)


RUNNING = {"web": TaskState(state=TaskStateName.RUNNING)}
PASSING = {"web-http-0": CheckResult(name="web-http-0", service="web", status=CheckStatus.PASSING)}
FAILING = {
    "web-http-0": CheckResult(
        name="web-http-0", service="web", status=CheckStatus.CRITICAL, output="HTTP 500"
    )
}


def test_no_tracker_outside_a_deployment() -> None:
    assert HealthTracker.for_alloc(_alloc(deployment=None), _spec(), 0.0) is None


def test_healthy_after_min_healthy_time_of_running_with_passing_checks() -> None:
    t = HealthTracker.for_alloc(_alloc(), _spec(), 0.0)
    assert t is not None
    assert t.observe(1.0, RUNNING, {}) == 60.0  # check not run yet: wait for the deadline
    assert t.observe(2.0, RUNNING, PASSING) == 12.0
    assert t.observe(12.0, RUNNING, PASSING) is None
    assert t.verdict is not None and t.verdict.healthy is True


def test_a_failing_check_restarts_the_healthy_time() -> None:
    t = HealthTracker.for_alloc(_alloc(), _spec(), 0.0)
    assert t is not None
    t.observe(1.0, RUNNING, PASSING)
    t.observe(5.0, RUNNING, FAILING)
    assert t.observe(6.0, RUNNING, PASSING) == 16.0
    t.observe(11.0, RUNNING, PASSING)
    assert t.verdict is None


def test_unhealthy_at_the_deadline_saying_why() -> None:
    t = HealthTracker.for_alloc(_alloc(), _spec(), 0.0)
    assert t is not None
    t.observe(1.0, RUNNING, FAILING)
    t.observe(60.0, RUNNING, FAILING)
    assert t.verdict is not None and t.verdict.healthy is False
    assert "healthy_deadline (1m)" in t.verdict.description
    assert "check web-http-0 is critical (HTTP 500)" in t.verdict.description


def test_failed_task_is_unhealthy_at_once() -> None:
    t = HealthTracker.for_alloc(_alloc(), _spec(), 0.0)
    assert t is not None
    t.observe(1.0, {"web": TaskState(state=TaskStateName.DEAD, failed=True)}, {})
    assert t.verdict is not None and t.verdict.healthy is False
    assert t.verdict.description == "task web failed"


def test_restart_resets_the_healthy_time() -> None:
    t = HealthTracker.for_alloc(_alloc(), _spec(health_check="task_states"), 0.0)
    assert t is not None
    t.observe(0.0, RUNNING, {})
    restarted = {"web": TaskState(state=TaskStateName.RUNNING, restarts=1)}
    assert t.observe(8.0, restarted, {}) == 18.0


def test_task_states_ignore_checks() -> None:
    t = HealthTracker.for_alloc(_alloc(), _spec(health_check="task_states"), 0.0)
    assert t is not None
    t.observe(0.0, RUNNING, FAILING)
    t.observe(10.0, RUNNING, FAILING)
    assert t.verdict is not None and t.verdict.healthy is True


def test_a_verdict_the_server_has_survives_an_agent_restart() -> None:
    known = AllocHealth(healthy=True, timestamp=5.0, canary=True)
    t = HealthTracker.for_alloc(_alloc(status=known), _spec(), 100.0)
    assert t is not None and t.verdict == known
    assert t.observe(101.0, {"web": TaskState(state=TaskStateName.PENDING)}, {}) is None


def test_canary_flag_is_kept_on_the_verdict() -> None:
    t = HealthTracker.for_alloc(_alloc(status=AllocHealth(canary=True)), _spec(checks=False), 0.0)
    assert t is not None
    t.observe(0.0, RUNNING, {})
    t.observe(10.0, RUNNING, {})
    assert t.verdict is not None and t.verdict.canary and t.verdict.healthy


def test_task_states_count_from_the_task_start_not_from_when_it_is_seen() -> None:
    t = HealthTracker.for_alloc(_alloc(), _spec(health_check="task_states"), 0.0)
    assert t is not None
    running = {"web": TaskState(state=TaskStateName.RUNNING, started_at=1.0)}
    assert t.observe(3.0, running, {}) == 11.0
    assert t.observe(11.0, running, {}) is None
    assert t.verdict is not None and t.verdict.healthy
