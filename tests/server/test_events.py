"""The event stream (``GET /v1/event/stream``): made from the store's commits, so every
change is told once, in index order, resumable from an index, filtered by topic, key and
namespace; an index the buffer no longer holds is refused, never streamed with a hole.

Streams are read over real sockets (a real uvicorn serving the app), as the SDK reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from podium.client import AsyncClient
from podium.errors import APIError
from podium.models import JobSpec
from podium.models.events import Event
from podium.server.core import Server, ServerConfig
from podium.server.routes.events import _stream
from podium.state import StateStore
from podium.state.events import IndexTooOld

from ..serving import served
from .conftest import Cluster, mock_job


@pytest.fixture
async def address(cluster: Cluster) -> AsyncIterator[str]:
    """The cluster's app served on a real socket too (the ASGI transport buffers whole
    answers, so streams are read over this one)."""
    assert cluster._transport is not None
    async with served(cluster._transport.app) as addr:
        yield addr


class Subscriber:
    """Events read in the background by the SDK, as a program would."""

    def __init__(self, address: str, *topics: str, **kwargs: Any) -> None:
        self.client = AsyncClient(address, timeout=30)
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._read(topics, kwargs))

    async def _read(self, topics: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        try:
            async for event in self.client.events(topics, **kwargs):
                self.events.append(event)
        except Exception as exc:
            self.error = exc

    def upto(self, index: int) -> bool:
        return bool(self.events) and self.events[-1].index >= index

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.aclose()


async def test_a_subscriber_sees_every_change_once_in_order_and_resumes_from_an_index(
    cluster: Cluster, address: str
) -> None:
    first = Subscriber(address, index=0, namespace="*")
    try:
        await cluster.add_agent()
        await cluster.run(mock_job("web", count=3))
        await cluster.settled("web")
        await cluster.until(lambda: len(cluster.running("web")) == 3, what="3 running")
        store = cluster.store
        await cluster.until(lambda: first.upto(store.index) or first.error, what="the stream")
        assert first.error is None, first.error
        seen = first.events
        # index order, each object once per commit
        assert [e.index for e in seen] == sorted(e.index for e in seen)
        keys = [(e.index, e.topic, e.key) for e in seen]
        assert len(keys) == len(set(keys))
        # every object's latest state is the event at its modify index, payload and all
        latest = {(e.topic, e.key): e for e in seen}
        for alloc in store.allocs():
            event = latest[("Allocation", alloc.id)]
            assert event.index == alloc.modify_index
            assert event.payload == alloc.model_dump(mode="json")
            assert event.filter_keys[:2] == ["web", alloc.node_id]
        job = store.job("web")
        assert job is not None
        assert latest[("Job", "web")].payload == job.model_dump(mode="json")
        assert latest[("Job", "web")].type == "JobRegistered"
        for ev in store.evaluations():
            assert latest[("Evaluation", ev.id)].index == ev.modify_index
        node = store.nodes()[0]
        node_events = [e for e in seen if e.topic == "Node" and e.key == node.id]
        assert node_events[0].type == "NodeRegistered"
        assert node_events[0].namespace == ""

        # resumed from the middle: exactly what came after, the same lines
        middle = seen[len(seen) // 2].index
        second = Subscriber(address, index=middle, namespace="*")
        try:
            await cluster.until(lambda: second.upto(store.index), what="the resumed stream")
            after = [e for e in seen if e.index > middle]
            assert second.events[: len(after)] == after
        finally:
            await second.close()
    finally:
        await first.close()


async def test_topics_keys_and_namespaces_filter_the_stream(cluster: Cluster, address: str) -> None:
    await cluster.add_agent()
    await cluster.client.namespace_apply("team-a")
    start = cluster.store.index
    web_allocs = Subscriber(address, "Allocation:web", index=start)
    jobs_everywhere = Subscriber(address, "Job", index=start, namespace="*")
    team_a = Subscriber(address, "*", index=start, namespace="team-a")
    try:
        await cluster.run(mock_job("web", count=2))
        await cluster.run(mock_job("api", count=1))
        spec = JobSpec.model_validate({**mock_job("batch", count=1), "namespace": "team-a"})
        await cluster.client.register_job(spec)
        for job, ns in (("web", "default"), ("api", "default"), ("batch", "team-a")):
            await cluster.until(
                lambda job=job, ns=ns: cluster.store.allocs_by_job(job, ns), what=job
            )
        store = cluster.store
        web = {a.id for a in store.allocs_by_job("web")}
        await cluster.until(lambda: {e.key for e in web_allocs.events} >= web, what="web")
        assert {e.topic for e in web_allocs.events} == {"Allocation"}
        assert {e.key for e in web_allocs.events} == web
        await cluster.until(lambda: len({e.key for e in jobs_everywhere.events}) == 3, what="jobs")
        assert {(e.namespace, e.key) for e in jobs_everywhere.events} == {
            ("default", "web"),
            ("default", "api"),
            ("team-a", "batch"),
        }
        batch = store.allocs_by_job("batch", "team-a")[0]
        await cluster.until(
            lambda: any(e.key == batch.id for e in team_a.events), what="team-a's alloc"
        )
        assert {e.namespace for e in team_a.events if e.topic != "Node"} == {"team-a"}
    finally:
        for sub in (web_allocs, jobs_everywhere, team_a):
            await sub.close()


async def test_an_idle_stream_beats_and_server_sent_events_resume_from_last_event_id(
    cluster: Cluster, address: str
) -> None:
    await cluster.run(mock_job("web", count=1))
    await cluster.settled("web")
    async with (
        httpx.AsyncClient(base_url=address, timeout=httpx.Timeout(10, read=10)) as http,
        http.stream("GET", "/v1/event/stream", params={"heartbeat": "100ms", "topic": "Job"}) as r,
    ):
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = r.aiter_lines()
        assert await anext(lines) == "{}"
    async with (
        httpx.AsyncClient(base_url=address, timeout=httpx.Timeout(10, read=10)) as http,
        http.stream(
            "GET",
            "/v1/event/stream",
            params={"topic": "Job"},
            headers={"Accept": "text/event-stream", "Last-Event-ID": "0"},
        ) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        block: list[str] = []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                break
            block.append(line)
        assert "id: 1" in block or any(x.startswith("id: ") for x in block)
        assert "event: Job" in block
        data = json.loads(line.removeprefix("data: "))
        assert data["type"] == "JobRegistered" and data["key"] == "web"
        assert int(next(x for x in block if x.startswith("id: "))[4:]) == data["index"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"topic": "Bogus"}, "unknown topic 'Bogus'"),
        ({"topic": ["*", "Job"]}, "'*' (every topic) cannot be given beside"),
        ({"index": "-1"}, "index"),
        ({"heartbeat": "1ms"}, "heartbeat: between 50ms and 300s"),
    ],
)
async def test_bad_parameters_are_refused_saying_which(
    cluster: Cluster, params: dict[str, Any], says: str
) -> None:
    assert cluster._transport is not None
    async with httpx.AsyncClient(transport=cluster._transport, base_url="http://podium") as h:
        r = await h.get("/v1/event/stream", params=params)
    assert r.status_code in (400, 422), r.text
    assert says in r.text


async def test_an_index_the_buffer_no_longer_holds_is_refused_not_streamed_with_a_hole() -> None:
    store = StateStore(event_buffer=4)
    server = Server(store, ServerConfig())
    for i in range(4):  # each registration commits its job and its evaluation
        server.register_job(JobSpec.model_validate(mock_job(f"j{i}")))
    assert len(store.events) <= 4
    with pytest.raises(IndexTooOld) as too_old:
        store.events.since(0)
    assert too_old.value.oldest == store.events.oldest_index > 0

    from podium.server.api import create_app

    async with served(create_app(server)) as address:
        async with httpx.AsyncClient(base_url=address) as http:
            r = await http.get("/v1/event/stream", params={"index": 0})
        assert r.status_code == 410
        assert r.json()["code"] == "index_too_old"
        assert r.json()["oldest_index"] == store.events.oldest_index
        async with AsyncClient(address) as client:
            with pytest.raises(APIError) as refused:
                await anext(client.events(index=0))
        assert refused.value.status == 410

        # a subscriber that falls behind mid-stream is told so, and its stream ends
        stream = _stream(store, store.index, lambda e: True, 10.0, sse=False)
        for i in range(4, 8):
            server.register_job(JobSpec.model_validate(mock_job(f"j{i}")))
        lines = [line async for line in stream]
        assert len(lines) == 1
        assert json.loads(lines[0])["code"] == "index_too_old"


async def test_deletes_carry_the_last_state_and_variables_never_their_values(
    cluster: Cluster, address: str
) -> None:
    sub = Subscriber(address, "Variable", "Job", index=cluster.store.index)
    try:
        await cluster.client.var_put("app/db", {"password": "hunter2"})
        await cluster.run(mock_job("web"))
        await cluster.client.stop_job("web", purge=True)
        await cluster.client.var_delete("app/db")
        await cluster.until(
            lambda: (
                [e.type for e in sub.events if e.topic == "Variable"]
                == ["VariableUpdated", "VariableDeleted"]
                and any(e.type == "JobDeregistered" for e in sub.events)
            ),
            what="the variable's and the job's events",
        )
        for event in sub.events:
            if event.topic == "Variable":
                assert event.key == "app/db" and event.namespace == "default"
                assert event.payload is not None
                assert set(event.payload) == {
                    "path",
                    "namespace",
                    "create_index",
                    "modify_index",
                    "create_time",
                    "modify_time",
                }
        gone = next(e for e in sub.events if e.type == "JobDeregistered")
        assert gone.key == "web" and gone.payload is not None and gone.payload["id"] == "web"
    finally:
        await sub.close()
