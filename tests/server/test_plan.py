"""``job plan`` (a dry run that writes nothing), check_index, and ``job revert``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from podium.errors import Conflict, NotFound
from podium.models import EvalStatus, JobSpec
from podium.models.diff import DiffType, job_diff, spec_diff
from podium.scheduler.harness import make_node
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore


def job(count: int = 2, memory: int = 256, **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "driver": "mock",
        "config": {"run_for": "1h"},
        "resources": {"cpu": 100, "memory": memory},
    }
    task.update(extra.pop("task", {}))
    group: dict[str, Any] = {"count": count, "tasks": {"server": task}}
    group.update(extra.pop("group", {}))
    return {"job": "web", "groups": {"web": group}, **extra}


def spec(**kw: Any) -> JobSpec:
    return JobSpec.model_validate(job(**kw))


@pytest.fixture
def server() -> Server:
    """A server that is not started: evaluations wait until a test runs them."""
    srv = Server(StateStore(), clock=lambda: 1000.0)
    for name in ("a", "b", "c"):
        srv.register_node(make_node(name, cpu=4000, memory=1024))
    return srv


def run_evals(server: Server) -> None:
    for ev in sorted(server.store.evaluations(), key=lambda e: e.create_index):
        if ev.status == EvalStatus.PENDING:
            server.process_eval(ev)


def deploy(server: Server, s: JobSpec) -> int:
    r = server.register_job(s)
    run_evals(server)
    return r.job_modify_index


def snapshot_of(server: Server) -> tuple[int, int, int, dict[str, Any]]:
    store = server.store
    return (
        store.index,
        len(store.evaluations()),
        len(store.job_versions("web")),
        server.broker.stats(),
    )


# -- the diff ------------------------------------------------------------------------------


def test_structured_diff_groups_fields_by_group_and_task() -> None:
    old = spec(count=2, meta={"team": "a"})
    new = spec(
        count=3,
        priority=70,
        task={"env": {"MODE": "fast"}, "config": {"run_for": "2h"}},
        group={"meta": {"tier": "front"}},
    )
    d = job_diff(old, new)
    assert d.type == DiffType.EDITED and d.id == "web"
    job_fields = {f.name: f for f in d.fields}
    assert job_fields["priority"].type == DiffType.EDITED
    assert (job_fields["priority"].old, job_fields["priority"].new) == (50, 70)
    assert job_fields["meta.team"].type == DiffType.DELETED
    [group] = d.groups
    assert group.type == DiffType.EDITED
    assert {(f.type, f.name) for f in group.fields} == {
        (DiffType.EDITED, "count"),
        (DiffType.ADDED, "meta.tier"),
    }
    [task] = group.tasks
    assert task.name == "server" and task.type == DiffType.EDITED
    assert {(f.type, f.name) for f in task.fields} == {
        (DiffType.ADDED, "env.MODE"),
        (DiffType.EDITED, "config.run_for"),
    }
    assert "~ groups.web.count: 2 => 3" in d.lines()
    assert '+ groups.web.tasks.server.env.MODE: "fast"' in d.lines()


def test_diff_of_added_and_removed_groups_and_tasks() -> None:
    old = spec()
    raw = job(task={"env": {"A": "1"}})
    raw["groups"]["api"] = raw["groups"]["web"]
    raw["groups"]["web"] = {
        **raw["groups"]["web"],
        "tasks": {"sidecar": {"driver": "mock", "config": {}}},
    }
    d = job_diff(old, JobSpec.model_validate(raw))
    by_name = {g.name: g for g in d.groups}
    assert by_name["api"].type == DiffType.ADDED
    assert all(f.type == DiffType.ADDED for f in by_name["api"].fields)
    tasks = {t.name: t.type for t in by_name["web"].tasks}
    assert tasks == {"server": DiffType.DELETED, "sidecar": DiffType.ADDED}


def test_unchanged_spec_has_no_diff_and_spec_diff_lines_are_kept() -> None:
    d = job_diff(spec(), spec())
    assert d.type == DiffType.NONE and not d.changed() and d.lines() == []
    assert [g.type for g in d.groups] == [DiffType.NONE]
    # the lines stored with versions keep their format
    assert spec_diff(None, spec()) == ["+ job web"]
    assert spec_diff(spec(count=2), spec(count=5)) == ["~ groups.web.count: 2 => 5"]


# -- the dry run -----------------------------------------------------------------------------


def test_plan_of_a_new_job_places_everything_and_writes_nothing(server: Server) -> None:
    before = snapshot_of(server)
    plan = server.plan_job(spec(count=2))
    assert snapshot_of(server) == before
    assert server.store.job("web") is None
    assert plan.job_modify_index == 0 and plan.version == 0 and plan.changed
    assert plan.diff is not None and plan.diff.type == DiffType.ADDED
    assert plan.changes["web"].place == 2
    assert not plan.failed_tg_allocs and plan.creates_or_destroys()


def test_plan_counts_ignore_in_place_and_destructive_updates(server: Server) -> None:
    modify_index = deploy(server, spec(count=2))
    assert len([a for a in server.store.allocs() if not a.terminal()]) == 2

    same = server.plan_job(spec(count=2))
    assert not same.changed and same.diff is not None and not same.diff.changed()
    assert same.changes["web"].ignore == 2 and not same.creates_or_destroys()
    assert same.job_modify_index == modify_index

    more = server.plan_job(spec(count=3))
    # the running two move to the new version in place (as in Nomad)
    assert (more.changes["web"].place, more.changes["web"].in_place_update) == (1, 2)
    assert more.version == 1

    in_place = server.plan_job(spec(count=2, group={"meta": {"tier": "front"}}))
    assert in_place.changes["web"].in_place_update == 2
    assert not in_place.creates_or_destroys() and in_place.changed

    destructive = server.plan_job(spec(count=2, task={"env": {"MODE": "fast"}}))
    assert destructive.changes["web"].destructive_update == 2
    assert destructive.creates_or_destroys()

    fewer = server.plan_job(spec(count=1))
    assert fewer.changes["web"].stop == 1


def test_plan_reports_placement_failures(server: Server) -> None:
    deploy(server, spec(count=2, memory=256))
    before = snapshot_of(server)
    plan = server.plan_job(spec(count=8, memory=400))
    assert snapshot_of(server) == before
    metric = plan.failed_tg_allocs["web"]
    assert metric.dimension_exhausted.get("memory")
    assert "exhausted memory" in metric.describe()
    assert plan.queued_allocations["web"] > 0
    assert "could not be placed" in plan.notes
    # nothing blocked, nothing queued in the broker: the plan only looked
    assert not [e for e in server.store.evaluations() if e.status == EvalStatus.BLOCKED]


def test_plan_of_a_stopped_job_shows_it_starting_again(server: Server) -> None:
    deploy(server, spec())
    server.stop_job("web")
    run_evals(server)
    plan = server.plan_job(spec())
    assert plan.changed
    assert plan.diff is not None
    assert [(f.name, f.old, f.new) for f in plan.diff.fields] == [("stop", True, False)]
    assert plan.changes["web"].place == 2


def test_plan_then_check_index(server: Server) -> None:
    deploy(server, spec(count=2))
    plan = server.plan_job(spec(count=3))
    # someone else registers in between: the plan's index no longer holds
    other = server.register_job(spec(count=4))
    with pytest.raises(Conflict) as err:
        server.register_job(spec(count=3), check_index=plan.job_modify_index)
    assert str(err.value) == (
        f"job web changed since index {plan.job_modify_index} "
        f"(now {other.job_modify_index}): run podium job plan again"
    )
    again = server.plan_job(spec(count=3))
    assert again.job_modify_index == other.job_modify_index
    ok = server.register_job(spec(count=3), check_index=again.job_modify_index)
    assert ok.changed and ok.version == 2


def test_check_index_zero_means_new_job(server: Server) -> None:
    with pytest.raises(Conflict, match="does not exist"):
        server.register_job(spec(), check_index=5)
    server.register_job(spec(), check_index=0)
    with pytest.raises(Conflict, match="already exists"):
        server.register_job(spec(count=3), check_index=0)


# -- revert ----------------------------------------------------------------------------------


def test_revert_registers_the_old_spec_as_a_new_version(server: Server) -> None:
    deploy(server, spec(count=2))
    deploy(server, spec(count=3))
    evals = len(server.store.evaluations())
    r = server.revert_job("web", 0, reason="deployment failed")
    assert r.changed and r.version == 2
    current = server.store.job("web")
    assert current is not None and current.version == 2
    assert current.spec.groups["web"].count == 2
    newest = server.store.job_versions("web")[0]
    assert newest.version == 2
    assert newest.description == "reverted to version 0: deployment failed"
    assert newest.diff == ["~ groups.web.count: 3 => 2"]
    assert len(server.store.evaluations()) == evals + 1
    run_evals(server)
    assert len([a for a in server.store.allocs() if not a.terminal()]) == 2


def test_revert_errors(server: Server) -> None:
    deploy(server, spec(count=2))
    deploy(server, spec(count=3))
    with pytest.raises(ValueError, match="already at version 1"):
        server.revert_job("web", 1)
    with pytest.raises(NotFound, match=r"no version 7 \(versions: 1, 0\)"):
        server.revert_job("web", 7)
    with pytest.raises(Conflict, match="at version 1, not 0"):
        server.revert_job("web", 0, enforce_prior_version=0)
    with pytest.raises(NotFound):
        server.revert_job("nope", 0)
    assert server.revert_job("web", 0, enforce_prior_version=1).version == 2


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
async def api(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client


async def test_plan_endpoint(api: httpx.AsyncClient, server: Server) -> None:
    deploy(server, spec(count=2))
    before = snapshot_of(server)
    r = await api.post("/v1/job/web/plan", json={"job": job(count=3), "diff": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert snapshot_of(server) == before
    assert int(r.headers["X-Podium-Index"]) == server.store.index == body["index"]
    assert body["changes"]["web"]["place"] == 1
    assert body["diff"]["groups"][0]["fields"] == [
        {"type": "edited", "name": "count", "old": 2, "new": 3}
    ]
    assert body["job_modify_index"] == server.store.job("web").job_modify_index  # type: ignore[union-attr]
    no_diff = (await api.post("/v1/job/web/plan", json={"job": job(), "diff": False})).json()
    assert no_diff["diff"] is None


async def test_plan_endpoint_errors(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/job/other/plan", json={"job": job()})
    assert r.status_code == 400 and "spec is job 'web'" in r.json()["error"]
    r = await api.post("/v1/job/web/plan", json={"job": {"job": "web", "groups": {}}})
    assert r.status_code == 400 and r.json()["issues"]


async def test_register_conflict_over_http(api: httpx.AsyncClient, server: Server) -> None:
    first = (await api.post("/v1/jobs", json={"job": job()})).json()
    await api.post("/v1/jobs", json={"job": job(count=3)})
    r = await api.post(
        "/v1/jobs", json={"job": job(count=4), "check_index": first["job_modify_index"]}
    )
    assert r.status_code == 409
    assert r.json()["error"].endswith("run podium job plan again")


async def test_revert_endpoint(api: httpx.AsyncClient, server: Server) -> None:
    deploy(server, spec(count=2))
    deploy(server, spec(count=3))
    r = await api.post("/v1/job/we/revert", json={"version": 0})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["eval_id"]
    r = await api.post("/v1/job/web/revert", json={"version": 9})
    assert r.status_code == 404
    assert r.json()["versions"] == [2, 1, 0]
    r = await api.post("/v1/job/web/revert", json={"version": 2})
    assert r.status_code == 400 and "already at version 2" in r.json()["error"]
    r = await api.post("/v1/job/web/revert", json={"version": 0, "enforce_prior_version": 1})
    assert r.status_code == 409
