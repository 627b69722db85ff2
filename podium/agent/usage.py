"""Allocations' resource usage on this node, from the drivers (cgroups, /proc, docker stats).

Both the agent's ``GET /v1/client/allocation/{id}/stats`` (which the servers relay as
``/v1/allocation/{id}/stats``) and its metrics read usage through here: one allocation
on demand, or every running allocation at a scrape (sampled concurrently, each driver
call bounded by :data:`SAMPLE_TIMEOUT`, so one stuck container cannot hold a scrape).
Only running tasks are sampled; a task whose driver fails to answer is left out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from podium.agent.allocrunner import Phase
from podium.models.stats import AllocResourceUsage, TaskResourceUsage

if TYPE_CHECKING:
    from podium.agent.agent import Agent
    from podium.agent.runner import AllocRunner

log = logging.getLogger("podium.agent")

SAMPLE_TIMEOUT = 5.0
"""Seconds one task's driver may take to answer (docker stats waits for two samples)."""
SAMPLE_CONCURRENCY = 16
"""Tasks sampled at once at a scrape (docker stats run on threads)."""


def running_tasks(runner: AllocRunner) -> list[str]:
    """The allocation's tasks that run now (and have a driver handle)."""
    return [
        name
        for name, track in runner.machine.tasks.items()
        if track.phase == Phase.RUNNING and name in runner.handles
    ]


async def task_usage(runner: AllocRunner, task: str) -> TaskResourceUsage | None:
    """One running task's usage, or None when its driver cannot say (in time)."""
    handle = runner.handles.get(task)
    if handle is None:
        return None
    try:
        driver = runner.driver_for(task)
        stats = await asyncio.wait_for(driver.stats(handle), SAMPLE_TIMEOUT)
    except Exception as exc:  # a driver's failure leaves the task out, never the answer
        log.debug("alloc %s task %s: no stats: %s", runner.id, task, exc)
        return None
    return TaskResourceUsage(
        cpu_percent=round(stats.cpu_percent, 3),
        memory_bytes=stats.memory_rss_bytes,
        memory_limit_bytes=stats.memory_limit_bytes,
        pids=stats.pids,
    )


async def alloc_usage(
    agent: Agent, runner: AllocRunner, gate: asyncio.Semaphore | None = None
) -> AllocResourceUsage:
    """The usage of the allocation's running tasks, summed and per task."""

    async def one(task: str) -> tuple[str, TaskResourceUsage | None]:
        if gate is None:
            return task, await task_usage(runner, task)
        async with gate:
            return task, await task_usage(runner, task)

    sampled = await asyncio.gather(*(one(t) for t in running_tasks(runner)))
    tasks = {name: usage for name, usage in sampled if usage is not None}
    return AllocResourceUsage(
        alloc_id=runner.id,
        node_id=agent.node_id,
        timestamp=time.time(),
        cpu_percent=round(sum(t.cpu_percent for t in tasks.values()), 3),
        memory_bytes=sum(t.memory_bytes for t in tasks.values()),
        tasks=tasks,
    )


async def sample_all(agent: Agent) -> dict[str, AllocResourceUsage]:
    """Every allocation with a running task, by id (at most SAMPLE_CONCURRENCY tasks
    sampled at once)."""
    gate = asyncio.Semaphore(SAMPLE_CONCURRENCY)
    runners = [r for r in list(agent.runners.values()) if running_tasks(r)]
    usages = await asyncio.gather(*(alloc_usage(agent, r, gate) for r in runners))
    return {u.alloc_id: u for u in usages}
