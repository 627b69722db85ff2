"""One change the cluster committed, as the event stream (``GET /v1/event/stream``) tells it.

Events are made from the store's commits (podium.state.events), so the stream says exactly
what was committed, in index order: nothing missed, nothing invented.  The names follow
Nomad's event stream (topics, types, filter keys, resumable by index) so that a reader of
Nomad's docs is at home.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

TOPICS = (
    "Job",
    "Evaluation",
    "Allocation",
    "Deployment",
    "Node",
    "Service",
    "Variable",
    "Scaling",
)
"""Every topic, in the order the events of one commit are sent."""

INDEX_TOO_OLD = "index_too_old"
"""The error code of a resume from an index the server no longer holds events for."""


class Event(BaseModel):
    """One committed change of one object.

    ``type`` is ``<Topic>Registered``/``<Topic>Deregistered`` for jobs, nodes and services
    (``NodeUpdated`` for a change of a node already known), ``<Topic>Updated``/
    ``<Topic>Deleted`` for the rest.  ``payload`` is the object as the API serves it (a
    deleted object's last state; a variable's metadata, never its values).
    """

    index: int
    topic: str
    type: str
    key: str
    namespace: str = "default"
    filter_keys: list[str] = Field(default_factory=list)
    payload: dict[str, Any] | None = None
