"""Deployments end to end in one process: server, deployment watcher, agents judging health.

The mock driver runs the tasks; health is judged from task states (no checks)
with a short min_healthy_time, so a rollout takes a fraction of a second.
"""

from __future__ import annotations

from typing import Any

import pytest

from podium.errors import APIError
from podium.models import ClientStatus, DeploymentStatus, DesiredStatus, EvalStatus
from tests.server.conftest import Cluster


def _job(
    version: str, count: int = 3, start_error: str | None = None, **update: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {"run_for": "1h"}
    if start_error:
        config["start_error"] = start_error
    return {
        "job": "web",
        "update": {
            "max_parallel": 1,
            "health_check": "task_states",
            "min_healthy_time": "0.1s",
            "healthy_deadline": "3s",
            "progress_deadline": "5s",
            **update,
        },
        "groups": {
            "g": {
                "count": count,
                "restart": {"attempts": 0, "mode": "fail"},
                "reschedule": {"attempts": 0, "unlimited": False},
                "tasks": {
                    "t": {
                        "driver": "mock",
                        "env": {"VERSION": version},
                        "config": config,
                        "resources": {"cpu": 100, "memory": 64},
                    }
                },
            }
        },
    }


async def _healthy_canary(cluster: Cluster, version: int = 1) -> Any:
    """Version ``version``'s deployment once its one canary is healthy."""
    return await cluster.until(
        lambda: (
            (d := cluster.store.latest_deployment("web")) is not None
            and d.job_version == version
            and d.groups["g"].healthy_allocs == 1
            and d
        ),
        what="a healthy canary",
    )


def _versions(cluster: Cluster) -> list[str]:
    out = []
    for a in cluster.running("web"):
        spec = cluster.store.job_spec("web", a.job_version)
        assert spec is not None
        out.append(spec.groups["g"].tasks["t"].env["VERSION"])
    return sorted(out)


async def _deployed(
    cluster: Cluster, version: int, status: DeploymentStatus, timeout: float = 10.0
) -> Any:
    def done() -> Any:
        for dep in cluster.store.deployments_by_job("web"):
            if dep.job_version == version and dep.status == status:
                return dep
        return None

    return await cluster.until(
        done, timeout=timeout, what=f"deployment of v{version} {status.value}"
    )


async def test_rolling_update_one_at_a_time_until_successful(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1"))
    first = await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    assert first.groups["g"].healthy_allocs == 3
    assert cluster.store.job_versions("web")[0].stable

    seen_live: list[int] = []
    await cluster.run(_job("2"))

    def watch() -> bool:
        live = [a for a in cluster.allocs("web") if not a.client_status.terminal]
        seen_live.append(len(live))
        dep = cluster.store.latest_deployment("web")
        return (
            dep is not None and dep.job_version == 1 and dep.status == DeploymentStatus.SUCCESSFUL
        )

    await cluster.until(watch, timeout=10, what="v1 deployed")
    assert _versions(cluster) == ["2", "2", "2"]
    # one replaced at a time: never more than count + max_parallel live
    assert max(seen_live) <= 4
    job = cluster.store.job("web")
    assert job is not None and job.stable


async def test_failed_update_reverts_to_the_last_stable_version(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1", auto_revert=True))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    await cluster.run(_job("2", start_error="image is broken", auto_revert=True))
    failed = await _deployed(cluster, 1, DeploymentStatus.FAILED)
    assert "rolling back to version 0" in failed.status_description
    assert "is unhealthy" in failed.status_description
    # the revert is a new version (2) with version 0's spec, and it deploys
    await _deployed(cluster, 2, DeploymentStatus.SUCCESSFUL)
    assert _versions(cluster) == ["1", "1", "1"]
    versions = cluster.store.job_versions("web")
    assert versions[0].version == 2 and "reverted to version 0" in versions[0].description


async def test_canary_promote_rolls_the_rest(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1", canary=1))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    await cluster.run(_job("2", canary=1))
    dep = await _healthy_canary(cluster)
    assert _versions(cluster) == ["1", "1", "1", "2"]  # the canary beside the old three
    assert dep.status == DeploymentStatus.RUNNING
    await cluster.client.promote_deployment(dep.id[:8])
    await _deployed(cluster, 1, DeploymentStatus.SUCCESSFUL)
    assert _versions(cluster) == ["2", "2", "2"]


async def test_fail_removes_the_canary(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1", canary=1))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    await cluster.run(_job("2", canary=1))
    dep = await cluster.until(
        lambda: (
            (d := cluster.store.latest_deployment("web")) is not None
            and d.job_version == 1
            and d.groups["g"].placed_canaries
            and d
        ),
        what="a canary",
    )
    (canary_id,) = dep.groups["g"].placed_canaries
    await cluster.client.fail_deployment(dep.id)
    await cluster.until(
        lambda: (
            (a := cluster.store.alloc(canary_id)) is not None
            and a.desired_status == DesiredStatus.STOP
            and a.client_status == ClientStatus.COMPLETE
        ),
        what="canary stopped",
    )
    assert _versions(cluster) == ["1", "1", "1"]
    failed = cluster.store.deployment(dep.id)
    assert failed is not None and failed.status == DeploymentStatus.FAILED
    assert "failed by a person" in failed.status_description


async def test_no_progress_fails_the_deployment(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1"))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    # a version that cannot be placed (too big) never makes progress
    spec = _job("2", progress_deadline="1s", healthy_deadline="0.5s")
    spec["groups"]["g"]["tasks"]["t"]["resources"]["memory"] = 10_000_000
    await cluster.run(spec)
    failed = await _deployed(cluster, 1, DeploymentStatus.FAILED, timeout=10)
    assert "made no progress within its progress deadline (1s)" in failed.status_description
    assert _versions(cluster) == ["1", "1", "1"]


async def test_purging_the_job_cancels_then_collects_its_deployments(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1", count=1))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    await cluster.run(
        _job("2", count=1, min_healthy_time="30s", healthy_deadline="1m", progress_deadline="2m")
    )
    running = await _deployed(cluster, 1, DeploymentStatus.RUNNING)
    await cluster.client.stop_job("web", purge=True)
    await _deployed(cluster, 1, DeploymentStatus.CANCELLED)
    cancelled = cluster.store.deployment(running.id)
    assert cancelled is not None and cancelled.status_description == "cancelled: job purged"
    await cluster.until(
        lambda: all(a.client_status.terminal for a in cluster.allocs("web")),
        what="tasks stopped",
    )
    cluster.server.gc()
    assert cluster.store.deployments_by_job("web") == [] and not cluster.allocs("web")


async def test_healthy_canaries_wait_for_a_person_past_the_progress_deadline(
    cluster: Cluster,
) -> None:
    await cluster.add_agent()
    quick = {"canary": 1, "healthy_deadline": "1s", "progress_deadline": "1s"}
    await cluster.run(_job("1", **quick))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    await cluster.run(_job("2", **quick))
    dep = await _healthy_canary(cluster)
    deadline = dep.groups["g"].require_progress_by
    assert deadline is not None
    # the watcher looks once the deadline has passed (the server's clock, moved for that look
    # only: the heartbeats keep the real one)
    real_clock = cluster.server.clock
    cluster.server.clock = lambda: deadline + 1.0
    try:
        cluster.server.deployments_tick()
    finally:
        cluster.server.clock = real_clock
    waiting = cluster.store.deployment(dep.id)
    assert waiting is not None and waiting.status == DeploymentStatus.RUNNING
    await cluster.client.promote_deployment(dep.id)
    await _deployed(cluster, 1, DeploymentStatus.SUCCESSFUL)


async def test_promote_refuses_unknown_groups_and_unhealthy_canaries(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1", canary=1))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    await cluster.run(
        _job("2", canary=1, min_healthy_time="30s", healthy_deadline="1m", progress_deadline="2m")
    )
    dep = await _deployed(cluster, 1, DeploymentStatus.RUNNING)
    with pytest.raises(ValueError, match="has no group nope"):
        cluster.server.promote_deployment(dep.id, ["nope"])
    with pytest.raises(ValueError, match="0 healthy canaries of 1"):
        cluster.server.promote_deployment(dep.id)
    with pytest.raises(APIError, match="0 healthy canaries of 1") as err:
        await cluster.client.promote_deployment(dep.id)
    assert err.value.status == 400


async def test_a_failed_rollback_does_not_go_back_further(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.run(_job("1", auto_revert=True))
    await _deployed(cluster, 0, DeploymentStatus.SUCCESSFUL)
    await cluster.run(_job("2", auto_revert=True))
    await _deployed(cluster, 1, DeploymentStatus.SUCCESSFUL)
    await cluster.run(_job("3", start_error="broken", auto_revert=True))
    await _deployed(cluster, 2, DeploymentStatus.FAILED)
    rollback = await _deployed(cluster, 3, DeploymentStatus.RUNNING)  # version 1's spec
    eval_id, _ = cluster.server.fail_deployment(rollback.id)
    failed = cluster.store.deployment(rollback.id)
    assert failed is not None and "not rolled back" in failed.status_description
    # once the failure's evaluation is done and the watcher has looked again, still no revert
    await cluster.until(
        lambda: (
            (ev := cluster.store.evaluation(eval_id)) is not None
            and ev.status == EvalStatus.COMPLETE
        ),
        what="the failure's evaluation",
    )
    cluster.server.deployments_tick()
    job = cluster.store.job("web")
    assert job is not None and job.version == 3  # no version 4 going back to version 0
