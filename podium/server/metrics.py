"""A server's Prometheus metrics: one registry per :class:`~podium.server.core.Server`.

Most figures are read from the server's state when Prometheus scrapes (a custom
collector, :class:`StateCollector`): nodes by status, allocations by client status, jobs
and deployments by status, the broker's queues by scheduler type, the store's index and
files, and the scheduling worker's counters (:class:`~podium.server.worker.SchedulerStats`,
plain integers the worker already keeps).  Nothing on a hot path updates them.

What can only be seen as it happens is timed where it happens, through hooks that cost a
``perf_counter`` pair and a histogram observation when metrics are on, and nothing when
they are off: the scheduler's and the applier's time per evaluation (the worker's
``stats.observe``), the store's commit and durable-write time (``store.commit_observer``),
and the API's requests (podium.server.api_metrics, by route template and status, counted
in plain numbers by :class:`RequestStats`: every agent's heartbeat passes there).

Names follow ``podium_<subsystem>_<name>_<unit>``; docs/metrics.md lists them all.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from podium.metrics import LoopLag, add_process_metrics
from podium.models import ClientStatus, DeploymentStatus, NodeStatus
from podium.models.state import JobStatus
from podium.state.sqlite import SqliteBackend

if TYPE_CHECKING:
    from podium.server.core import Server

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: from half a millisecond (a small commit, a heartbeat) to ten seconds (a
blocking query's wait is not in the API's histogram: see api_metrics)."""


