"""The service catalog: registrations follow agents' reports, and leave with the stop.

The first tests drive :class:`Server` by hand (no loops, no agents): a node, a job
placed by ``process_eval``, and reports as an agent would send them.  Every commit
is watched: no registration may outlive (or be written for) an allocation that is
stopped or finished, not even for one index.  The last test runs the in-process
cluster: a real agent, a mock task, a script check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from podium.agent.checks import AllocChecks
from podium.drivers.base import TaskHandle
from podium.models import (
    AllocatedPort,
    Allocation,
    AllocClientUpdate,
    CheckResult,
    CheckStatus,
    ClientStatus,
    DesiredStatus,
    DriverInfo,
    JobSpec,
    Node,
    NodeResources,
    TaskState,
    TaskStateName,
)
from podium.server import catalog
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore
from podium.state.store import SERVICES

from .conftest import Cluster, place


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def job_spec(job_id: str = "web", count: int = 1, **service: Any) -> dict[str, Any]:
    svc = {"name": "web", "port": "http", "tags": ["v1", "blue"], **service}
    return {
        "job": job_id,
        "groups": {
            "g": {
                "count": count,
                "network": {"ports": {"http": {}, "admin": {}}},
                "services": [svc, {"name": "web-admin", "port": "admin"}],
                "tasks": {"t": {"driver": "mock", "config": {"run_for": "1h"}}},
            }
        },
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[Server]:
    store = StateStore()
    srv = Server(store, ServerConfig(heartbeat_ttl=10, heartbeat_grace=10), clock=clock)
    original = store.commit

    def commit(txn: Any) -> int:
        index = original(txn)
        check_catalog(store)
        return index

    store.commit = commit  # type: ignore[method-assign]
    yield srv


def check_catalog(store: StateStore) -> None:
    """After every commit: only wanted, running allocations of live jobs are registered."""
    for reg in store.service_registrations():
        alloc = store.alloc(reg.alloc_id)
        assert alloc is not None, f"{reg.id}: its allocation is gone"
        assert alloc.desired_status == DesiredStatus.RUN, f"{reg.id}: registered while stopping"
        assert alloc.client_status == ClientStatus.RUNNING, f"{reg.id}: {alloc.client_status}"
        job = store.job(alloc.job_id)
        assert job is not None and not job.stop, f"{reg.id}: its job is stopped"


def add_node(server: Server, name: str = "n1", addr: str = "10.0.0.5") -> Node:
    node = Node(
        id=f"node-{name}",
        name=name,
        http_addr=f"http://{addr}:4646",
        resources=NodeResources(cpu=4000, memory=4096),
        drivers={"mock": DriverInfo(detected=True, healthy=True)},
    )
    server.register_node(node)
    return node


def running(
    alloc: Allocation,
    checks: dict[str, CheckResult] | None = None,
    status: ClientStatus = ClientStatus.RUNNING,
    addr: str = "10.0.0.5",
) -> AllocClientUpdate:
    state = TaskStateName.RUNNING if status == ClientStatus.RUNNING else TaskStateName.DEAD
    return AllocClientUpdate(
        id=alloc.id,
        client_status=status,
        task_states={"t": TaskState(state=state)},
        ports={
            "http": AllocatedPort(value=23001 + alloc.index, host_ip=addr),
            "admin": AllocatedPort(value=24001 + alloc.index, host_ip=addr),
        },
        checks=checks,
    )


def passing(name: str, service: str = "web") -> CheckResult:
    return CheckResult(name=name, service=service, status=CheckStatus.PASSING, output="ok")


def critical(name: str, service: str = "web") -> CheckResult:
    return CheckResult(
        name=name, service=service, status=CheckStatus.CRITICAL, consecutive_failures=1
    )


HTTP_CHECK = {"checks": [{"name": "alive", "type": "http", "path": "/health"}]}


# --------------------------------------------------------------------------- registering


def test_a_running_report_registers_each_service_with_address_port_tags(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    assert server.store.service_registrations() == []  # placed is not running
    server.client_update(node.id, [running(alloc)])
    web, admin = (server.store.services_by_name(n) for n in ("web", "web-admin"))
    assert len(web) == 1 and len(admin) == 1
    reg = web[0]
    assert (reg.alloc_id, reg.node_id, reg.job_id, reg.group) == (alloc.id, node.id, "web", "g")
    assert (reg.address, reg.port, reg.tags) == ("10.0.0.5", 23001, ["v1", "blue"])
    assert reg.healthy  # no checks: healthy while it runs
    assert reg.id == f"{alloc.id}/web"
    assert admin[0].port == 24001
    assert [r.service_name for r in server.store.services_by_alloc(alloc.id)] == [
        "web",
        "web-admin",
    ]


def test_the_node_address_is_used_when_the_port_has_no_host_ip(server: Server) -> None:
    node = add_node(server, addr="10.1.2.3")
    (alloc,) = place(server, job_spec())
    server.client_update(node.id, [running(alloc, addr="0.0.0.0")])
    assert server.store.services_by_name("web")[0].address == "10.1.2.3"


def test_health_follows_the_checks_and_results_are_kept_on_the_allocation(
    server: Server,
) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec(**HTTP_CHECK))
    server.client_update(node.id, [running(alloc)])
    (reg,) = server.store.services_by_name("web")
    assert not reg.healthy  # the check has not reported yet: pending
    assert reg.checks["alive"].status == CheckStatus.PENDING

    server.client_update(node.id, [running(alloc, {"alive": passing("alive")})])
    (reg,) = server.store.services_by_name("web")
    assert reg.healthy and reg.checks["alive"].output == "ok"
    stored = server.store.alloc(alloc.id)
    assert stored is not None and stored.checks["alive"].status == CheckStatus.PASSING

    # a report without checks (None: unchanged) keeps them
    server.client_update(node.id, [running(alloc, None)])
    stored = server.store.alloc(alloc.id)
    assert stored is not None and "alive" in stored.checks
    assert server.store.services_by_name("web")[0].healthy

    server.client_update(node.id, [running(alloc, {"alive": critical("alive")})])
    assert not server.store.services_by_name("web")[0].healthy
    # the other service has no checks of its own
    assert server.store.services_by_name("web-admin")[0].healthy


def test_a_failing_driver_health_makes_every_service_unhealthy(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    health = CheckResult(name="t-driver-health", service="", status=CheckStatus.CRITICAL)
    server.client_update(node.id, [running(alloc, {"t-driver-health": health})])
    assert not any(r.healthy for r in server.store.service_registrations())


def test_a_restarting_task_is_not_healthy(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    update = running(alloc)
    update.task_states["t"] = TaskState(state=TaskStateName.PENDING, restarts=1)
    server.client_update(node.id, [update])
    assert not server.store.services_by_name("web")[0].healthy


def test_an_unchanged_report_writes_nothing_to_the_catalog(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec(**HTTP_CHECK))
    server.client_update(node.id, [running(alloc, {"alive": passing("alive")})])
    before = server.store.table_index(SERVICES)
    (reg,) = server.store.services_by_name("web")
    server.client_update(node.id, [running(alloc, {"alive": passing("alive")})])
    assert server.store.table_index(SERVICES) == before
    assert server.store.services_by_name("web")[0].modify_index == reg.modify_index


# --------------------------------------------------------------------------- leaving


def _removed_with_stop(server: Server, alloc: Allocation) -> None:
    stored = server.store.alloc(alloc.id)
    assert stored is not None and stored.desired_status == DesiredStatus.STOP
    assert server.store.services_by_alloc(alloc.id) == []
    # the registration went in the very commit that stopped the allocation
    assert server.store.table_index(SERVICES) >= stored.modify_index


def test_job_stop_deregisters_at_once_and_the_plan_keeps_it_so(server: Server) -> None:
    node = add_node(server)
    allocs = place(server, job_spec(count=2))
    server.client_update(node.id, [running(a) for a in allocs])
    assert len(server.store.services_by_name("web")) == 2
    eval_id, index = server.stop_job("web")
    assert server.store.service_registrations() == []
    assert server.store.table_index(SERVICES) == index
    # a report racing the plan (tasks still running) does not bring them back
    server.client_update(node.id, [running(a) for a in allocs])
    assert server.store.service_registrations() == []
    ev = server.store.evaluation(eval_id)
    assert ev is not None
    server.process_eval(ev)
    for a in allocs:
        stored = server.store.alloc(a.id)
        assert stored is not None and stored.desired_status == DesiredStatus.STOP


def test_scaling_down_deregisters_in_the_plan_that_stops(server: Server) -> None:
    node = add_node(server)
    allocs = place(server, job_spec(count=2))
    server.client_update(node.id, [running(a) for a in allocs])
    place(server, job_spec(count=1))
    stopped = [
        a for a in server.store.allocs_by_job("web") if a.desired_status == DesiredStatus.STOP
    ]
    assert len(stopped) == 1
    _removed_with_stop(server, stopped[0])
    assert len(server.store.services_by_name("web")) == 1


def test_a_terminal_report_deregisters(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    server.client_update(node.id, [running(alloc)])
    server.client_update(node.id, [running(alloc, status=ClientStatus.FAILED)])
    assert server.store.service_registrations() == []


def test_a_drain_deregisters_with_the_stop(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    server.client_update(node.id, [running(alloc)])
    server.drain_node(node.id, deadline=60)
    _removed_with_stop(server, alloc)


def test_a_node_that_goes_down_leaves_the_catalog_until_it_is_back(
    server: Server, clock: Clock
) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    server.client_update(node.id, [running(alloc)])
    clock.now += 60
    assert server.check_heartbeats() == [node.id]
    assert server.store.service_registrations() == []
    # it reconnects before the scheduler gave up on the allocation: it is back at once
    server.heartbeat(node.id)
    assert [r.alloc_id for r in server.store.services_by_name("web")] == [alloc.id]


def test_in_place_update_refreshes_tags_and_keeps_check_results(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec(**HTTP_CHECK))
    server.client_update(node.id, [running(alloc, {"alive": passing("alive")})])
    place(server, job_spec(tags=["v2"], **HTTP_CHECK))  # services change in place
    (reg,) = server.store.services_by_name("web")
    assert reg.alloc_id == alloc.id and reg.tags == ["v2"] and reg.healthy


def test_gc_of_a_purged_job_leaves_nothing(server: Server) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    server.client_update(node.id, [running(alloc)])
    server.stop_job("web", purge=True)
    assert server.store.service_registrations() == []


def test_summaries_and_the_healthy_filter(server: Server) -> None:
    node = add_node(server)
    allocs = place(server, job_spec(count=2, **HTTP_CHECK))
    good, bad = allocs
    server.client_update(
        node.id,
        [running(good, {"alive": passing("alive")}), running(bad, {"alive": critical("alive")})],
    )
    assert [r.alloc_id for r in catalog.instances(server.store, "web", healthy=True)] == [good.id]
    assert [r.alloc_id for r in catalog.instances(server.store, "web", healthy=False)] == [bad.id]
    web, admin = catalog.summaries(server.store)
    assert (web.name, web.instances, web.healthy, web.tags) == ("web", 2, 1, ["blue", "v1"])
    assert (admin.name, admin.instances, admin.healthy) == ("web-admin", 2, 2)


# --------------------------------------------------------------------------- the API


@pytest.fixture
async def api(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://podium") as client:
        yield client


async def test_the_service_endpoints(server: Server, api: httpx.AsyncClient) -> None:
    node = add_node(server)
    good, bad = place(server, job_spec(count=2, **HTTP_CHECK))
    server.client_update(
        node.id,
        [running(good, {"alive": passing("alive")}), running(bad, {"alive": critical("alive")})],
    )
    r = await api.get("/v1/services")
    assert r.status_code == 200
    assert int(r.headers["X-Podium-Index"]) == server.store.table_index(SERVICES)
    assert [(s["name"], s["instances"], s["healthy"]) for s in r.json()] == [
        ("web", 2, 1),
        ("web-admin", 2, 2),
    ]
    every = (await api.get("/v1/service/web")).json()
    assert {i["alloc_id"] for i in every} == {good.id, bad.id}
    for key in ("alloc_id", "node_id", "address", "port", "tags", "healthy"):
        assert key in every[0]
    healthy = (await api.get("/v1/service/web", params={"healthy": "true"})).json()
    assert [(i["alloc_id"], i["port"]) for i in healthy] == [(good.id, 23001 + good.index)]
    assert (await api.get("/v1/service/nope")).json() == []


async def test_a_blocking_query_on_a_service_wakes_on_registration(
    server: Server, api: httpx.AsyncClient
) -> None:
    node = add_node(server)
    (alloc,) = place(server, job_spec())
    first = await api.get("/v1/service/web")
    assert first.json() == []
    index = int(first.headers["X-Podium-Index"])
    waiter = asyncio.create_task(api.get("/v1/service/web", params={"index": index, "wait": "10s"}))
    listing = asyncio.create_task(api.get("/v1/services", params={"index": index, "wait": "10s"}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done() and not listing.done()
    # an unrelated write (a job's evaluation) does not answer the query
    server.register_job(JobSpec.model_validate(job_spec("other")))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    server.client_update(node.id, [running(alloc)])
    async with asyncio.timeout(5):
        answer = await waiter
        listed = await listing
    assert [i["alloc_id"] for i in answer.json()] == [alloc.id]
    assert int(answer.headers["X-Podium-Index"]) > index
    assert [s["name"] for s in listed.json()] == ["web", "web-admin"]


# --------------------------------------------------------------------------- in-process cluster


SCRIPT_JOB: dict[str, Any] = {
    "job": "api",
    "groups": {
        "g": {
            "network": {"ports": {"http": {}}},
            "services": [
                {
                    "name": "api",
                    "port": "http",
                    "tags": ["v1"],
                    "checks": [
                        {
                            "name": "ready",
                            "type": "script",
                            "command": "/bin/sh",
                            "args": ["-c", 'test -n "$PODIUM_ALLOC_ID"'],
                            "interval": "10s",
                        }
                    ],
                }
            ],
            "tasks": {"t": {"driver": "mock", "config": {"run_for": "1h"}}},
        }
    },
}


async def test_cluster_registers_a_checked_service_and_removes_it_before_the_kill(
    cluster: Cluster,
) -> None:
    agent = await cluster.add_agent()
    await cluster.run(SCRIPT_JOB)
    regs = await cluster.until(
        lambda: [r for r in cluster.store.services_by_name("api") if r.healthy],
        what="a healthy registration",
    )
    (reg,) = regs
    (alloc,) = cluster.running("api")
    assert reg.alloc_id == alloc.id and reg.node_id == agent.node_id
    assert reg.port == alloc.ports["http"].value and reg.tags == ["v1"]
    assert alloc.checks["ready"].status == CheckStatus.PASSING
    runner = agent.runners[alloc.id]
    assert isinstance(runner.checks, AllocChecks) and runner.checks.running == ["ready"]

    # when the driver is told to stop the task, the catalog has already let it go
    driver = agent.drivers["mock"]
    seen_at_kill: list[int] = []
    original_stop = driver.stop

    async def stop(handle: TaskHandle, signal: str, timeout: float) -> None:
        seen_at_kill.append(len(cluster.store.services_by_name("api")))
        seen_at_kill.append(len(runner.checks.running))
        await original_stop(handle, signal, timeout)

    driver.stop = stop  # type: ignore[method-assign]
    await cluster.client.stop_job("api")
    await cluster.until(
        lambda: all(a.client_status == ClientStatus.COMPLETE for a in cluster.allocs("api")),
        what="the allocation to stop",
    )
    assert seen_at_kill == [0, 0]
    assert cluster.store.service_registrations() == []


async def test_the_sdk_reads_the_catalog_and_blocks(server: Server) -> None:
    from podium.client import AsyncClient, endpoints

    node = add_node(server)
    (alloc,) = place(server, job_spec(**HTTP_CHECK))
    transport = httpx.ASGITransport(app=create_app(server))
    async with AsyncClient("http://podium", transport=transport) as client:
        assert await client.services() == []
        first = await client.query(endpoints.service("web", healthy=True))
        waiter = asyncio.create_task(client.service("web", True, index=first.index, wait="10s"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiter.done()
        server.client_update(node.id, [running(alloc, {"alive": passing("alive")})])
        async with asyncio.timeout(5):
            (instance,) = await waiter
        assert instance.alloc_id == alloc.id and instance.healthy
        (summary, _) = await client.services()
        assert (summary.name, summary.instances, summary.healthy) == ("web", 1, 1)
        assert await client.service("web", healthy=False) == []
