"""Periodic and parameterized jobs' calls of the API as data (docs/periodic.md):
dispatch a parameterized job, force a periodic launch, list a job's children.

Kept apart from :mod:`podium.client.endpoints` (same :class:`Endpoint` type, same rules)
so that the calls of one feature read together; :class:`podium.client.Client` and
:class:`podium.client.AsyncClient` execute them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter

from podium.client.endpoints import Endpoint, _seg
from podium.models.dispatch import MAX_PAYLOAD, DispatchAnswer, encode_payload
from podium.models.periodic import ForceAnswer
from podium.models.views import JobListItem

_JOB_LIST: Callable[[Any], list[JobListItem]] = TypeAdapter(list[JobListItem]).validate_python


def dispatch_job(
    job_id: str,
    meta: Mapping[str, str] | None = None,
    payload: bytes | None = None,
    idempotency_token: str = "",
) -> Endpoint[DispatchAnswer]:
    """Dispatch parameterized job ``job_id``: a child job with ``meta`` and ``payload``
    (at most 16 KiB); a repeated call with the same ``idempotency_token`` answers the
    first one's child."""
    if payload is not None and len(payload) > MAX_PAYLOAD:
        raise ValueError(f"the payload is {len(payload):,} bytes; at most {MAX_PAYLOAD:,}")
    body: dict[str, Any] = {"meta": dict(meta or {})}
    if payload is not None:
        body["payload"] = encode_payload(payload)
    if idempotency_token:
        body["idempotency_token"] = idempotency_token
    return Endpoint(
        "POST", f"/v1/job/{_seg(job_id)}/dispatch", DispatchAnswer.model_validate, body=body
    )


def force_periodic(job_id: str) -> Endpoint[ForceAnswer]:
    """Launch periodic job ``job_id`` now (its schedule is unchanged)."""
    return Endpoint("POST", f"/v1/job/{_seg(job_id)}/periodic/force", ForceAnswer.model_validate)


def job_children(job_id: str) -> Endpoint[list[JobListItem]]:
    """A periodic or parameterized job's launches and dispatches, oldest first."""
    return Endpoint("GET", f"/v1/job/{_seg(job_id)}/children", _JOB_LIST)
