"""Parameterized jobs: the ``parameterized`` block, a task's ``dispatch_payload``, and
the rules a dispatch request is held to.  Pure: the server (``podium.server.dispatch``)
applies them, the CLI and the SDK read the same limits.

A parameterized job is a template that is never placed; ``podium job dispatch`` makes
a child job ``<job>/dispatch-<unix time>-<8 hex>`` of it with the dispatch's metadata
merged into the job's ``meta`` (every task sees it as ``PODIUM_META_<KEY>``) and its
payload (at most :data:`MAX_PAYLOAD` bytes) written into the task directory of each
task that asks for it with ``dispatch_payload: {file: NAME}``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from podium.models.limits import MAX_VALUE_CHARS

MAX_PAYLOAD = 16 * 1024
"""Bytes of payload one dispatch may carry (Nomad's limit too): it is stored in the
child job's spec and sent to every node that runs it, so it is for parameters, not data."""
MAX_META_KEYS = 64
MAX_TOKEN_CHARS = 128
META_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
"""Dispatch meta keys become environment variable names (``PODIUM_META_<KEY>``)."""
CHILD_RE = re.compile(
    r"^(?P<parent>[A-Za-z0-9][A-Za-z0-9_.\-]{0,127})/(?P<kind>periodic|dispatch)-[0-9a-f\-]{1,40}$"
)
"""The id of a child job: ``<parent>/periodic-<unix time>`` or
``<parent>/dispatch-<unix time>-<8 hex>``."""


class Parameterized(BaseModel):
    """``parameterized:`` on a batch job: run it on demand (``job dispatch``)."""

    model_config = ConfigDict(extra="forbid")

    payload: Literal["required", "optional", "forbidden"] = "optional"
    meta_required: list[str] = Field(default_factory=list, max_length=MAX_META_KEYS)
    """Meta keys every dispatch must give."""
    meta_optional: list[str] = Field(default_factory=list, max_length=MAX_META_KEYS)
    """Meta keys a dispatch may give; any other key is refused."""

    @field_validator("meta_required", "meta_optional")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            check_meta_key(key)
        if len(set(v)) != len(v):
            raise ValueError("a meta key is listed twice")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> Parameterized:
        both = set(self.meta_required) & set(self.meta_optional)
        if both:
            raise ValueError(
                f"meta key(s) {', '.join(sorted(both))} are both required and optional"
            )
        return self


class DispatchPayload(BaseModel):
    """``dispatch_payload:`` on a task: where the dispatch's payload is written."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(min_length=1, max_length=256)
    """A path relative to the task's directory (``${PODIUM_TASK_DIR}/<file>``)."""

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str) -> str:
        parts = v.replace("\\", "/").split("/")
        if v.startswith("/") or ".." in parts or "" in parts or "\0" in v:
            raise ValueError(
                f"dispatch_payload.file {v!r} must be a path inside the task's directory "
                "(relative, without '..'), such as input.json or local/input.json"
            )
        return v


class DispatchRequest(BaseModel):
    """``POST /v1/job/{id}/dispatch``."""

    model_config = ConfigDict(extra="forbid")

    meta: dict[
        Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=MAX_VALUE_CHARS)]
    ] = Field(default_factory=dict, max_length=MAX_META_KEYS)
    """Checked against the job's ``parameterized`` rules (keys: letters, digits, '_')."""
    payload: str | None = Field(default=None, max_length=(MAX_PAYLOAD + 2) // 3 * 4 + 4)
    """Standard base64 of at most MAX_PAYLOAD bytes."""
    idempotency_token: str = Field(default="", max_length=MAX_TOKEN_CHARS)
    """A dispatch repeated with the same token answers the first one's child."""


class DispatchAnswer(BaseModel):
    """The answer of a dispatch: the child job made (or found, by its token)."""

    dispatched_job_id: str
    eval_id: str
    index: int
    existing: bool = False
    """True: an earlier dispatch with the same idempotency token made this child."""


def check_meta_key(key: str) -> str:
    if not META_KEY_RE.match(key):
        raise ValueError(
            f"meta key {key!r} must be letters, digits and '_', not starting with a digit "
            "(it becomes the PODIUM_META_<KEY> variable)"
        )
    return key


def check_dispatch(rules: Parameterized, meta: dict[str, str], payload: bytes | None) -> list[str]:
    """Every reason a dispatch with ``meta`` and ``payload`` breaks ``rules`` (empty:
    it may run)."""
    problems: list[str] = []
    if len(meta) > MAX_META_KEYS:
        problems.append(f"{len(meta)} meta keys given; at most {MAX_META_KEYS}")
    for key in meta:
        try:
            check_meta_key(key)
        except ValueError as exc:
            problems.append(str(exc))
    missing = [k for k in rules.meta_required if k not in meta]
    if missing:
        problems.append(f"required meta missing: {', '.join(missing)} (give --meta KEY=VALUE)")
    allowed = set(rules.meta_required) | set(rules.meta_optional)
    unknown = sorted(k for k in meta if k not in allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        problems.append(
            f"meta key(s) not declared by the job: {', '.join(unknown)} (declared: {known})"
        )
    size = len(payload) if payload is not None else 0
    if rules.payload == "required" and not size:
        problems.append("the job requires a payload (a file, or - for standard input)")
    if rules.payload == "forbidden" and payload is not None and size:
        problems.append("the job forbids a payload")
    if size > MAX_PAYLOAD:
        problems.append(f"the payload is {size:,} bytes; at most {MAX_PAYLOAD:,} (16 KiB)")
    return problems


def encode_payload(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def decode_payload(text: str) -> bytes:
    """The payload of a request or a stored spec (standard base64), or ValueError."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("payload must be standard base64") from None


def is_child_id(job_id: str) -> bool:
    return CHILD_RE.match(job_id) is not None


def dispatch_id(parent: str, now: float, suffix: str) -> str:
    """``<parent>/dispatch-<unix time>-<suffix>`` (``suffix``: 8 hex digits)."""
    return f"{parent}/dispatch-{int(now)}-{suffix}"
