"""Autoscaling: a group's ``scaling`` block, and the record of scaling decisions.

``scaling: {min, max, enabled, policy: {metric, target, cooldown, evaluation_interval}}``
bounds a service group's count and, with a policy, lets the leader move the count between
the bounds from a metric (docs/autoscaling.md):

- ``cpu``: the group's CPU use in percent of what it reserved (``resources.cpu``),
  averaged over its running allocations, as their agents measure it;
- ``memory``: the same for memory (``resources.memory``);
- ``prometheus``: the number a PromQL query (``query: {url, expr}``) answers through the
  Prometheus HTTP API (``GET <url>/api/v1/query``), read as a per-instance value.

Every change the autoscaler or ``podium job scale`` makes is a :class:`ScalingEvent`; the
store keeps the newest :data:`MAX_SCALING_EVENTS` of each group (:class:`JobScalingEvents`,
one row per job), as Nomad keeps its scaling events.  The decision itself is a pure
function (podium.server.autoscale_policy).  This module imports no other model module, so
that :mod:`podium.models.job` can hold a :class:`Scaling` without a cycle.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from podium.models import limits as L
from podium.models.duration import Duration

MAX_SCALING_EVENTS = 20
"""Scaling events kept per group, newest first (Nomad keeps 20 too)."""
MIN_EVALUATION_INTERVAL = 1.0
"""The shortest ``evaluation_interval``: each evaluation asks every running allocation's
agent for its usage."""
MAX_QUERY_CHARS = 4096
"""A PromQL expression, or a query URL."""


def _digits(value: object) -> object:
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 32:
        return int(text)
    return value


_Whole = Annotated[int, BeforeValidator(_digits)]


def _number(value: object) -> object:
    """A target: a number (a quoted one from YAML too), never a boolean."""
    if isinstance(value, bool):
        raise ValueError("a target is a number, not true/false")
    if isinstance(value, str):
        try:
            return float(value.strip().removesuffix("%"))
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    return value


_Number = Annotated[float, BeforeValidator(_number)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=False)


class PrometheusQuery(_Spec):
    """A PromQL instant query: ``GET <url>/api/v1/query?query=<expr>``; its answer must be
    one number (a scalar, or a vector of one sample)."""

    url: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    """The Prometheus server's base URL (``http://prometheus:9090``)."""
    expr: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"query url {v!r} must start with http:// or https://")
        return v.rstrip("/")


Metric = Literal["cpu", "memory", "prometheus"]


class ScalingPolicy(_Spec):
    """What the autoscaler steers by and how often (Kubernetes HPA's algorithm:
    podium.server.autoscale_policy)."""

    metric: Metric = "cpu"
    target: _Number = Field(gt=0, le=1e12)
    """cpu, memory: percent of the group's reservation; prometheus: the query's value per
    instance."""
    query: PrometheusQuery | None = None
    """For ``metric: prometheus``, and only for it."""
    cooldown: Duration = Field(default=30.0, ge=0, le=L.MAX_DELAY)
    """No change within this long of the last one; also the window over which a scale-in
    takes the highest recommendation (HPA's scale-down stabilisation)."""
    evaluation_interval: Duration = Field(default=10.0, le=L.MAX_DELAY)
    tolerance: float = Field(default=0.1, ge=0, lt=1, strict=False)
    """No change while the metric is within this fraction of the target (HPA's 10%)."""

    @field_validator("target")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("target must be a finite number")
        return v

    @field_validator("evaluation_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v < MIN_EVALUATION_INTERVAL:
            raise ValueError(
                f"evaluation_interval must be at least {MIN_EVALUATION_INTERVAL:g}s "
                "(each evaluation asks every allocation's agent for its usage)"
            )
        return v

    @model_validator(mode="after")
    def _query(self) -> ScalingPolicy:
        if self.metric == "prometheus" and self.query is None:
            raise ValueError(
                "metric prometheus needs a query: {url: http://prometheus:9090, expr: ...}"
            )
        if self.metric != "prometheus" and self.query is not None:
            raise ValueError(f"query is for metric prometheus, not {self.metric}")
        return self


class Scaling(_Spec):
    """A group's bounds, and its autoscaling policy (none: the bounds only hold
    ``podium job scale``)."""

    min: _Whole = Field(default=1, ge=0, le=L.COUNT_CEILING, strict=True)
    max: _Whole = Field(ge=0, le=L.COUNT_CEILING, strict=True)
    enabled: bool = Field(default=True, strict=True)
    """``false`` pauses the autoscaler for the group (the bounds still hold)."""
    policy: ScalingPolicy | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min > self.max:
            raise ValueError(f"scaling.min ({self.min}) is above scaling.max ({self.max})")
        return self

    def clamp(self, count: int) -> int:
        return max(self.min, min(self.max, count))

    def check_count(self, count: int, where: str = "") -> None:
        """ValueError unless ``count`` is within the bounds (``where``: what to name)."""
        if not self.min <= count <= self.max:
            raise ValueError(
                f"{where + ': ' if where else ''}count {count} is outside the group's scaling bounds "
                f"[{self.min}, {self.max}] (scaling.min, scaling.max)"
            )


ScalingSource = Literal["autoscaler", "manual"]


class ScalingEvent(BaseModel):
    """One scaling decision: a change of count (a new job version), or an evaluation that
    failed (``error``) and changed nothing."""

    model_config = ConfigDict(extra="ignore")

    time: float
    """Unix time, seconds."""
    group: str
    source: ScalingSource = "autoscaler"
    previous_count: int
    count: int | None = None
    """The new count; None when nothing changed (an error)."""
    reason: str = ""
    error: str = ""
    """Why the evaluation could not decide (a query that failed, no usage to read)."""
    metric: str = ""
    value: float | None = None
    """The metric's value the decision was made on."""
    job_version: int | None = None
    """The job version the change made."""
    eval_id: str = ""


class JobScalingEvents(BaseModel):
    """The newest scaling events of one job's groups, newest first (one store row)."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    namespace: str = "default"
    groups: dict[str, list[ScalingEvent]] = Field(default_factory=dict)
    modify_index: int = 0

    def with_event(self, event: ScalingEvent, index: int) -> JobScalingEvents:
        """A copy with ``event`` first in its group's list, which keeps the newest
        :data:`MAX_SCALING_EVENTS`."""
        groups = dict(self.groups)
        groups[event.group] = [event, *groups.get(event.group, [])][:MAX_SCALING_EVENTS]
        return JobScalingEvents(
            job_id=self.job_id, namespace=self.namespace, groups=groups, modify_index=index
        )

    def last_change(self, group: str) -> ScalingEvent | None:
        """The group's newest event that changed its count."""
        for ev in self.groups.get(group, []):
            if ev.count is not None and not ev.error:
                return ev
        return None

    def newest(self) -> list[ScalingEvent]:
        """Every group's events, newest first."""
        events = [ev for evs in self.groups.values() for ev in evs]
        return sorted(events, key=lambda e: e.time, reverse=True)


class GroupScaleStatus(BaseModel):
    """A group's count, bounds, policy and newest events (``GET /v1/job/{id}/scale``)."""

    count: int
    running: int = 0
    min: int | None = None
    max: int | None = None
    enabled: bool = False
    policy: ScalingPolicy | None = None
    events: list[ScalingEvent] = Field(default_factory=list)


class JobScaleStatus(BaseModel):
    job_id: str
    namespace: str = "default"
    version: int = 0
    groups: dict[str, GroupScaleStatus] = Field(default_factory=dict)
