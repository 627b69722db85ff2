"""Rolling deployments in the scheduler: batches gated on health, canaries, failure.

Driven through the in-memory harness: the scheduler plans, the harness applies,
and the tests play the agents (running, healthy) and the server's deployment
watcher (promote, fail) by hand.
"""

from __future__ import annotations

from typing import Any

from podium.models import ClientStatus, DeploymentStatus, DesiredStatus
from podium.scheduler.harness import Harness, make_group, make_job
from podium.scheduler.reconcile import CANARY_REMOVED, REPLACED_BY_CANARY, UPDATED


def _job(count: int = 6, version_env: str = "1", **update: Any) -> Any:
    update = {"max_parallel": 2, "min_healthy_time": "1s", **update}
    group = make_group(count, update=update)
    group.tasks["task"].env = {"V": version_env}
    return make_job("web", groups={"web": group})


def _running(h: Harness, env: str) -> list[Any]:
    """Live instances whose version sets V=env."""
    out = []
    for a in h.live("web"):
        spec = h.job_spec("web", a.job_version)
        assert spec is not None
        if spec.groups["web"].tasks["task"].env["V"] == env:
            out.append(a)
    return out


def _healthy_all(h: Harness) -> None:
    for a in h.live("web"):
        if a.deployment_id is not None and (
            a.deployment_status is None or a.deployment_status.healthy is None
        ):
            h.set_health(a.id, True)


def _setup(h: Harness, **update: Any) -> None:
    h.add_nodes(3, cpu=4000, memory=8192)
    h.register(_job(**update))
    h.evaluate("web")
    h.run_pending()
    _healthy_all(h)


def test_new_job_creates_a_deployment_and_places_everything_at_once() -> None:
    h = Harness()
    h.add_nodes(3, cpu=4000, memory=8192)
    h.register(_job())
    result = h.evaluate("web")
    dep = result.plan.deployment
    assert dep is not None and dep.job_version == 0 and dep.groups["web"].desired_total == 6
    assert len(result.plan.placements) == 6
    assert {a.deployment_id for a in result.plan.placements} == {dep.id}
    assert h.latest_deployment("web") is not None


def test_a_job_without_update_block_has_no_deployment() -> None:
    h = Harness()
    h.add_nodes(1, cpu=4000, memory=8192)
    h.register(make_job("web", count=2))
    result = h.evaluate("web")
    assert result.plan.deployment is None
    assert all(a.deployment_id is None for a in result.plan.placements)


def test_rolling_update_replaces_max_parallel_at_a_time_after_health() -> None:
    h = Harness()
    _setup(h)
    h.register(_job(version_env="2"))
    r = h.evaluate("web")
    assert r.plan.changes["web"].destructive_update == 2
    assert [s.description for s in r.plan.stops] == [UPDATED, UPDATED]
    new_dep = r.plan.deployment
    assert new_dep is not None and new_dep.job_version == 1
    h.run_pending()
    # not healthy yet: the next evaluation replaces nothing
    r = h.evaluate("web")
    assert r.plan.empty()
    for rounds in range(3):
        _healthy_all(h)
        r = h.evaluate("web")
        h.run_pending()
        assert len(_running(h, "2")) == min(6, 2 * (rounds + 2))
        # never more than max_parallel new instances at once, never fewer than 4 running
        assert len(h.live("web")) == 6
    assert len(_running(h, "2")) == 6 and not _running(h, "1")


def test_one_unhealthy_instance_holds_its_slot() -> None:
    h = Harness()
    _setup(h)
    h.register(_job(version_env="2"))
    r = h.evaluate("web")
    h.run_pending()
    first, _second = r.plan.placements
    h.set_health(first.id, True)
    r = h.evaluate("web")
    assert r.plan.changes["web"].destructive_update == 1  # only one slot freed


def test_canary_runs_beside_old_instances_until_promoted() -> None:
    h = Harness()
    _setup(h, canary=1)
    h.register(_job(version_env="2", canary=1))
    r = h.evaluate("web")
    assert r.plan.changes["web"].canary == 1 and not r.plan.stops
    (canary,) = r.plan.placements
    assert canary.deployment_status is not None and canary.deployment_status.canary
    dep = h.latest_deployment("web")
    assert dep is not None and dep.groups["web"].placed_canaries == [canary.id]
    h.run_pending()
    assert len(h.live("web")) == 7  # six old plus the canary
    h.set_health(canary.id, True)
    assert h.evaluate("web").plan.empty()  # healthy, but not promoted: nothing moves

    h.promote(dep.id)
    r = h.evaluate("web")
    replaced = [s for s in r.plan.stops if s.description == REPLACED_BY_CANARY]
    assert len(replaced) == 1
    assert h.alloc(replaced[0].alloc_id).index == canary.index
    assert r.plan.changes["web"].destructive_update == 2
    h.run_pending()
    for _ in range(4):
        _healthy_all(h)
        h.evaluate("web")
        h.run_pending()
    assert len(_running(h, "2")) == 6 and len(h.live("web")) == 6


