"""Canned API objects, built from the real models so they stay valid as the models change."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from podium.models import (
    Allocation,
    Evaluation,
    Job,
    JobSpec,
    JobVersion,
    Node,
    NodeResources,
    Resources,
    TriggeredBy,
)

ALLOC_ID = "3f2a0c1e-0000-4000-8000-000000000001"
NODE_ID = "9b1d2e3f-0000-4000-8000-000000000002"
EVAL_ID = "e0e1e2e3-0000-4000-8000-000000000003"


def spec(job_id: str = "web", count: int = 2, job_type: str = "service") -> JobSpec:
    return JobSpec.model_validate(
        {
            "job": job_id,
            "type": job_type,
            "groups": {
                "web": {
                    "count": count,
                    "tasks": {
                        "server": {
                            "driver": "raw_exec",
                            "config": {"command": "/bin/sleep", "args": ["60"]},
                        }
                    },
                }
            },
        }
    )


def alloc(**kw: Any) -> Allocation:
    base: dict[str, Any] = {
        "id": ALLOC_ID,
        "eval_id": EVAL_ID,
        "name": "web.web[0]",
        "job_id": "web",
        "job_version": 0,
        "group": "web",
        "index": 0,
        "node_id": NODE_ID,
        "resources": Resources(),
    }
    base.update(kw)
    return Allocation.model_validate(base)


def node(**kw: Any) -> Node:
    base: dict[str, Any] = {
        "id": NODE_ID,
        "name": "laptop",
        "resources": NodeResources(cpu=4000, memory=8192),
    }
    base.update(kw)
    return Node.model_validate(base)


def evaluation(**kw: Any) -> Evaluation:
    base: dict[str, Any] = {
        "id": EVAL_ID,
        "triggered_by": TriggeredBy.JOB_REGISTER,
        "job_id": "web",
    }
    base.update(kw)
    return Evaluation.model_validate(base)


def job(**kw: Any) -> Job:
    base: dict[str, Any] = {"id": "web", "spec": spec()}
    base.update(kw)
    return Job.model_validate(base)


def version(n: int = 0) -> JobVersion:
    return JobVersion(job_id="web", version=n, spec=spec(), submit_time=1.0, modify_index=n + 1)


def dump(obj: Any) -> Any:
    """A model (or list of models) as the JSON the server would send."""
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Recorder:
    """A MockTransport handler answering canned JSON per (method, path) and keeping the requests."""

    routes: dict[tuple[str, str], Any] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    index: int = 42

    def on(self, method: str, path: str, body: Any, status: int = 200) -> Recorder:
        self.routes[(method, path)] = (status, body)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        if key not in self.routes:
            return httpx.Response(404, json={"error": f"no route {key}"})
        status, body = self.routes[key]
        if callable(body):
            return body(request)  # type: ignore[no-any-return]
        return httpx.Response(status, json=dump(body), headers={"X-Podium-Index": str(self.index)})

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)