class ServerMetrics:
    """The registry of one server and the histograms its hot paths feed."""

    def __init__(self, server: Server) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.scheduling_seconds = Histogram(
            "podium_scheduler_evaluation_duration_seconds",
            "Time the scheduler took to plan one evaluation (each attempt; a plan the "
            "applier rejects is planned again).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.apply_seconds = Histogram(
            "podium_applier_commit_duration_seconds",
            "Time the plan applier took to check and commit one plan.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "podium_store_commit_duration_seconds",
            "Time one store commit took: encoding, the durable write, applying it in memory.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.write_seconds = Histogram(
            "podium_store_write_duration_seconds",
            "Time the store's backend took to make one commit durable (SQLite: the "
            "transaction and its fsync; etcd: the transaction's round trip).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = RequestStats()
        """The API's requests by route and status (fed by podium.server.api_metrics)."""
        registry.register(self.requests)
        self.loop_lag = LoopLag(registry)
        add_process_metrics(registry)
        registry.register(StateCollector(server))
        # the hot paths' hooks
        scheduling, applying = self.scheduling_seconds.observe, self.apply_seconds.observe

        def observe_eval(planned: float, applied: float) -> None:
            scheduling(planned)
            applying(applied)

        committing, writing = self.commit_seconds.observe, self.write_seconds.observe

        def observe_commit(total: float, written: float) -> None:
            committing(total)
            writing(written)

        server.worker.stats.observe = observe_eval
        server.store.commit_observer = observe_commit


class RequestStats(Collector):
    """The API's requests: counted by (method, route template, status) and timed by
    (method, route), in plain integers and lists on the event loop, exported at scrape
    time.  A request costs a dict lookup, two additions and a bisect (about a microsecond;
    prometheus_client's labelled Counter and Histogram take a lock each and cost twice
    that), since every agent's heartbeat and sync passes here."""

    BOUNDS = LATENCY_BUCKETS

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.timings: dict[tuple[str, str], list[float]] = {}
        """(method, route) -> a count per bucket (the last: above every bound), then
        the sum of the seconds."""

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        timing = self.timings.get((method, route))
        if timing is None:
            timing = self.timings[(method, route)] = [0.0] * (len(self.BOUNDS) + 2)
        timing[bisect_left(self.BOUNDS, seconds)] += 1
        timing[-1] += seconds

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "podium_api_requests",
            "HTTP API requests answered, by method, route (its path template, never the "
            "raw path; 'unmatched': no route) and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), n in sorted(self.counts.items()):
            requests.add_metric([method, route, str(status)], n)
        yield requests
        seconds = HistogramMetricFamily(
            "podium_api_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte, by method and route "
            "(blocking queries and log streams include their wait).",
            labels=["method", "route"],
        )
        bounds = [*(repr(b) for b in self.BOUNDS), "+Inf"]
        for (method, route), timing in sorted(self.timings.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip(bounds, timing[:-1], strict=True):
                cumulative += int(in_bucket)
                buckets.append((bound, cumulative))
            seconds.add_metric([method, route], buckets, timing[-1])
        yield seconds


def _gauge(name: str, doc: str, label: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class StateCollector(Collector):
    """The figures read from the server's state at scrape time (see the module)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the state: no checks of names at registration

    def collect(self) -> Iterable[Metric]:
        server = self.server
        store = server.store
        yield _gauge(
            "podium_nodes",
            "Nodes known to the cluster, by status.",
            "status",
            _count_enum(NodeStatus, (n.status for n in store.nodes())),
        )
        # the status the API reports (computed from the allocations, not stored)
        from podium.server.routes.jobs import job_status, summarize

        jobs = store.jobs()
        yield _gauge(
            "podium_jobs",
            "Registered jobs (every namespace), by the status the API reports.",
            "status",
            _count_enum(JobStatus, (job_status(j, summarize(store, j)) for j in jobs)),
        )
        allocs: dict[str, int] = dict.fromkeys((s.value for s in ClientStatus), 0)
        for job in jobs:
            for by_status in store.job_alloc_counts(job.id, job.namespace).values():
                for status, n in by_status.items():
                    allocs[status] = allocs.get(status, 0) + n
        yield _gauge(
            "podium_allocations",
            "Allocations in the store, by client status (pending ones already told to "
            "stop are left out: they never ran).",
            "client_status",
            allocs,
        )
        yield _gauge(
            "podium_deployments",
            "Deployments in the store, by status.",
            "status",
            _count_enum(DeploymentStatus, (d.status for d in store.deployments())),
        )
        broker = GaugeMetricFamily(
            "podium_broker_evaluations",
            "Evaluations the broker holds, by state (ready, unacked: being scheduled, "
            "waiting: behind one of their job's being scheduled, delayed, blocked) and "
            "scheduler type.",
            labels=["state", "type"],
        )
        for state, by_type in server.broker.stats_by_type().items():
            for kind in sorted({"service", "batch", "system", *by_type}):
                broker.add_metric([state, kind], by_type.get(kind, 0))
        yield broker
        stats = server.worker.stats
        yield _counter(
            "podium_scheduler_evaluations",
            "Evaluations the scheduler processed whose plan was committed.",
            stats.completed,
        )
        yield _counter(
            "podium_scheduler_placements",
            "Allocations placed by committed plans.",
            stats.placements,
        )
        yield _counter(
            "podium_scheduler_plan_rejections",
            "Plans the applier refused as stale (the scheduler planned again).",
            stats.plan_rejections,
        )
        yield _counter(
            "podium_heartbeat_missed",
            "Nodes this server marked down because their heartbeats stopped.",
            server.nodes.missed_heartbeats,
        )
        yield _counter(
            "podium_heartbeat_held",
            "Node expiries held back because the silence looked like this server's own "
            "(its loop stalled, or every node's heartbeats reached it late).",
            server.nodes.held_heartbeats,
        )
        shed = CounterMetricFamily(
            "podium_http_shed",
            "Requests answered 429 with Retry-After because the event loop was behind "
            "(--shed-lag), by kind (sync, read); heartbeats are never shed.",
            labels=["kind"],
        )
        for what, n in sorted(server.shedder.shed.items()):
            shed.add_metric([what], n)
        yield shed
        lane = CounterMetricFamily(
            "podium_heartbeat_lane",
            "Heartbeats that reached the heartbeat lane (podium.server.lane), by what became "
            "of them: heard (answered on the lane's thread) or handed (to the event loop: "
            "a node down or unknown, a wrong secret, a follower).",
            labels=["outcome"],
        )
        for what, n in sorted(server.lane_counts.items()):
            lane.add_metric([what], n)
        yield lane
        index = GaugeMetricFamily("podium_store_index", "The store's latest commit index.")
        index.add_metric([], store.index)
        yield index
        leader = GaugeMetricFamily(
            "podium_server_leader", "1 while this server is the cluster's leader, else 0."
        )
        leader.add_metric([], 1 if server.cluster.is_leader() else 0)
        yield leader
        backend = store.backend
        if isinstance(backend, SqliteBackend):
            path = str(backend.path)
            size = GaugeMetricFamily(
                "podium_store_size_bytes", "Size of the store's SQLite database file."
            )
            size.add_metric([], _file_size(path))
            yield size
            wal = GaugeMetricFamily(
                "podium_store_wal_size_bytes",
                "Size of the store's SQLite write-ahead log (checkpoints shrink it).",
            )
            wal.add_metric([], backend.wal_size())
            yield wal


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _count_enum(kind: Iterable[object], values: Iterable[object]) -> dict[str, int]:
    """``values`` counted by their string form, every member of ``kind`` present (a
    status with none still answers 0, so a dashboard's series do not vanish)."""
    counts = {str(member): 0 for member in kind}
    for value in values:
        key = str(value)
        counts[key] = counts.get(key, 0) + 1
    return counts
