"""A scripted fake of the Podium server for CLI tests, served through httpx.MockTransport.

Each route answers from a script: a list of bodies played in order, the last
one repeating.  Every answer carries a fresh, higher ``X-Podium-Index``, as a
server whose state changed would, so the CLI's blocking loops never pause.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from podium.models import (
    Allocation,
    AllocMetric,
    Evaluation,
    Job,
    JobSpec,
    Node,
    NodeResources,
    Resources,
    TaskEvent,
    TaskState,
    TriggeredBy,
)

ALLOC_A = "aaaa1111-0000-4000-8000-000000000001"
ALLOC_B = "bbbb2222-0000-4000-8000-000000000002"
NODE_ID = "9b1d2e3f-0000-4000-8000-000000000009"
EVAL_ID = "e0e1e2e3-0000-4000-8000-000000000003"


def spec(job_id: str = "web", count: int = 2, job_type: str = "service", tasks: int = 1) -> JobSpec:
    names = ["server", "sidecar", "worker"][:tasks]
    return JobSpec.model_validate(
        {
            "job": job_id,
            "type": job_type,
            "groups": {
                "web": {
                    "count": count,
                    "tasks": {
                        n: {"driver": "raw_exec", "config": {"command": "/bin/sleep"}}
                        for n in names
                    },
                }
            },
        }
    )


def alloc(
    alloc_id: str = ALLOC_A, status: str = "pending", index: int = 0, **kw: Any
) -> Allocation:
    base: dict[str, Any] = {
        "id": alloc_id,
        "eval_id": EVAL_ID,
        "name": f"web.web[{index}]",
        "job_id": "web",
        "job_version": 0,
        "group": "web",
        "index": index,
        "node_id": NODE_ID,
        "node_name": "laptop",
        "resources": Resources(),
        "client_status": status,
        "create_time": 1.0,
    }
    base.update(kw)
    return Allocation.model_validate(base)


def failed_alloc() -> Allocation:
    state = TaskState(
        state="dead",
        failed=True,
        exit_code=3,
        events=[
            TaskEvent(time=1_700_000_000.0, type="Received", message="task received by agent"),
            TaskEvent(time=1_700_000_001.0, type="Started", message="task started"),
            TaskEvent(time=1_700_000_002.0, type="Terminated", message="exited", exit_code=3),
            TaskEvent(
                time=1_700_000_003.0,
                type="Not Restarting",
                message="restart attempts exhausted",
            ),
        ],
    )
    return alloc(
        status="failed",
        client_description="task server failed",
        task_states={"server": state},
    )


def evaluation(status: str = "complete", **kw: Any) -> Evaluation:
    base: dict[str, Any] = {
        "id": EVAL_ID,
        "triggered_by": TriggeredBy.JOB_REGISTER,
        "job_id": "web",
        "status": status,
        "create_time": 1.0,
    }
    base.update(kw)
    return Evaluation.model_validate(base)


def exhausted_metric() -> AllocMetric:
    return AllocMetric(
        nodes_evaluated=3,
        nodes_filtered=1,
        nodes_exhausted=2,
        constraint_filtered={"missing driver exec": 1},
        dimension_exhausted={"memory": 2},
    )


def node_info(**kw: Any) -> dict[str, Any]:
    node = Node(
        id=NODE_ID,
        name="laptop",
        status="ready",
        resources=NodeResources(cpu=4000, memory=8192),
        reserved=NodeResources(cpu=100, memory=192),
        drivers={
            "raw_exec": {"detected": True, "healthy": True, "description": "ok"},
            "exec": {"detected": True, "healthy": False, "description": "needs root"},
        },
        attributes={"os.name": "linux", "cpu.cores": "8"},
        http_addr="127.0.0.1:40001",
    )
    return {
        **node.model_dump(mode="json"),
        "alloc_count": 2,
        "allocated": {"cpu": 200, "memory": 600},
        **kw,
    }


def job_info(**kw: Any) -> dict[str, Any]:
    job = Job(id="web", spec=spec(), status="running", version=0, submit_time=1.0)
    return {
        **job.model_dump(mode="json"),
        "summary": {"web": {"pending": 0, "running": 2, "complete": 0, "failed": 1, "lost": 0}},
        **kw,
    }


def dump(obj: Any) -> Any:
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


@dataclass
class FakeServer:
    scripts: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    index: int = 100

    def on(self, method: str, path: str, *bodies: Any, status: int = 200) -> FakeServer:
        self.scripts[(method, path)] = [(status, dump(b)) for b in bodies]
        return self

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        script = self.scripts.get(key)
        if not script:
            return httpx.Response(
                404, json={"error": f"fake server has no route {key[0]} {key[1]}"}
            )
        status, body = script.pop(0) if len(script) > 1 else script[0]
        self.index += 1
        headers = {"X-Podium-Index": str(self.index)}
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(
            status,
            content=json.dumps(body).encode(),
            headers={**headers, "content-type": "application/json"},
        )