def test_failed_deployment_removes_its_canary_and_replaces_nothing() -> None:
    h = Harness()
    _setup(h, canary=1)
    h.register(_job(version_env="2", canary=1))
    r = h.evaluate("web")
    (canary,) = r.plan.placements
    h.run_pending()
    dep = h.latest_deployment("web")
    assert dep is not None
    h.set_deployment(dep.id, status=DeploymentStatus.FAILED)
    r = h.evaluate("web")
    assert [(s.alloc_id, s.description) for s in r.plan.stops] == [(canary.id, CANARY_REMOVED)]
    assert not r.plan.placements
    h.run_pending()
    assert len(_running(h, "1")) == 6


def test_a_newer_version_cancels_the_running_deployment() -> None:
    h = Harness()
    _setup(h)
    h.register(_job(version_env="2"))
    r = h.evaluate("web")
    first = r.plan.deployment
    assert first is not None
    h.register(_job(version_env="3"))
    r = h.evaluate("web")
    assert first.id in r.plan.cancel_deployments
    assert h.deployments[first.id].status == DeploymentStatus.CANCELLED
    second = h.latest_deployment("web")
    assert second is not None and second.job_version == 2 and second.active()


def test_stopping_the_job_cancels_its_deployment() -> None:
    h = Harness()
    h.add_nodes(1, cpu=4000, memory=8192)
    h.register(_job(count=2))
    dep = h.evaluate("web").plan.deployment
    assert dep is not None
    h.stop_job("web")
    r = h.evaluate("web")
    assert r.plan.cancel_deployments == {dep.id: "cancelled: job stopped"}
    assert all(a.desired_status == DesiredStatus.STOP for a in h.allocs())


def test_depends_on_holds_a_group_until_its_dependency_is_healthy() -> None:
    h = Harness()
    h.add_nodes(1, cpu=4000, memory=8192)
    db = make_group(1)
    app = make_group(2, depends_on={"db": "healthy"})
    h.register(make_job("web", groups={"db": db, "app": app}))
    r = h.evaluate("web")
    assert {a.group for a in r.plan.placements} == {"db"}
    assert "group app waits for db to be healthy (0/1)" in r.eval_update.status_description
    h.run_pending()
    r = h.evaluate("web")
    assert [a.group for a in r.plan.placements] == ["app", "app"]


def test_depends_on_only_gates_the_first_placement() -> None:
    h = Harness()
    h.add_nodes(1, cpu=4000, memory=8192)
    db = make_group(1)
    app = make_group(1, depends_on={"db": "started"})
    h.register(make_job("web", groups={"db": db, "app": app}))
    h.evaluate("web")
    h.run_pending()
    h.evaluate("web")
    h.run_pending()
    (db_alloc,) = h.live("web", "db")
    h.client_update(db_alloc.id, ClientStatus.FAILED)
    (app_alloc,) = h.live("web", "app")
    r = h.evaluate("web")
    # app keeps running and is not held back by db's failure
    assert all(s.alloc_id != app_alloc.id for s in r.plan.stops)


def test_a_disabled_healthcheck_does_not_hold_a_dependant_forever() -> None:
    h = Harness()
    h.add_nodes(1, cpu=4000, memory=8192, drivers=("docker", "mock"))
    off = {"image": "x", "healthcheck": {"test": ["NONE"]}}
    db = make_group(1, driver="docker", config=off)
    app = make_group(1, depends_on={"db": "healthy"})
    h.register(make_job("web", groups={"db": db, "app": app}))
    h.evaluate("web")
    h.run_pending()
    r = h.evaluate("web")
    assert [a.group for a in r.plan.placements] == ["app"]


def test_an_images_own_healthcheck_holds_a_dependant_until_it_reports() -> None:
    h = Harness()
    h.add_nodes(1, cpu=4000, memory=8192, drivers=("docker", "mock"))
    own = {"image": "x", "healthcheck": {"interval": "2s"}}  # empty test: the image's
    db = make_group(1, driver="docker", config=own)
    app = make_group(1, depends_on={"db": "healthy"})
    h.register(make_job("web", groups={"db": db, "app": app}))
    h.evaluate("web")
    h.run_pending()
    r = h.evaluate("web")
    assert not r.plan.placements  # running, but no health verdict yet
    assert "waits for db to be healthy (0/1)" in r.eval_update.status_description
