"""The autoscaler on a real server, steered by a Prometheus query answered by a small real
HTTP server (``/api/v1/query``, Prometheus' JSON answer: no Prometheus is installed here).

The first test runs the leader's loop in real time (1 s evaluations) through scale-out,
tolerance and scale-in, and reads the decisions back through the API and the event
stream's buffer; the second drives single passes (``Autoscaler.tick``) with an injected
clock: cooldown after a manual scale, bounds of a manual scale, ``enabled: false``, and
an unreadable metric recorded once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from podium.client import AsyncClient
from podium.models import JobSpec
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import StateStore
from tests.server.conftest import mock_job
from tests.server.fake_prometheus import FakePrometheus, serve_prometheus


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    with serve_prometheus() as prom:
        yield prom


def scaled_job(
    prom: FakePrometheus,
    *,
    count: int = 1,
    lo: int = 1,
    hi: int = 5,
    target: float = 10,
    cooldown: str = "1s",
    interval: str = "1s",
    enabled: bool = True,
) -> JobSpec:
    spec = mock_job("web", count)
    spec["groups"]["g"]["scaling"] = {
        "min": lo,
        "max": hi,
        "enabled": enabled,
        "policy": {
            "metric": "prometheus",
            "query": {"url": prom.url, "expr": 'sum(rate(http_requests_total{job="web"}[1m]))'},
            "target": target,
            "cooldown": cooldown,
            "evaluation_interval": interval,
        },
    }
    return JobSpec.model_validate(spec)


def count_of(store: StateStore, job: str = "web", group: str = "g") -> int:
    j = store.job(job)
    assert j is not None
    return j.spec.groups[group].count


async def until(cond: Any, what: str, timeout: float = 45.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Live:
    server: Server
    store: StateStore
    client: AsyncClient


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    store = StateStore()
    server = Server(store, ServerConfig())
    app = create_app(server)
    client = AsyncClient("http://podium", transport=httpx.ASGITransport(app=app), timeout=30)
    await server.start()
    try:
        yield Live(server, store, client)
    finally:
        await server.stop()
        await client.aclose()
        await app.state.agent_proxy.aclose()


async def test_the_leader_scales_out_and_in_by_a_prometheus_query(
    live: Live, prometheus: FakePrometheus
) -> None:
    prometheus.value = 35.0  # 3.5 times the target of 10 per instance
    await live.client.register_job(scaled_job(prometheus))
    await until(lambda: count_of(live.store) == 4, "the scale-out to 4")
    assert prometheus.last_expr == 'sum(rate(http_requests_total{job="web"}[1m]))'

    prometheus.value = 0.0
    await until(lambda: count_of(live.store) == 1, "the scale-in to 1")

    versions = await live.client.job_versions("web")
    by_version = {v.version: v for v in versions}
    assert by_version[1].description == ("autoscaler: prometheus 35 of target 10 -> 4"), by_version[
        1
    ].description
    assert by_version[1].diff == ["~ groups.g.count: 1 => 4"]
    assert by_version[2].description.startswith("autoscaler: prometheus 0 of target 10 -> 1")
    assert max(by_version) == 2  # no other change: out once, in once

    status = await live.client.job_scale_status("web")
    group = status.groups["g"]
    assert (group.count, group.min, group.max, group.enabled) == (1, 1, 5, True)
    assert [(e.previous_count, e.count, e.source) for e in group.events] == [
        (4, 1, "autoscaler"),
        (1, 4, "autoscaler"),
    ]
    assert group.events[1].value == 35.0 and group.events[1].job_version == 1
    evaluation = await live.client.evaluation(group.events[1].eval_id)
    assert evaluation.job_id == "web" and evaluation.job_modify_index > 0
    assert group.events[1].metric == "prometheus"

    # The decisions are in the event stream: the job's new versions, and the scaling events.
    topics = [
        (r.topic, r.type)
        for commit in live.store.events.since(0)
        for r in commit.events()
        if r.topic in ("Scaling",)
    ]
    assert topics == [("Scaling", "ScalingUpdated")] * 2

    # A query that fails changes nothing, and is recorded once, not at every evaluation.
    prometheus.fail = True
    seen = prometheus.queries
    await until(lambda: prometheus.queries >= seen + 4, "four failing evaluations")
    status = await live.client.job_scale_status("web")
    errors = [e for e in status.groups["g"].events if e.error]
    assert len(errors) == 1, errors
    assert "parse error at char 3" in errors[0].error and errors[0].count is None
    assert count_of(live.store) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


async def test_cooldown_bounds_and_pause_one_pass_at_a_time(prometheus: FakePrometheus) -> None:
    clock = Clock()
    store = StateStore()
    server = Server(store, ServerConfig(), clock=clock)
    scaler = server.autoscaler
    try:
        server.register_job(scaled_job(prometheus, count=2, hi=4, cooldown="30s", interval="10s"))

        # A manual scale outside the bounds is refused, and changes nothing.
        with pytest.raises(ValueError, match=r"count 5 is outside the group's scaling bounds"):
            server.scale_job("web", "g", 5)
        with pytest.raises(ValueError, match=r"\[1, 4\]"):
            server.scale_job("web", "g", 0)
        assert count_of(store) == 2
        # Within them it is a version and a manual scaling event, and starts the cooldown.
        server.scale_job("web", "g", 3, message="more for the launch")
        record = store.scaling_events("web")
        assert record is not None
        manual = record.groups["g"][0]
        assert (manual.source, manual.previous_count, manual.count) == ("manual", 2, 3)
        assert manual.reason == "more for the launch" and manual.time == clock.now

        prometheus.value = 40.0  # 4 per instance x 3 instances: ceil(12) clamped to 4
        await scaler.tick()
        assert count_of(store) == 3
        (decision,) = scaler.decisions().values()
        assert "cooldown (30.0s left)" in decision.reason

        clock.now += 10  # evaluated, still in the cooldown
        await scaler.tick()
        assert count_of(store) == 3 and "cooldown (20.0s left)" in decision_of(server)

        clock.now += 20  # the cooldown is over
        await scaler.tick()
        assert count_of(store) == 4
        assert "-> 4 (max)" in decision_of(server)

        # Not due yet: a pass before the interval reads nothing.
        queries = prometheus.queries
        clock.now += 5
        await scaler.tick()
        assert prometheus.queries == queries

        # enabled: false pauses it: the group is no longer watched, whatever the load.
        prometheus.value = 0.0
        server.register_job(
            scaled_job(prometheus, count=4, hi=4, cooldown="30s", interval="10s", enabled=False)
        )
        for _ in range(5):
            clock.now += 60
            await scaler.tick()
        assert count_of(store) == 4 and scaler.decisions() == {}
        assert prometheus.queries == queries

        # enabled again: watched afresh, and it waits a whole cooldown before scaling in.
        server.register_job(
            scaled_job(prometheus, count=4, hi=4, cooldown="30s", interval="10s", enabled=True)
        )
        await scaler.tick()
        assert count_of(store) == 4 and "less than the cooldown" in decision_of(server)
        for _ in range(3):
            clock.now += 10
            await scaler.tick()
        assert count_of(store) == 1

        # A stopped job is not scaled, and a purged one takes its scaling events with it.
        server.stop_job("web")
        clock.now += 60
        await scaler.tick()
        assert scaler.decisions() == {}
        server.stop_job("web", purge=True)
        assert store.scaling_events("web") is None
    finally:
        await scaler.aclose()


def decision_of(server: Server) -> str:
    (decision,) = server.autoscaler.decisions().values()
    return decision.reason
