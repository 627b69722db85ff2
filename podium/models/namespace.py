"""Namespaces: the unit every job, allocation, deployment, evaluation, variable and
service belongs to, and the unit a quota bounds.

A namespace's name appears in URLs, DNS names (``web.service.team-a.ns.podium``) and
on agents' disks, so it is a DNS label: lowercase letters, digits and ``-``, at most 63
characters, starting and ending with a letter or digit.  ``default`` always exists.
A quota is admission, not enforcement on nodes: see :mod:`podium.server.namespaces`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

DEFAULT_NAMESPACE = "default"
ALL_NAMESPACES = "*"
"""On list routes (and ``-n '*'``): every namespace."""

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
QUOTA_KEYS = ("cpu", "memory", "count")


def check_namespace(name: str, where: str = "namespace") -> str:
    """``name`` when it is a valid namespace name, else a ValueError that says why."""
    if not isinstance(name, str) or not _LABEL.match(name):
        raise ValueError(
            f"{where} {name!r} is not a valid namespace name: use 1-63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit (a DNS label, "
            "e.g. team-a)"
        )
    return name


def spec_key(namespace: str, job_id: str, version: int) -> str:
    """How a job version is named in an agent's sync (``job@version``): the namespace is
    put in front, outside ``default``, so two jobs with one id in two namespaces never
    share an agent's cached spec (namespace names and job ids hold no ``/``)."""
    base = f"{job_id}@{version}"
    return base if namespace == DEFAULT_NAMESPACE else f"{namespace}/{base}"


class Quota(BaseModel):
    """Upper bounds on what a namespace's jobs may ask for; None: no bound."""

    model_config = ConfigDict(extra="forbid")

    # strict: a JSON ``false`` or ``1.5`` is not a count (the API refuses it, 400)
    cpu: StrictInt | None = Field(default=None, ge=0, description="CPU in MHz")
    memory: StrictInt | None = Field(default=None, ge=0, description="memory in MB")
    count: StrictInt | None = Field(default=None, ge=0, description="instances (allocations)")

    @classmethod
    def parse(cls, text: str) -> Quota:
        """``cpu=20000,memory=40960,count=200`` (any subset; empty: no quota)."""
        values: dict[str, int] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in QUOTA_KEYS:
                raise ValueError(
                    f"quota {part!r}: write KEY=NUMBER with KEY one of cpu (MHz), memory (MB), "
                    "count (instances), e.g. cpu=20000,memory=40960,count=200"
                )
            if key in values:
                raise ValueError(f"quota: {key} is given twice")
            try:
                number = int(raw.strip())
            except ValueError:
                raise ValueError(f"quota {key}: {raw.strip()!r} is not a whole number") from None
            if number < 0:
                raise ValueError(f"quota {key}: {number} is negative")
            values[key] = number
        return cls(**values)

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in QUOTA_KEYS if getattr(self, k) is not None]
        return ",".join(parts) or "none"


class Namespace(BaseModel):
    """A namespace as stored."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field(default="", max_length=1024)
    quota: Quota = Field(default_factory=Quota)
    create_index: int = 0
    modify_index: int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_namespace(v)

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        if any(not c.isprintable() for c in v):
            raise ValueError("description: control characters are not allowed")
        return v


class Usage(BaseModel):
    cpu: int = 0
    memory: int = 0
    count: int = 0


class NamespaceInfo(Namespace):
    """A namespace with its figures: ``usage`` is what its live allocations hold (not
    stopped, not finished), ``desired`` what its jobs ask for (what quotas are checked
    against), ``jobs`` its jobs that are not stopped."""

    usage: Usage = Field(default_factory=Usage)
    desired: Usage = Field(default_factory=Usage)
    jobs: int = 0
