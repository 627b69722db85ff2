"""Typed answers of the API that are not one of the stored objects in :mod:`podium.models`.

The server adds a few fields to its objects when it answers (a job's group
summary, a node's allocation count) and answers writes with small receipts.
These models give those shapes names.  They ignore unknown fields so that a
newer server can add to an answer without breaking an older SDK.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from podium.models import Allocation, JobSpec
from podium.models.diff import DiffType, FieldDiff, GroupDiff, JobDiff, TaskDiff
from podium.models.namespace import spec_key
from podium.models.views import GroupSummary, JobInfo, JobListItem, JobPlanResult, NodeInfo

# The read views (and job plan's diff) are shared with the server (podium.models.views,
# podium.models.diff); re-exported here because they are what the SDK answers with.
__all__ = [
    "DiffType",
    "FieldDiff",
    "GroupDiff",
    "GroupSummary",
    "JobDiff",
    "JobInfo",
    "JobListItem",
    "JobPlanResult",
    "NodeInfo",
    "NodeSync",
    "QueryResult",
    "RegisterResult",
    "ScaleResult",
    "ServerStatus",
    "SpecCache",
    "StopResult",
    "TaskDiff",
]

T = TypeVar("T")


_UNREAD: Any = object()


class QueryResult(Generic[T]):
    """An answer together with the store index it reflects.

    ``index`` is the ``X-Podium-Index`` header: pass it back as ``index=`` to
    block until something behind the endpoint changes (Nomad's ``QueryMeta``
    ``LastIndex``).  ``raw`` is the decoded JSON body exactly as the server
    sent it, for callers that print or forward it (``podium ... -o json``);
    answers parsed straight from their bytes decode it again on first use.
    """

    __slots__ = ("_content", "_raw", "index", "value")

    def __init__(self, value: T, index: int, raw: Any = _UNREAD, content: bytes = b"") -> None:
        self.value = value
        self.index = index
        self._raw = raw
        self._content = content

    @property
    def raw(self) -> Any:
        if self._raw is _UNREAD:
            self._raw = json.loads(self._content) if self._content else None
        return self._raw

    def __repr__(self) -> str:
        return f"QueryResult(value={self.value!r}, index={self.index})"


SpecCache = MutableMapping[tuple[str, int], JobSpec]
"""Parsed job specs by (``job@version``, modify index): pass one as the validation
context's ``specs`` and :class:`NodeSync` takes known specs from it instead of
validating them again (the simulator's agents share one per process)."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterResult(_Answer):
    """``POST /v1/jobs``: the evaluation to follow and the version now current.

    ``changed`` is false when the spec equals the current version: no new
    version was stored, but an evaluation was still created.
    """

    eval_id: str
    job_modify_index: int = 0
    version: int = 0
    index: int = 0
    changed: bool = True
    warnings: list[str] = Field(default_factory=list)


class StopResult(_Answer):
    """``DELETE /v1/job/{id}``: the evaluation that stops the job's allocations."""

    eval_id: str | None = None
    index: int = 0


class DeploymentActionResult(_Answer):
    """``POST /v1/deployment/{id}/promote`` and ``/fail``: the evaluation it created."""

    eval_id: str
    index: int = 0


class ScaleResult(_Answer):
    """``POST /v1/job/{id}/scale``: the evaluation and the version the new count made."""

    eval_id: str
    version: int = 0
    index: int = 0


class ServerStatus(_Answer):
    """``GET /v1/status``: the server's version, store index and object counts."""

    version: str = ""
    index: int = 0
    nodes: int = 0
    jobs: int = 0


class NodeSync(_Answer):
    """What an agent must run: its allocations and the job specs they refer to.

    ``jobs`` is keyed ``"<job_id>@<version>"`` (``"<namespace>/<job_id>@<version>"``
    outside ``default``: :func:`podium.models.namespace.spec_key`) so that allocations
    of two versions of one job (during an update), or of two jobs with one id in two
    namespaces, each find their own spec.
    """

    index: int = 0
    allocations: list[Allocation] = Field(default_factory=list)
    jobs: dict[str, JobSpec] = Field(default_factory=dict)
    alloc_indexes: dict[str, int] | None = None
    """A delta answer (the query passed ``since``): every allocation on the node with the
    index of its last change an agent must hear of.  ``allocations`` then holds only those
    changed past ``since``, and ``jobs`` only the specs not named in ``have``.  ``None``:
    ``allocations`` is the node's whole list."""
    job_indexes: dict[str, int] = Field(default_factory=dict)
    """The stored version's modify index of each spec in ``jobs``."""
    alloc_count: int | None = None
    """Set when no allocation left the node past ``since``: ``alloc_indexes`` then lists
    only the allocations sent, and the node holds ``alloc_count`` allocations in all."""

    @model_validator(mode="before")
    @classmethod
    def _known_specs(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(info.context, dict):
            return data
        info.context.pop("known", None)  # a failed validation's leftover
        cache = info.context.get("specs")
        if cache is None or not isinstance(data, dict):
            return data
        jobs, indexes = data.get("jobs"), data.get("job_indexes")
        if not isinstance(jobs, dict) or not isinstance(indexes, dict):
            return data
        known = {}
        for key in jobs:
            spec = cache.get((key, indexes.get(key, -1)))
            if spec is not None:
                known[key] = spec
        if not known:
            return data
        # Left out of what is validated, and put back after: an instance passed through
        # validation still runs its after-validators (JobSpec's defaults, ~30 us a spec).
        info.context["known"] = known
        return {**data, "jobs": {k: v for k, v in jobs.items() if k not in known}}

    @model_validator(mode="after")
    def _remember_specs(self, info: ValidationInfo) -> NodeSync:
        context = info.context if isinstance(info.context, dict) else {}
        cache = context.get("specs")
        if cache is not None:
            for key, spec in self.jobs.items():
                index = self.job_indexes.get(key)
                if index is not None:
                    cache.setdefault((key, index), spec)
        known = context.pop("known", None)
        if known:
            self.jobs.update(known)
        return self

    def spec_for(self, alloc: Allocation) -> JobSpec | None:
        return self.jobs.get(spec_key(alloc.namespace, alloc.job_id, alloc.job_version))
