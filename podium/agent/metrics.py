"""An agent's Prometheus metrics: one registry per :class:`~podium.agent.agent.Agent`.

What happens as it happens is counted in plain integers here (:class:`AgentMetrics`: a
task started, its start latency, a restart, a task re-attached after an agent restart),
so an agent that is never scraped (each of ``podium sim``'s thousands) pays a few integer
additions and no registry.  The registry is built on the first scrape; its collector
(:class:`AgentCollector`) reads those integers and the agent's state then: tasks by
state, allocations, and the resource usage of every running task (podium.agent.usage:
cgroups, /proc, docker stats), sampled by the scrape itself.

Names follow ``podium_agent_<name>_<unit>``; docs/metrics.md lists them all.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from podium.agent.allocrunner import Phase
from podium.agent.usage import sample_all
from podium.metrics import LoopLag, add_process_metrics
from podium.models.stats import AllocResourceUsage

if TYPE_CHECKING:
    from podium.agent.agent import Agent

START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds from the decision to start a task to its driver's answer (a process: tens of
milliseconds; a container: up to an image's pull)."""
HEARTBEAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds from a heartbeat's first send to the server's answer (retries included): a few
milliseconds on a quiet server; past the TTL, a node close to being declared down."""
USAGE_LABELS = ["namespace", "job_id", "group", "alloc_id", "task"]
"""``job_id``, not ``job``: Prometheus gives every target a ``job`` label of its own (the
scrape job), and would rename a clashing one to ``exported_job``."""


class AgentMetrics:
    """The agent's counters (plain integers) and, once scraped, its registry."""

    # slots: ``podium sim`` holds thousands of agents in one process
    __slots__ = (
        "_heartbeat_buckets",
        "_heartbeat_sum",
        "_registry",
        "_start_buckets",
        "_start_sum",
        "heartbeat_retries",
        "loop_lag",
        "task_reattached",
        "task_restarts",
        "task_start_failures",
        "task_starts",
        "usage",
    )

    def __init__(self) -> None:
        self.task_starts: dict[str, int] = {}
        """Tasks started, by driver."""
        self.task_start_failures: dict[str, int] = {}
        self.task_restarts = 0
        """Starts of a task that had run on this node before (its restart policy, a
        template's change_mode: restart)."""
        self.task_reattached = 0
        """Tasks found running and re-attached to after the agent restarted."""
        self.heartbeat_retries = 0
        """Heartbeats sent again because the last went unanswered for TTL/2 (at most 10 s)."""
        self._start_buckets = [0] * (len(START_BUCKETS) + 1)
        self._start_sum = 0.0
        self._heartbeat_buckets = [0] * (len(HEARTBEAT_BUCKETS) + 1)
        self._heartbeat_sum = 0.0
        self.usage: dict[str, AllocResourceUsage] = {}
        """The last scrape's sample of every running allocation."""
        self._registry: CollectorRegistry | None = None
        self.loop_lag: LoopLag | None = None

    # ---------------------------------------------------------------- hot path (cheap)
    def started(self, driver: str, seconds: float, restart: bool) -> None:
        self.task_starts[driver] = self.task_starts.get(driver, 0) + 1
        self._start_buckets[bisect_left(START_BUCKETS, seconds)] += 1
        self._start_sum += seconds
        if restart:
            self.task_restarts += 1

    def heartbeat_answered(self, seconds: float) -> None:
        """A heartbeat was answered ``seconds`` after it was first sent."""
        self._heartbeat_buckets[bisect_left(HEARTBEAT_BUCKETS, seconds)] += 1
        self._heartbeat_sum += seconds

    def start_failed(self, driver: str) -> None:
        self.task_start_failures[driver] = self.task_start_failures.get(driver, 0) + 1

    def reattached(self) -> None:
        self.task_reattached += 1

    # ---------------------------------------------------------------- scrape
    def registry(self, agent: Agent) -> CollectorRegistry:
        """The agent's registry (built on first use, with the event-loop lag timer)."""
        if self._registry is None:
            registry = CollectorRegistry(auto_describe=True)
            add_process_metrics(registry)
            self.loop_lag = LoopLag(registry)
            registry.register(AgentCollector(agent, self))
            self._registry = registry
        assert self.loop_lag is not None
        self.loop_lag.start()
        return self._registry

    async def sample(self, agent: Agent) -> None:
        """Sample every running allocation's usage, for the next collection."""
        self.usage = await sample_all(agent)

    def start_histogram(self) -> HistogramMetricFamily:
        return _histogram(
            "podium_agent_task_start_duration_seconds",
            "Time from the agent's decision to start a task to its driver's answer.",
            START_BUCKETS,
            self._start_buckets,
            self._start_sum,
        )

    def heartbeat_histogram(self) -> HistogramMetricFamily:
        return _histogram(
            "podium_agent_heartbeat_duration_seconds",
            "Time from a heartbeat's first send to the server's answer, retries included.",
            HEARTBEAT_BUCKETS,
            self._heartbeat_buckets,
            self._heartbeat_sum,
        )


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, n in zip([*bounds, float("inf")], counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class AgentCollector(Collector):
    """The agent's figures, read at scrape time (see the module)."""

    def __init__(self, agent: Agent, metrics: AgentMetrics) -> None:
        self.agent = agent
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        agent, m = self.agent, self.metrics
        runners = list(agent.runners.values())
        tasks = GaugeMetricFamily(
            "podium_agent_tasks", "Tasks of this node's allocations, by state.", labels=["state"]
        )
        phases = dict.fromkeys((p.value for p in Phase), 0)
        for runner in runners:
            for track in runner.machine.tasks.values():
                phases[track.phase.value] += 1
        for phase, n in phases.items():
            tasks.add_metric([phase], n)
        yield tasks
        allocs = GaugeMetricFamily(
            "podium_agent_allocations", "Allocations this agent holds (running or not)."
        )
        allocs.add_metric([], len(runners))
        yield allocs
        starts = CounterMetricFamily(
            "podium_agent_task_starts", "Tasks started, by driver.", labels=["driver"]
        )
        drivers = sorted(set(agent.drivers) | set(m.task_starts) | set(m.task_start_failures))
        for driver in drivers:  # every driver, from 0: a series that appears late has no rate
            starts.add_metric([driver], m.task_starts.get(driver, 0))
        yield starts
        failures = CounterMetricFamily(
            "podium_agent_task_start_failures",
            "Task starts the driver refused or failed, by driver.",
            labels=["driver"],
        )
        for driver in drivers:
            failures.add_metric([driver], m.task_start_failures.get(driver, 0))
        yield failures
        yield m.start_histogram()
        yield m.heartbeat_histogram()
        yield CounterMetricFamily(
            "podium_agent_task_restarts",
            "Starts of a task that had already run on this node (restart policy, template "
            "change_mode restart).",
            value=m.task_restarts,
        )
        yield CounterMetricFamily(
            "podium_agent_task_reattached",
            "Running tasks the agent re-attached to after it restarted.",
            value=m.task_reattached,
        )
        yield CounterMetricFamily(
            "podium_agent_heartbeat_retries",
            "Heartbeats sent again at once because the previous one went unanswered for "
            "TTL/2, at most 10 s (a server's backlog, a dead connection).",
            value=m.heartbeat_retries,
        )
        yield from self._usage()

    def _usage(self) -> Iterable[Metric]:
        cpu = GaugeMetricFamily(
            "podium_agent_task_cpu_cores",
            "CPU a running task used over the last sample: cores kept busy (0.5: half a "
            "core; the API's cpu_percent / 100).",
            labels=USAGE_LABELS,
        )
        memory = GaugeMetricFamily(
            "podium_agent_task_memory_bytes",
            "Memory a running task is charged (its cgroup or container; else its processes' RSS).",
            labels=USAGE_LABELS,
        )
        limit = GaugeMetricFamily(
            "podium_agent_task_memory_limit_bytes",
            "The hard memory limit of a running task (tasks without one are left out).",
            labels=USAGE_LABELS,
        )
        for usage in self.metrics.usage.values():
            runner = self.agent.runners.get(usage.alloc_id)
            if runner is None:
                continue
            alloc = runner.alloc
            for name, task in sorted(usage.tasks.items()):
                labels = [alloc.namespace, alloc.job_id, alloc.group, alloc.id, name]
                cpu.add_metric(labels, task.cpu_percent / 100.0)
                memory.add_metric(labels, task.memory_bytes)
                if task.memory_limit_bytes is not None:
                    limit.add_metric(labels, task.memory_limit_bytes)
        yield cpu
        yield memory
        yield limit
