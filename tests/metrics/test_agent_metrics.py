"""A real ``podium agent --dev`` (server and agent in one process, tasks as real
processes): the agent's ``/v1/metrics`` shows its running tasks and their memory, the
server relays an allocation's resource usage from the agent, and ``podium alloc status``
shows it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from podium.client import AsyncClient, Client
from podium.errors import Conflict
from podium.models.stats import AllocResourceUsage
from tests.e2e.conftest import DevAgent, wait_until, write_job

MIB = 1024 * 1024

JOB = """
job: hungry
groups:
  capped:
    tasks:
      t:
        driver: raw_exec
        resources: {cpu: 100, memory: 64, memory_max: 96}
        config:
          command: /bin/sh
          args: ["-c", "x=$(head -c 4000000 /dev/zero | tr '\\\\0' a); echo ready; exec sleep 300"]
  plain:
    tasks:
      t:
        driver: raw_exec
        resources: {cpu: 100, memory: 64}
        config: {command: /bin/sleep, args: ["300"]}
"""


def agent_addr(dev: DevAgent) -> str:
    return str(dev.get("/v1/nodes")[0]["http_addr"])


def scrape(url: str, **params: str) -> dict[str, list[Any]]:
    r = httpx.get(f"{url}/v1/metrics", params=params, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(r.text):
        out[family.name] = list(family.samples)
    return out


def test_agent_metrics_and_alloc_stats_of_real_processes(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, JOB), check=True)
    allocs = {a["group"]: a for a in dev_agent.wait_running("hungry", 2)}
    capped, plain = allocs["capped"], allocs["plain"]
    agent = agent_addr(dev_agent)

    # the agent's metrics: its running tasks, and each one's memory
    def measured() -> dict[str, list[Any]] | None:
        m = scrape(agent)
        memory = {s.labels["alloc_id"]: s.value for s in m["podium_agent_task_memory_bytes"]}
        return m if memory.get(capped["id"], 0) > 0 and memory.get(plain["id"], 0) > 0 else None

    m = wait_until(measured, timeout=30, what="both tasks' memory in the agent's metrics")
    tasks = {s.labels["state"]: s.value for s in m["podium_agent_tasks"]}
    assert tasks["running"] == 2
    assert [s.value for s in m["podium_agent_allocations"]] == [2]
    starts = {s.labels["driver"]: s.value for s in m["podium_agent_task_starts"]}
    assert starts["raw_exec"] == 2 and sum(starts.values()) == 2
    start_count = [
        s for s in m["podium_agent_task_start_duration_seconds"] if s.name.endswith("_count")
    ]
    assert start_count[0].value == 2
    labels = {s.labels["alloc_id"]: s.labels for s in m["podium_agent_task_memory_bytes"]}
    assert labels[capped["id"]] == {
        "namespace": "default",
        "job_id": "hungry",
        "group": "capped",
        "alloc_id": capped["id"],
        "task": "t",
    }
    limits = {s.labels["alloc_id"]: s.value for s in m["podium_agent_task_memory_limit_bytes"]}
    assert limits == {capped["id"]: 96 * MIB}, "only the task with memory_max has a limit"
    assert m["podium_process_resident_memory_bytes"][0].value > 0
    # the same, relayed by the server (where Prometheus cannot reach the agent itself)
    relayed = httpx.get(f"{dev_agent.addr}/v1/node/{capped['node_id']}/metrics", timeout=30)
    assert relayed.status_code == 200 and relayed.headers["content-type"].startswith("text/plain")
    assert {f.name for f in text_string_to_metric_families(relayed.text)} == set(m)
    r = httpx.get(f"{dev_agent.addr}/v1/node/no-such-node/metrics", timeout=30)
    assert r.status_code == 404, r.text
    # the agent's JSON form
    body = httpx.get(f"{agent}/v1/metrics", params={"format": "json"}, timeout=30).json()
    assert "podium_agent_tasks" in {f["name"] for f in body["metrics"]}

    # the server relays the allocation's usage from its agent
    stats = dev_agent.get(f"/v1/allocation/{capped['id']}/stats")
    assert stats["alloc_id"] == capped["id"] and stats["node_id"] == capped["node_id"]
    task = stats["tasks"]["t"]
    assert task["memory_bytes"] > 0 and task["memory_limit_bytes"] == 96 * MIB
    assert task["pids"] >= 1 and task["cpu_percent"] >= 0
    assert stats["memory_bytes"] == task["memory_bytes"]
    plain_stats = dev_agent.get(f"/v1/allocation/{plain['id'][:8]}/stats")  # a prefix will do
    assert plain_stats["tasks"]["t"]["memory_limit_bytes"] is None
    assert plain_stats["tasks"]["t"]["memory_bytes"] > 0 and plain_stats["tasks"]["t"]["pids"] == 1

    # the SDK, sync and async
    with Client(dev_agent.addr) as client:
        usage = client.alloc_stats(capped["id"])
    assert usage.alloc_id == capped["id"] and usage.tasks["t"].memory_limit_bytes == 96 * MIB

    async def async_usage() -> AllocResourceUsage:
        async with AsyncClient(dev_agent.addr) as client:
            return await client.alloc_stats(plain["id"])

    assert asyncio.run(async_usage()).tasks["t"].pids == 1

    # podium alloc status: a Resource Usage block for the running task
    out = dev_agent.cli("alloc", "status", capped["id"], check=True).stdout
    assert "Resource Usage" in out and "of a core" in out and "of 96.0 MiB" in out, out

    # unknown: 404; stopped: 409, saying why
    r = httpx.get(f"{dev_agent.addr}/v1/allocation/ffffffff-0000/stats", timeout=10)
    assert r.status_code == 404, r.text
    dev_agent.cli("job", "stop", "hungry", check=True)
    wait_until(
        lambda: all(a["client_status"] == "complete" for a in dev_agent.allocs("hungry")),
        what="the job's tasks to stop",
    )
    r = httpx.get(f"{dev_agent.addr}/v1/allocation/{capped['id']}/stats", timeout=10)
    assert r.status_code == 409 and "not running" in r.json()["error"], r.text
    with Client(dev_agent.addr) as client, pytest.raises(Conflict, match="not running"):
        client.alloc_stats(capped["id"])
    m = scrape(agent)
    assert not m["podium_agent_task_memory_bytes"], "stopped tasks leave the usage metrics"


def test_alloc_stats_of_a_container(dev_agent: DevAgent, tmp_path: Path) -> None:
    """docker stats through the agent: memory, its limit and the container's processes."""
    from tests.e2e.test_docker import IMAGE, SKIP  # here: it asks the engine on import

    if SKIP is not None:
        pytest.skip(SKIP)
    job = f"""
job: boxed
groups:
  g:
    tasks:
      t:
        driver: docker
        resources: {{cpu: 100, memory: 32, memory_max: 64}}
        config:
          image: {IMAGE}
          command: /bin/sh
          args: ["-c", "sleep 300 & sleep 300 & wait"]
"""
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, job), check=True)
    alloc = dev_agent.wait_running("boxed", 1, timeout=60)[0]
    stats = wait_until(
        lambda: (
            (s := dev_agent.get(f"/v1/allocation/{alloc['id']}/stats"))["tasks"]["t"][
                "memory_bytes"
            ]
            > 0
            and s
        ),
        timeout=30,
        what="the container's memory",
    )
    task = stats["tasks"]["t"]
    assert task["pids"] >= 3, task  # the shell and its two sleeps
    assert task["memory_limit_bytes"] is not None and task["memory_limit_bytes"] >= 64 * MIB
    assert stats["memory_bytes"] == task["memory_bytes"]
    out = dev_agent.cli("alloc", "status", alloc["id"], check=True).stdout
    assert "Resource Usage" in out and "Processes" in out, out


def test_reattached_tasks_are_counted_after_an_agent_restart(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    job = """
job: keep
groups:
  g:
    count: 2
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["300"]}
"""
    dev_agent.cli("job", "run", "--detach", write_job(tmp_path, job), check=True)
    dev_agent.wait_running("keep", 2)
    before = scrape(agent_addr(dev_agent))
    assert [s.value for s in before["podium_agent_task_reattached"]] == [0]
    dev_agent.kill9()
    dev_agent.start()
    dev_agent.wait_running("keep", 2)
    after = scrape(agent_addr(dev_agent))
    assert [s.value for s in after["podium_agent_task_reattached"]] == [2]
    starts = {s.labels["driver"]: s.value for s in after["podium_agent_task_starts"]}
    assert starts["raw_exec"] == 0, "a re-attached task is not started again"
