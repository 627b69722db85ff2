"""The autoscaler: one of the leader's loops (podium.server.leader), moving each autoscaled
group's count between its ``scaling`` bounds (docs/autoscaling.md).

Every ``evaluation_interval`` it reads the group's metric — the running allocations'
usage from their agents (``cpu``, ``memory``: the same reading ``GET
/v1/allocation/{id}/stats`` relays), or a Prometheus query — and hands it to the pure
decision (:func:`podium.server.autoscale_policy.decide`).  A change goes through
:meth:`podium.server.jobs.Jobs.scale`, the path of ``podium job scale``: a new job version
whose description is the reason, its evaluation, and a scaling event in the same
transaction.  A metric that cannot be read is recorded as an error event (once, until the
error changes), and changes nothing.

What it keeps in memory (each group's window of recommendations, when it began to watch)
is the leader's alone: a new leader starts afresh, and waits a whole cooldown before it
shrinks anything.  The last change's time, which the cooldown counts from, is read from
the store's scaling events, so it survives a change of leader.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from podium.models import Allocation, ClientStatus, DesiredStatus, Job, JobType, Node
from podium.models.scaling import PrometheusQuery, Scaling, ScalingEvent
from podium.models.stats import AllocResourceUsage
from podium.server import scaling_log
from podium.server.autoscale_policy import Decision, GroupState, Reading, decide
from podium.server.jobs import Jobs
from podium.state import JOBS, StateStore

log = logging.getLogger("podium.server")

UsageReader = Callable[[Node, Allocation], Awaitable[AllocResourceUsage | None]]
"""An allocation's usage, from its node's agent (None: the agent did not say)."""
QueryReader = Callable[[PrometheusQuery], Awaitable[float]]
"""A Prometheus query's value (raises :class:`MetricError` when there is none)."""

READ_TIMEOUT = 5.0
"""Seconds one reading (an agent's usage, a query) may take."""
MAX_SLEEP = 1.0
"""The loop looks for new and changed policies at least this often."""
MIB = 1024 * 1024
DEFAULT_CORE_MHZ = 1000


class MetricError(Exception):
    """The metric could not be read; the message says why."""


GroupKey = tuple[str, str, str]
"""(namespace, job id, group)."""


@dataclass
class _Watch:
    scaling: Scaling
    observed_since: float
    next_due: float
    window: tuple[tuple[float, int], ...] = ()
    last_error: str = ""
    last: Decision | None = None


def core_mhz(node: Node) -> float:
    """One core's speed on ``node`` (what its agent fingerprinted)."""
    attrs = node.attributes
    try:
        return float(attrs["cpu.frequency"])
    except (KeyError, ValueError):
        pass
    try:
        return node.resources.cpu / max(1, int(attrs["cpu.numcores"]))
    except (KeyError, ValueError):
        return DEFAULT_CORE_MHZ


def usage_percent(metric: str, node: Node, alloc: Allocation, usage: AllocResourceUsage) -> float:
    """An allocation's use of ``metric`` in percent of what it reserved."""
    if metric == "memory":
        return usage.memory_bytes / (alloc.resources.memory * MIB) * 100.0
    used_mhz = usage.cpu_percent / 100.0 * core_mhz(node)
    return used_mhz / alloc.resources.cpu * 100.0


