"""Benchmark: the server's memory per stored allocation, beside its stored JSON.

    python bench/alloc_memory.py [--allocs 20000]

A real server (memory store) places ALLOCS instances of simulated jobs on 100 nodes,
then takes one report per instance as an agent sends it after the mock driver started
the task (``running``, two task events); tracemalloc counts what the store then holds
per allocation (the allocation, its task state and events, the store's indexes),
printed beside the floor, its JSON as written to SQLite; and one allocation's task
states as they are held now (slotted pydantic dataclasses) beside the pydantic models
they were before issue 6's fourth session (with their field sets shared, as the store's
compaction shared them).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from podium.models import (
    Allocation,
    AllocClientUpdate,
    ClientStatus,
    DriverInfo,
    JobSpec,
    Node,
    NodeResources,
    TaskEvent,
    TaskState,
    TaskStateName,
)
from podium.models.compact import _share_fields_set, compact_alloc
from podium.server.core import Server, ServerConfig
from podium.sim.workload import sim_job
from podium.state import StateStore


class EventModel(BaseModel):
    """TaskEvent as it was: a pydantic model."""

    time: float
    type: str
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False


class StateModel(BaseModel):
    """TaskState as it was: a pydantic model."""

    state: TaskStateName = TaskStateName.PENDING
    failed: bool = False
    restarts: int = 0
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_restart: float | None = None
    events: list[EventModel] = Field(default_factory=list)


def running_state(now: float) -> dict[str, Any]:
    return {
        "state": "running",
        "started_at": now,
        "events": [
            {"time": now, "type": "Received", "message": "task received by the agent"},
            {"time": now, "type": "Started", "message": "task started by the driver"},
        ],
    }


def dump_us(dump: Any, rounds: int = 5, calls: int = 20_000) -> float:
    """Median microseconds per ``dump()`` call over ``rounds`` rounds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            dump()
        times.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(times)


def held(build: Any) -> tuple[float, Any]:
    """Bytes that ``build()``'s result keeps allocated, and the result."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocs", type=int, default=20_000)
    args = parser.parse_args()
    store = StateStore()
    server = Server(store, ServerConfig())
    for i in range(100):
        server.register_node(
            Node(
                id=f"node-{i:03d}",
                name=f"sim-{i:05d}",
                resources=NodeResources(cpu=1_000_000, memory=1_000_000),
                drivers={"mock": DriverInfo(detected=True, healthy=True)},
            )
        )
    jobs = max(1, args.allocs // 1000)
    for j in range(jobs):
        result = server.register_job(JobSpec.model_validate(sim_job(j, args.allocs // jobs)))
        ev = store.evaluation(result.eval_id)
        assert ev is not None
        server.process_eval(ev)
    placed = store.allocs()
    state = running_state(time.time())

    def task_states() -> dict[str, TaskState]:
        events = [TaskEvent(**e) for e in state["events"]]
        return {"t": TaskState(**{**state, "events": events})}

    by_node: dict[str, list[AllocClientUpdate]] = {}
    for a in placed:
        update = AllocClientUpdate(
            id=a.id,
            client_status=ClientStatus.RUNNING,
            client_description="tasks are running",
            task_states=task_states(),
        )
        by_node.setdefault(a.node_id, []).append(update)
    del placed
    # What the store keeps once every report is in (the placed copies it replaced are freed).
    reported, _ = held(lambda: server.client_update_many(list(by_node.items())))
    by_node.clear()
    stored = store.allocs()
    n = len(stored)
    rows = [a.model_dump_json() for a in stored]
    json_bytes = sum(map(len, rows)) / n
    # A whole stored allocation: the store's own, parsed from its JSON row and compacted as
    # the store compacts what it applies.
    whole, kept = held(lambda: [compact_alloc(Allocation.model_validate_json(r)) for r in rows])
    del kept
    now_bytes, kept_now = held(lambda: [task_states() for _ in range(n)])

    def as_models() -> dict[str, StateModel]:
        model = StateModel.model_validate(state)
        for obj in (model, *model.events):  # as compact_alloc kept them: shared field sets
            _share_fields_set(obj)
        return {"t": model}

    before_bytes, kept_before = held(lambda: [as_models() for _ in range(n)])
    del kept_now, kept_before
    # Serialising one (as every commit of the allocation does): median of 5 rounds.
    now_map, before_map = task_states(), as_models()
    now_adapter = TypeAdapter(dict[str, TaskState])
    before_adapter = TypeAdapter(dict[str, StateModel])
    dump_now = dump_us(lambda: now_adapter.dump_json(now_map))
    dump_before = dump_us(lambda: before_adapter.dump_json(before_map))
    print(f"allocations: {n:,} on 100 nodes (running: one task, two events)")
    print(f"{'stored JSON (floor: the bytes SQLite holds)':48} {json_bytes:7,.0f} B")
    print(
        f"{'an allocation as the store keeps it':48} {whole / n:7,.0f} B  ({whole / n / json_bytes:.1f}x the floor)"
    )
    print(f"{'what its first report added to the store':48} {reported / n:7,.0f} B")
    print(f"{'its task states, slotted dataclasses (now)':48} {now_bytes / n:7,.0f} B")
    print(
        f"{'its task states, pydantic models (before)':48} {before_bytes / n:7,.0f} B  ({before_bytes / now_bytes:.1f}x)"
    )
    print(f"{'their JSON dump, slotted dataclasses (now)':48} {dump_now:7.2f} us")
    print(
        f"{'their JSON dump, pydantic models (before)':48} {dump_before:7.2f} us  ({dump_before / dump_now:.1f}x)"
    )


if __name__ == "__main__":
    main()
