"""The events of the store's commits, kept in a bounded buffer for the event stream.

Every commit the store applies, its own or one read from the replicated log, passes through
:meth:`EventBuffer.record` on its way into the tables (``StateStore._publish``), so the
stream is made from exactly what was committed and in index order.  Recording is one append
per commit holding the transaction itself (the objects it wrote are already in memory); a
commit's events are expanded and serialised once, the first time a subscriber reads them,
and shared by every subscriber.  The buffer keeps at most ``capacity`` events (always the
latest commit whole); a subscriber asking for what was dropped is told so
(:class:`IndexTooOld`), never given a stream with a hole in it.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podium.models.events import TOPICS

if TYPE_CHECKING:
    from podium.state.store import Txn

DEFAULT_CAPACITY = 16_384
"""Events held for resuming: 16 plans of 1,000 placements, or minutes of a busy cluster's
ordinary churn.  A change of it is a change here (no flag yet)."""

_TABLE_TOPIC = {
    "jobs": "Job",
    "evals": "Evaluation",
    "allocs": "Allocation",
    "deployments": "Deployment",
    "nodes": "Node",
    "services": "Service",
    "variables": "Variable",
    "scaling_events": "Scaling",
}
TOPIC_TABLES = {topic: table for table, topic in _TABLE_TOPIC.items()}
_VARIABLE_META = {"path", "namespace", "create_index", "modify_index", "create_time", "modify_time"}
_REGISTERED = {"Job", "Service"}
_NAMESPACED_KEYS = ("Job", "Variable", "Scaling")
"""Topics whose store key is ``namespace/id``: the event's key is the id."""


class IndexTooOld(Exception):
    """The events after ``index`` are no longer all held; ``oldest`` is the lowest index a
    stream can resume from."""

    def __init__(self, index: int, oldest: int) -> None:
        super().__init__(
            f"events after index {index} are no longer held (the server keeps the last "
            f"events only, from after index {oldest}): read the current state and resume "
            "from its index"
        )
        self.index = index
        self.oldest = oldest


@dataclass(slots=True)
class EventRecord:
    """One event of a commit, with its line ready to send."""

    topic: str
    type: str
    key: str
    namespace: str
    filter_keys: tuple[str, ...]
    payload: Any
    """The object (a variable's: its metadata); None for a delete of an unknown object."""
    line: bytes
    """The event as one JSON object, no newline."""


@dataclass(slots=True)
class CommitEvents:
    """One commit as the buffer holds it; :meth:`events` expands it on first reading."""

    index: int
    txn: Txn
    gone: dict[str, dict[str, Any]]
    """Per table, the last state of each object the commit deleted."""
    new_nodes: frozenset[str]
    size: int
    _events: list[EventRecord] | None = field(default=None)

    def events(self) -> list[EventRecord]:
        if self._events is None:
            self._events = _expand(self)
        return self._events


def _filter_keys(topic: str, obj: Any) -> tuple[str, ...]:
    if obj is None:
        return ()
    if topic == "Allocation":
        keys = [obj.job_id, obj.node_id]
        if obj.deployment_id:
            keys.append(obj.deployment_id)
        return tuple(keys)
    if topic in ("Evaluation", "Deployment"):
        return (obj.job_id,)
    if topic == "Service":
        return (obj.service_name, obj.job_id, obj.alloc_id)
    if topic == "Scaling":
        return (obj.job_id,)
    return ()


def _payload_json(topic: str, obj: Any) -> bytes:
    if obj is None:
        return b"null"
    if topic == "Variable":
        data: bytes = obj.model_dump_json(include=_VARIABLE_META).encode()
        return data
    return obj.model_dump_json().encode()  # type: ignore[no-any-return]


def _event_type(topic: str, deleted: bool, new: bool) -> str:
    if topic in _REGISTERED or (topic == "Node" and new):
        return f"{topic}Deregistered" if deleted else f"{topic}Registered"
    if topic == "Node":
        return "NodeDeregistered" if deleted else "NodeUpdated"
    return f"{topic}Deleted" if deleted else f"{topic}Updated"


def _record(
    index: int, topic: str, key: str, obj: Any, *, deleted: bool, new: bool = False
) -> EventRecord:
    namespace = str(getattr(obj, "namespace", "default")) if obj is not None else ""
    if obj is None and "/" in key and topic in _NAMESPACED_KEYS:
        namespace = key.split("/", 1)[0]
    if topic == "Node":
        namespace = ""
    kind = _event_type(topic, deleted, new)
    shown = key.split("/", 1)[1] if topic in _NAMESPACED_KEYS and "/" in key else key
    fkeys = _filter_keys(topic, obj)
    head = json.dumps(
        {
            "index": index,
            "topic": topic,
            "type": kind,
            "key": shown,
            "namespace": namespace,
            "filter_keys": list(fkeys),
        },
        separators=(",", ":"),
    )
    line = head[:-1].encode() + b',"payload":' + _payload_json(topic, obj) + b"}"
    return EventRecord(topic, kind, shown, namespace, fkeys, obj, line)


def _expand(commit: CommitEvents) -> list[EventRecord]:
    out: list[EventRecord] = []
    txn = commit.txn
    for topic in TOPICS:
        table = TOPIC_TABLES[topic]
        for key, obj in txn.puts[table].items():
            out.append(
                _record(commit.index, topic, key, obj, deleted=False, new=key in commit.new_nodes)
            )
        gone = commit.gone.get(table, {})
        for key in sorted(txn.deletes[table]):
            out.append(_record(commit.index, topic, key, gone.get(key), deleted=True))
    return out


def event_count(txn: Txn) -> int:
    return sum(len(txn.puts[t]) + len(txn.deletes[t]) for t in TOPIC_TABLES.values())


class EventBuffer:
    """The latest commits' events, for subscribers to read from an index on."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, start_index: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"the event buffer holds at least one event, not {capacity}")
        self.capacity = capacity
        self._commits: deque[CommitEvents] = deque()
        self._size = 0
        self._floor = start_index
        """Every commit after this index is held (those with events)."""
        self.last_index = start_index
        """The latest index recorded, with events or without."""

    @property
    def oldest_index(self) -> int:
        """The lowest index a subscriber can resume from."""
        return self._floor

    def __len__(self) -> int:
        return self._size

    def record(self, txn: Txn, gone: dict[str, dict[str, Any]], new_nodes: frozenset[str]) -> None:
        self.last_index = txn.index
        size = event_count(txn)
        if size == 0:
            return
        self._commits.append(CommitEvents(txn.index, txn, gone, new_nodes, size))
        self._size += size
        while self._size > self.capacity and len(self._commits) > 1:
            dropped = self._commits.popleft()
            self._size -= dropped.size
            self._floor = dropped.index

    def reset(self, index: int) -> None:
        """The store was replaced whole at ``index`` (a follower's catch-up from a
        snapshot): what came before is not events anyone can resume through."""
        self._commits.clear()
        self._size = 0
        self._floor = index
        self.last_index = index

    def since(self, index: int) -> list[CommitEvents]:
        """The held commits after ``index``, oldest first; :class:`IndexTooOld` when some
        of them were dropped.  Read it before the next commit (on the event loop, with no
        await between), as commits append here."""
        if index < self._floor:
            raise IndexTooOld(index, self._floor)
        if index >= self.last_index:
            return []
        start = len(self._commits)
        while start > 0 and self._commits[start - 1].index > index:
            start -= 1
        return [self._commits[i] for i in range(start, len(self._commits))]