def parse_query_answer(body: Any) -> float:
    """The one number of a Prometheus ``/api/v1/query`` answer (a scalar, or a vector
    of one sample)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise MetricError(f"the query failed: {error or 'not a Prometheus answer'}")
    data = body.get("data") or {}
    kind = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "scalar":
            value = float(result[1])
        elif kind == "vector":
            if len(result) != 1:
                raise MetricError(
                    f"the query returned {len(result)} series, not one: aggregate them "
                    "(sum, avg, max) to one number"
                )
            value = float(result[0]["value"][1])
        else:
            raise MetricError(f"the query returned a {kind}, not a scalar or an instant vector")
    except (TypeError, IndexError, KeyError, ValueError) as exc:
        raise MetricError(f"the query's answer is malformed: {exc}") from None
    if not math.isfinite(value):
        raise MetricError(f"the query returned {value}, not a finite number")
    return value


class Autoscaler:
    def __init__(
        self,
        store: StateStore,
        jobs: Jobs,
        clock: Callable[[], float],
        *,
        read_usage: UsageReader | None = None,
        read_query: QueryReader | None = None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self.read_usage = read_usage
        """Set by the API (podium.server.api): agents are reached through its relay."""
        self.read_query = read_query or self.prometheus_query
        self._watches: dict[GroupKey, _Watch] = {}
        self._targets: dict[GroupKey, tuple[Job, Scaling]] = {}
        self._targets_index = -1
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Evaluate the groups as they fall due, until cancelled (the leader's duties)."""
        self._watches, self._targets_index = {}, -1
        try:
            while True:
                try:
                    delay = await self.tick()
                except Exception:
                    log.exception("autoscaler pass failed")
                    delay = MAX_SLEEP
                await asyncio.sleep(delay)
        finally:
            self._watches = {}
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client of the queries (the loop's end does)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def targets(self) -> dict[GroupKey, tuple[Job, Scaling]]:
        """The groups to watch: of running service jobs, with an enabled policy.  Found
        again only when the jobs changed (a pass over every job is not free at 10,000
        jobs, and most passes find the jobs as they were)."""
        index = self.store.table_index(JOBS)
        if index == self._targets_index:
            return self._targets
        found: dict[GroupKey, tuple[Job, Scaling]] = {}
        for job in self.store.jobs(None):
            if job.stop or job.spec.type != JobType.SERVICE:
                continue
            for name, group in job.spec.groups.items():
                scaling = group.scaling
                if scaling is not None and scaling.policy is not None and scaling.enabled:
                    found[(job.namespace, job.id, name)] = (job, scaling)
        self._targets, self._targets_index = found, index
        return found

    async def tick(self) -> float:
        """Evaluate every group that is due; returns the seconds until the next is."""
        now = self.clock()
        due: list[tuple[GroupKey, Job]] = []
        targets = self.targets()
        for key, (job, scaling) in targets.items():
            assert scaling.policy is not None
            watch = self._watches.get(key)
            if watch is None or watch.scaling != scaling:
                watch = self._watches[key] = _Watch(scaling, now, now)
            if watch.next_due <= now:
                watch.next_due = now + scaling.policy.evaluation_interval
                due.append((key, job))
        for key in self._watches.keys() - targets.keys():
            del self._watches[key]
        if due:
            await asyncio.gather(*(self.evaluate(key, job) for key, job in due))
        later = min((w.next_due for w in self._watches.values()), default=now + MAX_SLEEP)
        return max(0.05, min(MAX_SLEEP, later - self.clock()))

    async def evaluate(self, key: GroupKey, job: Job) -> Decision | None:
        """One evaluation of one group: read, decide, and scale or record an error."""
        namespace, job_id, group = key
        watch = self._watches[key]
        policy = watch.scaling.policy
        assert policy is not None
        reading: Reading | None = None
        error = ""
        try:
            reading = await asyncio.wait_for(self.read(job, group, policy.metric), READ_TIMEOUT)
        except MetricError as exc:
            error = str(exc)
        except TimeoutError:
            error = f"reading {policy.metric} took longer than {READ_TIMEOUT:g}s"
        # Between the reading and now the job may have changed: decide on the job as it is
        # now, or not at all (a new spec gets a fresh watch at the next pass).
        current = self.store.job(job_id, namespace)
        if (
            current is None
            or current.stop
            or current.spec.groups.get(group) != job.spec.groups[group]
            or self._watches.get(key) is not watch
        ):
            return None
        now = self.clock()
        count = current.spec.groups[group].count
        record = self.store.scaling_events(job_id, namespace)
        last = record.last_change(group) if record is not None else None
        state = GroupState(
            count=count,
            observed_since=watch.observed_since,
            last_change=last.time if last is not None else None,
            window=watch.window,
        )
        decision = decide(watch.scaling, state, reading, now)
        watch.window = decision.window
        watch.last = decision
        value = reading.value if reading is not None else None
        if error:
            if error != watch.last_error:
                self._record_error(current, group, count, policy.metric, error, now)
            watch.last_error = error
        else:
            watch.last_error = ""
        if decision.count is None:
            return decision
        event = ScalingEvent(
            time=now,
            group=group,
            source="autoscaler",
            previous_count=count,
            count=decision.count,
            reason=decision.reason,
            metric=policy.metric,
            value=value,
        )
        try:
            result = self.jobs.scale(job_id, group, decision.count, namespace, event=event)
        except Exception as exc:
            log.exception("autoscaler: could not scale %s/%s", job_id, group)
            self._record_error(current, group, count, policy.metric, f"scale failed: {exc}", now)
            return decision
        log.info("job %s group %s: %s (version %d)", job_id, group, decision.reason, result.version)
        return decision

    def _record_error(
        self, job: Job, group: str, count: int, metric: str, error: str, now: float
    ) -> None:
        log.warning("autoscaler: job %s group %s: %s", job.id, group, error)
        event = ScalingEvent(
            time=now,
            group=group,
            source="autoscaler",
            previous_count=count,
            error=error,
            reason=f"autoscaler: cannot read {metric}",
            metric=metric,
        )
        txn = self.store.txn()
        scaling_log.record(self.store, txn, job, event)
        self.store.commit(txn)

    def decisions(self) -> dict[GroupKey, Decision]:
        """The last decision of each watched group (for tests and debugging)."""
        return {k: w.last for k, w in self._watches.items() if w.last is not None}

    # ------------------------------------------------------------------ readings
    async def read(self, job: Job, group: str, metric: str) -> Reading | None:
        """The group's metric now; None when there is nothing to read (no allocation runs)."""
        policy = job.spec.groups[group].scaling
        assert policy is not None and policy.policy is not None
        if metric == "prometheus":
            query = policy.policy.query
            assert query is not None
            value = await self.read_query(query)
            return Reading(total=value, samples=1, per_instance=False)
        allocs = [
            a
            for a in self.store.allocs_by_job(job.id, job.namespace)
            if a.group == group
            and a.client_status == ClientStatus.RUNNING
            and a.desired_status == DesiredStatus.RUN
        ]
        if not allocs:
            return None
        read_usage = self.read_usage
        if read_usage is None:
            raise MetricError("this server cannot reach agents for usage (it serves no API)")
        pairs = [(a, self.store.node(a.node_id)) for a in allocs]

        async def one(alloc: Allocation, node: Node | None) -> float | None:
            if node is None:
                return None
            try:
                usage = await read_usage(node, alloc)
            except Exception as exc:
                log.debug("autoscaler: no usage of allocation %s: %s", alloc.id, exc)
                return None
            return None if usage is None else usage_percent(metric, node, alloc, usage)

        values = await asyncio.gather(*(one(a, n) for a, n in pairs))
        got = [v for v in values if v is not None]
        if not got:
            raise MetricError(
                f"no agent answered with the usage of its allocations ({len(allocs)})"
            )
        return Reading(total=sum(got), samples=len(got))

    async def prometheus_query(self, query: PrometheusQuery) -> float:
        """``GET <url>/api/v1/query?query=<expr>``: the answer's one number."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT))
        try:
            answer = await self._http.get(f"{query.url}/api/v1/query", params={"query": query.expr})
        except httpx.HTTPError as exc:
            raise MetricError(f"cannot reach Prometheus at {query.url}: {exc}") from None
        try:
            body = answer.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MetricError(
                f"Prometheus at {query.url} answered {answer.status_code} with no JSON"
            ) from None
        return parse_query_answer(body)


def agent_usage_reader(
    fetch: Callable[[str, dict[str, str], dict[str, Any], str], Awaitable[Any]],
    relay_ext: Callable[[str], dict[str, Any]],
) -> UsageReader:
    """A :data:`UsageReader` through the API's pooled agent relay (``AgentProxy.fetch``,
    with the TLS extensions of a request to the node: podium.server.api)."""

    async def read(node: Node, alloc: Allocation) -> AllocResourceUsage | None:
        if not node.http_addr:
            return None
        url = f"{node.http_addr.rstrip('/')}/v1/client/allocation/{alloc.id}/stats"
        answer = await fetch(url, {}, relay_ext(node.id), f"agent of node {node.name}")
        if answer.status_code != 200:
            return None
        return AllocResourceUsage.model_validate_json(answer.body)

    return read
