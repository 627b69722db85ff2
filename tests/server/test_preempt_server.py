"""Preemption on a real server (store, plan applier, worker, API), no agents.

The scheduler configuration is a durable row of the store served at
``/v1/operator/scheduler/configuration``; a plan with preemptions commits through the
real applier, which marks the victims and stores their job's evaluation; a stale
preemption is refused by the applier as by the harness (one commit rule); ``job plan``
lists preemptions and writes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podium.models import (
    AllocClientUpdate,
    ClientStatus,
    DesiredStatus,
    EvalStatus,
    TriggeredBy,
)
from podium.models.schedconfig import PreemptionConfig
from podium.scheduler import schedule
from podium.scheduler.harness import make_job, make_node
from podium.server import schedconfig
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import SqliteBackend, StateStore

NOW = 1000.0
PATH = "/v1/operator/scheduler/configuration"


def run_evals(server: Server) -> None:
    """Process every pending evaluation, oldest first, until none is left."""
    for _ in range(10):
        pending = sorted(
            (e for e in server.store.evaluations() if e.status == EvalStatus.PENDING),
            key=lambda e: e.create_index,
        )
        if not pending:
            return
        for ev in pending:
            server.process_eval(ev)


def full_server(preempt: list[str]) -> Server:
    """One node of 1000 MHz held by four allocations of a priority-20 job."""
    server = Server(StateStore(), clock=lambda: NOW)
    server.register_node(make_node("a", cpu=1000, memory=4096))
    if preempt is not None:
        schedconfig.set_config(server, PreemptionConfig.of_types(preempt))
    server.register_job(make_job("low", priority=20, count=4, cpu=250, memory=64))
    run_evals(server)
    assert len([a for a in server.store.allocs_by_job("low") if not a.terminal()]) == 4
    return server


def test_preemption_commits_through_the_applier() -> None:
    server = full_server(["service"])
    server.register_job(make_job("urgent", priority=80, count=1, cpu=500, memory=64))
    ev = next(e for e in server.store.evaluations() if e.job_id == "urgent")
    server.process_eval(ev)
    (placed,) = [a for a in server.store.allocs_by_job("urgent")]
    victims = [a for a in server.store.allocs_by_job("low") if a.preempted_by_alloc]
    assert len(victims) == 2
    assert sorted(placed.preempted_allocations or []) == sorted(v.id for v in victims)
    for v in victims:
        assert v.desired_status == DesiredStatus.STOP
        assert v.preempted_by_job == "urgent"
        assert v.preempted_by_alloc == placed.id
        assert "preempted by allocation" in v.desired_description
    # the victims' job got an evaluation, stored and handed to the broker
    follow = [
        e for e in server.store.evals_by_job("low") if e.triggered_by == TriggeredBy.PREEMPTION
    ]
    assert len(follow) == 1
    assert follow[0].status == EvalStatus.PENDING
    assert server.broker.stats()["ready"] >= 1
    # it finds no room (the victims still run until their agent stops them): blocked
    server.process_eval(follow[0])
    low = server.store.evaluation(follow[0].id)
    assert low is not None and low.blocked_eval
    assert sum(low.queued_allocations.values()) == 2


def test_disabled_service_preemption_leaves_the_job_queued() -> None:
    server = full_server([])
    server.register_job(make_job("urgent", priority=80, count=1, cpu=500, memory=64))
    run_evals(server)
    assert server.store.allocs_by_job("urgent") == []
    assert not any(a.preempted_by_alloc for a in server.store.allocs_by_job("low"))


def test_the_applier_refuses_a_stale_preemption() -> None:
    server = full_server(["service"])
    server.register_job(make_job("urgent", priority=80, count=1, cpu=500, memory=64))
    ev = next(e for e in server.store.evaluations() if e.job_id == "urgent")
    result = schedule(server.store.view(), ev, NOW, new_id=lambda: "urgent-alloc-1")
    assert len(result.plan.preemptions) == 2
    victim = result.plan.preemptions[0].alloc_id
    # the victim finished on its own meanwhile
    server.client_update(
        "node-a", [AllocClientUpdate(id=victim, client_status=ClientStatus.COMPLETE)]
    )
    index = server.store.index
    outcome = server.applier.apply(result, NOW)
    assert outcome.rejected_nodes == ["node-a"]
    assert server.store.index == index
    assert server.store.allocs_by_job("urgent") == []
    # planned again on the latest state, it commits (and needs one victim fewer)
    again = schedule(server.store.view(), ev, NOW, new_id=lambda: "urgent-alloc-2")
    assert len(again.plan.preemptions) == 1
    assert server.applier.apply(again, NOW).committed_preemptions == 1


def test_scheduler_config_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(SqliteBackend(path))
    server = Server(store, clock=lambda: NOW)
    assert store.scheduler_config().preemption_config.types() == ["system"]
    assert store.scheduler_config().modify_index == 0
    written = schedconfig.set_config(server, PreemptionConfig.of_types(["service", "batch"]))
    store.close()
    reopened = StateStore(SqliteBackend(path))
    config = reopened.scheduler_config()
    assert config.preemption_config.types() == ["service", "batch"]
    assert config.modify_index == written.modify_index > 0
    reopened.close()


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Server]]:
    server = Server(StateStore(), clock=lambda: NOW)
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client, server


async def test_configuration_route(api: tuple[httpx.AsyncClient, Server]) -> None:
    client, server = api
    got = (await client.get(PATH)).json()
    assert got["preemption_config"] == {
        "system_scheduler_enabled": True,
        "service_scheduler_enabled": False,
        "batch_scheduler_enabled": False,
    }
    assert got["modify_index"] == 0
    body = {
        "preemption_config": {
            "system_scheduler_enabled": True,
            "service_scheduler_enabled": True,
            "batch_scheduler_enabled": False,
        }
    }
    put = await client.put(PATH, json=body)
    assert put.status_code == 200, put.text
    index = put.json()["modify_index"]
    assert index > 0
    assert server.store.scheduler_config().preemption_config.service_scheduler_enabled
    # conditional write: a stale index is refused, nothing changes
    stale = await client.put(PATH, json={**body, "check_index": index - 1})
    assert stale.status_code == 409
    assert server.store.scheduler_config().modify_index == index
    ok = await client.put(
        PATH, json={"preemption_config": {"batch_scheduler_enabled": True}, "check_index": index}
    )
    assert ok.status_code == 200
    assert server.store.scheduler_config().preemption_config.types() == ["batch", "system"]
    # a bad body says what is wrong and changes nothing
    before = server.store.scheduler_config()
    bad = await client.put(PATH, json={"preemption_config": {"gpu_scheduler_enabled": True}})
    assert bad.status_code == 400
    assert "gpu_scheduler_enabled" in bad.text
    assert server.store.scheduler_config() == before


async def test_job_plan_lists_preemptions_and_writes_nothing(
    api: tuple[httpx.AsyncClient, Server],
) -> None:
    client, server = api
    server.register_node(make_node("a", cpu=1000, memory=4096))
    schedconfig.set_config(server, PreemptionConfig.of_types(["service"]))
    server.register_job(make_job("low", priority=20, count=4, cpu=250, memory=64))
    run_evals(server)
    index = server.store.index
    spec = make_job("urgent", priority=80, count=1, cpu=500, memory=64)
    answer = await client.post(
        "/v1/job/urgent/plan", json={"job": spec.model_dump(mode="json", exclude_none=True)}
    )
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert len(plan["preemptions"]) == 2
    assert {p["job_id"] for p in plan["preemptions"]} == {"low"}
    assert all(p["priority"] == 20 for p in plan["preemptions"])
    assert server.store.index == index
    assert not any(a.preempted_by_alloc for a in server.store.allocs_by_job("low"))


def test_the_example_preempts_as_its_comments_say() -> None:
    """examples/preemption/: on a 4000 MHz node, ``crunch`` runs 8 of 20 and ``urgent``
    preempts two of them, with service preemption on."""
    from podium.spec import load_job_file

    examples = Path(__file__).parents[2] / "examples" / "preemption"
    server = Server(StateStore(), clock=lambda: NOW)
    server.register_node(make_node("a", cpu=4000, memory=8192, drivers=("raw_exec",)))
    schedconfig.set_config(server, PreemptionConfig.of_types(["service", "system"]))
    server.register_job(load_job_file(examples / "low.yaml"))
    run_evals(server)
    assert len([a for a in server.store.allocs_by_job("crunch") if not a.terminal()]) == 8
    server.register_job(load_job_file(examples / "high.yaml"))
    run_evals(server)
    assert len(server.store.allocs_by_job("urgent")) == 1
    victims = [a for a in server.store.allocs_by_job("crunch") if a.preempted_by_alloc]
    assert len(victims) == 2
    assert all(a.preempted_by_job == "urgent" for a in victims)


async def test_configuration_route_is_strict(api: tuple[httpx.AsyncClient, Server]) -> None:
    """Found by the API fuzzer: ``check_index: false`` was taken for 0.  Booleans and the
    index take their own JSON types only; nothing is written."""
    client, server = api
    ok = {"batch_scheduler_enabled": False}
    for body in (
        {"preemption_config": ok, "check_index": False},
        {"preemption_config": ok, "check_index": -1},
        {"preemption_config": ok, "check_index": "0"},
        {"preemption_config": {"service_scheduler_enabled": 1}},
        {"preemption_config": {"service_scheduler_enabled": "true"}},
        {},
    ):
        answer = await client.put(PATH, json=body)
        assert answer.status_code == 400, (body, answer.text)
    assert server.store.scheduler_config().modify_index == 0
