"""Periodic and parameterized jobs on a server: the dispatcher with an injected clock
on a real SQLite store (restarts and failovers included), dispatch through the HTTP
API, children's ids in paths, garbage collection, and the leader's loop.  The
in-process cluster (mock driver) checks what a dispatched task finds."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from podium.client import AsyncClient
from podium.errors import APIError, NotFound
from podium.models import AllocClientUpdate, ClientStatus, EvalStatus, JobSpec
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import SqliteBackend, StateStore
from tests.server.conftest import Cluster
from tests.server.test_leader_duties import add_node

T0 = 1_800_000_000.0  # an even second, a multiple of 10


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 0.5

    def __call__(self) -> float:
        return self.now


def periodic_job(job_id: str = "tick", cron: str = "*/10 * * * * *", **extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job": job_id,
            "type": "batch",
            "periodic": {"cron": cron, **extra},
            "groups": {
                "g": {
                    "tasks": {"t": {"driver": "mock", "config": {"run_for": "10ms"}}},
                }
            },
        }
    )


def parameterized_job(job_id: str = "work", **rules: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "job": job_id,
            "type": "batch",
            "meta": {"team": "infra"},
            "parameterized": rules,
            "groups": {
                "g": {
                    "tasks": {
                        "t": {
                            "driver": "mock",
                            "config": {
                                "run_for": "10ms",
                                "stdout": "name=${PODIUM_META_NAME} team=${PODIUM_META_TEAM}\n",
                            },
                            "dispatch_payload": {"file": "in/payload.bin"},
                        }
                    },
                }
            },
        }
    )


def open_server(path: Path, clock: Clock) -> Server:
    """A server on the store at ``path`` whose loops are not started: the test ticks."""
    return Server(StateStore(SqliteBackend(path)), ServerConfig(), clock=clock)


def children(server: Server, parent: str = "tick") -> list[str]:
    return sorted(j.id for j in server.store.jobs() if j.parent_id == parent)


def test_a_periodic_job_is_a_template_its_launches_run(tmp_path: Path) -> None:
    clock = Clock()
    server = open_server(tmp_path / "s.db", clock)
    reg = server.register_job(periodic_job())
    ev = server.store.evaluation(reg.eval_id)
    assert ev is not None
    server.process_eval(ev)
    assert server.store.allocs_by_job("tick") == []  # never placed itself
    assert server.periodic.tick() == []  # 10 s cron, the clock at :00.5
    clock.now = T0 + 10
    assert server.periodic.tick() == [f"tick/periodic-{int(T0) + 10}"]
    child = server.store.job(f"tick/periodic-{int(T0) + 10}")
    assert child is not None and child.parent_id == "tick" and child.spec.periodic is None
    parent = server.store.job("tick")
    assert parent is not None and parent.periodic_launch == T0 + 10
    evs = server.store.evals_by_job(child.id)
    assert [e.triggered_by.value for e in evs] == ["periodic-job"]
    assert server.periodic.tick() == []  # same instant: not twice
    clock.now = T0 + 19.9
    assert server.periodic.tick() == []
    clock.now = T0 + 20
    assert server.periodic.tick() == [f"tick/periodic-{int(T0) + 20}"]
    server.store.close()


def test_a_restarted_or_new_leader_never_launches_twice(tmp_path: Path) -> None:
    clock = Clock()
    first = open_server(tmp_path / "s.db", clock)
    first.register_job(periodic_job())
    clock.now = T0 + 10
    assert len(first.periodic.tick()) == 1
    first.store.close()  # the leader dies right after its commit

    second = open_server(tmp_path / "s.db", clock)  # the next leader, same state
    assert second.periodic.tick() == []
    # away for an hour: 359 launches were missed; one catch-up launch runs, once
    clock.now = T0 + 3605
    assert second.periodic.tick() == [f"tick/periodic-{int(T0) + 3600}"]
    assert second.periodic.tick() == []
    second.store.close()
    third = open_server(tmp_path / "s.db", clock)
    assert third.periodic.tick() == []
    assert children(third) == [f"tick/periodic-{int(T0) + 10}", f"tick/periodic-{int(T0) + 3600}"]
    third.store.close()


def test_prohibit_overlap_skips_while_a_launch_runs(tmp_path: Path) -> None:
    clock = Clock()
    server = open_server(tmp_path / "s.db", clock)
    add_node(server)
    server.register_job(periodic_job(prohibit_overlap=True))
    clock.now = T0 + 10
    (first,) = server.periodic.tick()
    # its evaluation is pending (not yet placed): the launch is running
    clock.now = T0 + 20
    assert server.periodic.tick() == []
    parent = server.store.job("tick")
    assert parent is not None and parent.periodic_launch == T0 + 20  # skipped, recorded
    # placed: still running
    ev = server.store.evals_by_job(first)[0]
    server.process_eval(ev)
    (alloc,) = server.store.allocs_by_job(first)
    clock.now = T0 + 30
    assert server.periodic.tick() == []
    # finished: the next launch runs
    server.client_update(
        alloc.node_id, [AllocClientUpdate(id=alloc.id, client_status=ClientStatus.COMPLETE)]
    )
    clock.now = T0 + 40
    assert server.periodic.tick() == [f"tick/periodic-{int(T0) + 40}"]
    server.store.close()


def test_force_stop_and_children_route(tmp_path: Path) -> None:
    clock = Clock()
    server = open_server(tmp_path / "s.db", clock)
    server.register_job(periodic_job())
    forced = server.periodic.force("tick")
    assert forced.job_id == f"tick/periodic-{int(T0)}"
    parent = server.store.job("tick")
    assert parent is not None and parent.periodic_launch is None  # the schedule is untouched
    with pytest.raises(Exception, match="launched at this second already"):
        server.periodic.force("tick")
    server.stop_job("tick")
    clock.now = T0 + 100
    assert server.periodic.tick() == []  # stopped: no more launches
    with pytest.raises(Exception, match="is stopped"):
        server.periodic.force("tick")
    server.store.close()


def test_a_file_cannot_register_a_child_or_a_payload(tmp_path: Path) -> None:
    server = open_server(tmp_path / "s.db", Clock())
    spec = periodic_job()
    spec.job = "tick/periodic-1"
    with pytest.raises(ValueError, match="children of periodic and parameterized jobs"):
        server.register_job(spec)
    spec = periodic_job()
    spec.payload = "eA=="
    with pytest.raises(ValueError, match="payload is set by `podium job dispatch`"):
        server.register_job(spec)
    server.store.close()


def test_finished_children_are_collected(tmp_path: Path) -> None:
    clock = Clock()
    server = Server(
        StateStore(SqliteBackend(tmp_path / "s.db")), ServerConfig(alloc_gc_age=60), clock=clock
    )
    server.register_job(periodic_job())
    for k in range(1, 4):
        clock.now = T0 + 10 * k
        server.periodic.tick()
    made = children(server)
    assert len(made) == 3
    # their evaluations are still pending: running, never collected
    clock.now = T0 + 1000
    server.gc()
    assert children(server) == made
    for job_id in made:
        for ev in server.store.evals_by_job(job_id):
            txn = server.store.txn()
            txn.put_eval(ev.model_copy(update={"status": EvalStatus.COMPLETE}))
            server.store.commit(txn)
    clock.now = T0 + 10  # finished just now (by this clock): kept
    server.gc()
    assert children(server) == made
    clock.now = T0 + 1000
    server.gc()
    assert children(server) == []
    assert server.store.job("tick") is not None  # the parent stays
    assert all(not server.store.evals_by_job(j) for j in made)
    server.store.close()


# --------------------------------------------------------------------------- HTTP API


@pytest.fixture
async def api(tmp_path: Path) -> Any:
    clock = Clock()
    server = open_server(tmp_path / "s.db", clock)
    transport = httpx.ASGITransport(app=create_app(server))
    client = AsyncClient("http://podium", transport=transport, timeout=30)
    http = httpx.AsyncClient(transport=transport, base_url="http://podium")
    try:
        yield server, client, http, clock
    finally:
        await client.aclose()
        await http.aclose()
        server.store.close()


async def test_dispatch_through_the_api(api: Any) -> None:
    server, client, http, clock = api
    await client.register_job(
        parameterized_job(payload="required", meta_required=["name"], meta_optional=["lang"])
    )
    d = await client.dispatch_job("work", {"name": "ada"}, b"\x00payload\xff")
    assert d.dispatched_job_id.startswith(f"work/dispatch-{int(clock.now)}-")
    child = server.store.job(d.dispatched_job_id)
    assert child.parent_id == "work" and child.spec.parameterized is None
    assert child.spec.meta == {"team": "infra", "name": "ada"}
    # the child by its id, '/' and all, through every job route the SDK quotes
    info = await client.job(d.dispatched_job_id)
    assert info.id == d.dispatched_job_id and info.parent_id == "work"
    assert await client.job_evaluations(d.dispatched_job_id)
    kids = await client.job_children("work")
    assert [k.id for k in kids] == [d.dispatched_job_id] and kids[0].parent_id == "work"
    listed = {j.id: j for j in await client.jobs()}
    assert listed["work"].kind == "parameterized" and listed["work"].status.value == "running"

    # refused, each with what is wrong, and nothing made
    cases = [
        ({"name": "x"}, None, "requires a payload"),
        ({}, b"p", "required meta missing: name"),
        ({"name": "x", "colour": "red"}, b"p", "not declared by the job: colour"),
        ({"name": "x"}, b"p" * (16 * 1024 + 1), "at most 16,384"),
    ]
    for meta, payload, says in cases:
        body: dict[str, Any] = {"meta": meta}
        if payload is not None:
            import base64

            body["payload"] = base64.b64encode(payload).decode()
        r = await http.post("/v1/job/work/dispatch", json=body)
        assert r.status_code == 400, r.text
        assert says in r.text
    assert len(await client.job_children("work")) == 1
    r = await http.post("/v1/job/work/dispatch", json={"meta": {"name": "x"}, "payload": "!!"})
    assert r.status_code == 400 and "base64" in r.text

    # not parameterized / unknown
    await client.register_job(periodic_job())
    with pytest.raises(APIError, match="not parameterized"):
        await client.dispatch_job("tick")
    with pytest.raises(NotFound, match="not found"):
        await client.dispatch_job("nope")


async def test_idempotency_token_answers_the_first_child(api: Any) -> None:
    _server, client, _http, clock = api
    await client.register_job(parameterized_job())
    a = await client.dispatch_job("work", payload=b"1", idempotency_token="req-42")
    clock.now += 5
    b = await client.dispatch_job("work", payload=b"1", idempotency_token="req-42")
    assert b.dispatched_job_id == a.dispatched_job_id and b.existing and not a.existing
    assert b.eval_id == a.eval_id
    c = await client.dispatch_job("work", payload=b"1", idempotency_token="req-43")
    assert c.dispatched_job_id != a.dispatched_job_id
    assert len(await client.job_children("work")) == 2


async def test_force_and_child_paths_through_the_api(api: Any) -> None:
    server, client, http, clock = api
    await client.register_job(periodic_job())
    f = await client.force_periodic("tick")
    assert f.job_id == f"tick/periodic-{int(clock.now)}"
    r = await http.get(f"/v1/job/{quote(f.job_id, safe='')}/allocations")
    assert r.status_code == 200
    r = await http.get("/v1/job/tick/periodic-1/allocations")  # unquoted: not a job route
    assert r.status_code == 404
    r = await http.delete(f"/v1/job/{quote(f.job_id, safe='')}")
    assert r.status_code == 200
    child = server.store.job(f.job_id)
    assert child is not None and child.stop
    await client.register_job(parameterized_job())
    with pytest.raises(APIError, match="not periodic"):
        await client.force_periodic("work")


# --------------------------------------------------------------------------- leader, cluster


async def test_the_periodic_loop_is_a_leader_duty(cluster: Cluster) -> None:
    names = {t.get_name() for t in cluster.server.leader.tasks}
    assert "periodic" in names
    await cluster.server.leader.stop()
    assert cluster.server.leader.tasks == []
    cluster.server.leader.start()
    assert "periodic" in {t.get_name() for t in cluster.server.leader.tasks}


async def test_a_dispatched_task_finds_its_payload_and_meta(cluster: Cluster) -> None:
    agent = await cluster.add_agent()
    await cluster.client.register_job(parameterized_job(payload="required", meta_required=["name"]))
    d = await cluster.client.dispatch_job("work", {"name": "ada"}, b"hello payload")
    allocs = await cluster.until(
        lambda: [
            a
            for a in cluster.allocs(d.dispatched_job_id)
            if a.client_status == ClientStatus.COMPLETE
        ],
        timeout=20,
        what="the dispatched job to complete",
    )
    alloc_dir = Path(agent.settings.data_dir) / "allocs" / allocs[0].id
    if not alloc_dir.exists():
        alloc_dir = next(Path(agent.settings.data_dir).rglob(allocs[0].id))
    assert (alloc_dir / "t" / "in" / "payload.bin").read_bytes() == b"hello payload"
    out = (alloc_dir / "alloc" / "logs" / "t.stdout").read_text()
    assert "name=ada team=infra" in out


async def test_a_periodic_job_launches_on_a_running_server(cluster: Cluster) -> None:
    await cluster.add_agent()
    await cluster.client.register_job(periodic_job(cron="* * * * * *"))
    kids = await cluster.until(
        lambda: [j for j in cluster.store.jobs() if j.parent_id == "tick"],
        timeout=20,
        what="a launch",
    )
    await cluster.until(
        lambda: any(a.client_status == ClientStatus.COMPLETE for a in cluster.allocs(kids[0].id)),
        timeout=20,
        what="the launch to run",
    )
    await cluster.client.stop_job("tick")
    assert cluster.server.periodic.tick() == []  # stopped: its loop launches nothing more


def test_quotas_count_children_not_templates(tmp_path: Path) -> None:
    from podium.models.namespace import Quota

    clock = Clock()
    server = open_server(tmp_path / "s.db", clock)
    server.namespaces.apply("team", None, Quota(count=1))
    # a template is never placed: it takes nothing of the quota, however many groups
    server.register_job(periodic_job(cron="* * * * * *"), namespace="team")
    server.register_job(parameterized_job(), namespace="team")
    first = server.dispatcher.dispatch("work", "team", payload=b"x")
    assert first.dispatched_job_id.startswith("work/dispatch-")
    # each child is admitted as it comes: the second instance is over the quota
    with pytest.raises(Exception, match="quota count"):
        server.dispatcher.dispatch("work", "team", payload=b"x")
    clock.now += 1
    assert server.periodic.tick() == []  # refused too (logged), launched nothing
    server.store.close()
