"""``GET /v1/event/stream``: every committed change, as NDJSON or Server-Sent Events.

The events come from the store's own buffer (podium.state.events), filled on the commit
path, so a subscriber sees each commit's changes once, in index order, and can resume from
the last index it saw (``?index=N``, or ``Last-Event-ID`` for browsers' EventSource) for as
long as the buffer holds what came after.  A subscriber that falls further behind than the
buffer is told so and the stream ends: it never receives a stream with a hole in it.
Topics and filter keys follow Nomad's event stream; docs/api.md is the contract.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from podium.models import parse_duration
from podium.models.events import INDEX_TOO_OLD, TOPICS
from podium.server import acl
from podium.server.api_docs import EVENT_STREAM, GONE, MAX_INDEX
from podium.server.routes.common import ApiContext
from podium.state.events import EventRecord, IndexTooOld
from podium.state.store import StateStore

ResumeIndex = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_INDEX,
        description="Resume: the events committed after this index (the last one seen). "
        "Without it, from now on.",
    ),
]
Heartbeat = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Time between heartbeats (`{}`) while idle: a duration such as `5s`, "
        "50ms to 300s; default 10s.",
    ),
]

DEFAULT_HEARTBEAT = 10.0
"""Seconds between heartbeats on an idle stream (``{}``, or an SSE comment)."""
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
_ALL = "*"


@dataclass(frozen=True)
class TopicFilter:
    """``?topic=`` values: per topic, the keys wanted (None: every key)."""

    keys: dict[str, frozenset[str] | None]

    @classmethod
    def parse(cls, values: list[str]) -> TopicFilter:
        if not values or _ALL in values:
            if any(v not in (_ALL, f"{_ALL}:{_ALL}") for v in values):
                raise ValueError("topic: '*' (every topic) cannot be given beside other topics")
            return cls(dict.fromkeys(TOPICS))
        keys: dict[str, set[str] | None] = {}
        for value in values:
            topic, _, key = value.partition(":")
            if topic not in TOPICS:
                raise ValueError(
                    f"topic: unknown topic {topic!r} in {value!r}; topics are "
                    + ", ".join(TOPICS)
                    + " (or '*'), each optionally followed by ':KEY'"
                )
            if not key or key == _ALL:
                keys[topic] = None
            elif topic not in keys or keys[topic] is not None:
                wanted = keys.setdefault(topic, set())
                assert wanted is not None
                wanted.add(key)
        return cls({t: None if k is None else frozenset(k) for t, k in keys.items()})

    def wants(self, event: EventRecord) -> bool:
        if event.topic not in self.keys:
            return False
        wanted = self.keys[event.topic]
        return wanted is None or event.key in wanted or any(k in wanted for k in event.filter_keys)


def _heartbeat(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_HEARTBEAT
    seconds = parse_duration(raw)
    if not 0.05 <= seconds <= 300:
        raise ValueError(f"heartbeat: between 50ms and 300s, not {raw!r}")
    return seconds


def _sse(event: EventRecord, index: int) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (index, event.topic.encode(), event.line)


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    store = ctx.store

    @router.get(
        "/v1/event/stream",
        tags=["events"],
        responses={200: EVENT_STREAM, **GONE},
        response_class=StreamingResponse,
    )
    async def event_stream(
        request: Request,
        topic: list[str] = Query(default=[]),
        namespace: str = "default",
        index: ResumeIndex = None,
        heartbeat: Heartbeat = None,
    ) -> Response:
        """Every committed change of jobs, evaluations, allocations, deployments, nodes,
        services and variables (metadata only), one JSON object per line (NDJSON), or
        Server-Sent Events with ``Accept: text/event-stream``.  ``topic`` (repeatable):
        ``Job``, ``Allocation:<job or alloc id>``, … or ``*``; ``namespace`` (``*``: all);
        ``index``: resume after that index (without it: from now on).  Idle streams carry
        a heartbeat (``{}``).  A resume from an index no longer held: 410, code
        ``index_too_old``."""
        topics = TopicFilter.parse(topic)
        beat = _heartbeat(heartbeat)
        sse = SSE in request.headers.get("accept", "")
        if index is None and sse and request.headers.get("last-event-id", "").isdigit():
            index = int(request.headers["last-event-id"])
        if index is not None and index < 0:
            raise ValueError(f"index: a non-negative index, not {index}")
        cursor = store.index if index is None else index
        try:
            store.events.since(cursor)
        except IndexTooOld as exc:
            return JSONResponse(
                {"error": str(exc), "code": INDEX_TOO_OLD, "oldest_index": exc.oldest},
                status_code=410,
            )
        visible = acl.event_reader()
        all_namespaces = namespace == _ALL

        def keep(event: EventRecord) -> bool:
            if not topics.wants(event):
                return False
            if event.topic != "Node" and not all_namespaces and event.namespace != namespace:
                return False
            return visible is None or visible(event.topic, event.namespace, event.key)

        return StreamingResponse(
            _stream(store, cursor, keep, beat, sse),
            media_type=SSE if sse else NDJSON,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


async def _stream(
    store: StateStore, cursor: int, keep: Callable[[EventRecord], bool], beat: float, sse: bool
) -> AsyncIterator[bytes]:
    heartbeat = b": heartbeat\n\n" if sse else b"{}\n"
    if sse:
        yield b"retry: 2000\n\n"
    while not store.closing:
        try:
            commits = store.events.since(cursor)
        except IndexTooOld as exc:
            error = b'{"error":%s,"code":"%s","oldest_index":%d}' % (
                json.dumps(str(exc)).encode(),
                INDEX_TOO_OLD.encode(),
                exc.oldest,
            )
            yield b"event: error\ndata: %s\n\n" % error if sse else error + b"\n"
            return
        # Everything up to the store's index is in the buffer (recorded on the commit
        # path, before the index moves), so the next wait starts from there.
        cursor = max(cursor, store.events.last_index)
        if commits:
            chunk = bytearray()
            for commit in commits:
                for event in commit.events():
                    if keep(event):
                        chunk += _sse(event, commit.index) if sse else event.line + b"\n"
            if chunk:
                yield bytes(chunk)
            continue
        if await store.wait_for(cursor, beat) <= cursor:
            yield heartbeat
