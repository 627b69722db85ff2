"""Simulated nodes: shapes and attributes, and the agent that plays one.

``--node-classes N`` gives N node shapes (cpu, memory, cpu architecture, os);
every node also carries a rack in its meta, so constraints, spreads and the
scheduler's computed node classes have real work to do.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from dataclasses import dataclass
from typing import Any

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.agent.localstate import LocalState, StoredAlloc
from podium.client import AsyncClient
from podium.client.results import SpecCache
from podium.drivers.base import TaskContext, TaskHandle
from podium.drivers.mock import MockDriver, _Run
from podium.models import Allocation, DriverInfo, JobSpec, Node, NodeResources
from podium.models.compact import _intern, compact_alloc, compact_task_state

MHZ_PER_CORE = 2500
SHAPES: list[tuple[int, int]] = [
    (4, 16384),
    (8, 32768),
    (16, 65536),
    (8, 16384),
    (16, 32768),
    (32, 131072),
    (2, 8192),
    (4, 8192),
]
"""(cores, memory MB) of each node class, in the order classes are added."""

RACKS = 10

SYNC_WAIT = 300.0
"""Seconds a simulated agent's blocking query waits (the server caps it at its MAX_WAIT)."""


def sim_settings(name: str, data_dir: str, server: str) -> AgentSettings:
    """A simulated agent's settings: no allocation directories or log rotation (its tasks
    write nothing), and blocking queries of SYNC_WAIT (one that times out answers with the
    node's whole list; 5,000 agents re-asking every 30 s was half of all syncs at 5,000
    nodes)."""
    return AgentSettings(
        data_dir=data_dir,
        servers=[server],
        name=name,
        alloc_dirs=False,
        log_rotate_interval=1e9,
        sync_wait=SYNC_WAIT,
    )


GC_THRESHOLD = (300_000, 50, 100)
"""CPython's default (700, 10, 10) runs a young collection every 700 allocations; with
hundreds of thousands of live models that is 2-3x the simulation's CPU (measured:
10,000 placements on 100 nodes, 6.7 s -> 3.2 s).  The server and the agents' workers
set it for their run (1,000,000 instead of 300,000 was tried at 1,000,000 placements:
no faster, 0.13 GB more server RSS)."""

NO_TIMER_AFTER = 3600.0
"""A simulated task that runs longer than this (``run_for`` 0 is a day) gets no timer: a
simulation ends long before it would fire, and a million armed timers are ~0.4 GB."""


@dataclass(frozen=True)
class NodeShape:
    name: str
    cpu: int
    memory: int
    attributes: dict[str, str]
    meta: dict[str, str]


def node_shapes(nodes: int, classes: int, seed: int = 0) -> list[NodeShape]:
    """One shape per node: class ``i % classes``, a rack, 1 in 10 classes' nodes arm64."""
    rng = random.Random(seed)
    out = []
    classes = max(1, classes)
    for i in range(nodes):
        k = i % classes
        cores, memory = SHAPES[k % len(SHAPES)]
        arch = "arm64" if k % 10 == 9 or (classes == 1 and rng.random() < 0.1) else "amd64"
        out.append(
            NodeShape(
                name=f"sim-{i:05d}",
                cpu=cores * MHZ_PER_CORE,
                memory=memory,
                attributes={
                    "cpu.arch": arch,
                    "os.name": "linux",
                    "cpu.numcores": str(cores),
                    "kernel.name": "linux",
                },
                meta={"rack": f"r{i % RACKS}", "class": f"c{k}"},
            )
        )
    return out


class MemoryLocalState(LocalState):
    """The agent's local state in a dictionary: nothing on disk, nothing survives."""

    def __init__(self) -> None:  # no SQLite file (a few KB per agent would add up)
        self._kv: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self._kv.get(key)

    def put(self, key: str, value: str) -> None:
        self._kv[key] = value

    def load(self) -> list[StoredAlloc]:
        return []

    def save_many(self, items: list[StoredAlloc]) -> None:
        return None

    def delete(self, alloc_id: str) -> None:
        return None

    def uid_leases(self) -> dict[str, int]:
        return {}

    def set_uid_lease(self, alloc_id: str, uid: int | None) -> None:
        return None

    def close(self) -> None:
        return None


class SimDriver(MockDriver):
    """The mock driver, where a share of the tasks (``fail_rate``) exits 1 within ``fail_within`` s.

    Runners watch a task through the mock's ``exit_future`` (the run's own future, with a
    done callback): no waiter task, no shield per placement."""

    def __init__(self, fail_rate: float = 0.0, fail_within: float = 5.0, seed: int = 0) -> None:
        super().__init__()
        self.fail_rate = fail_rate
        self.fail_within = fail_within
        self._rng = random.Random(seed)

    async def start(self, ctx: TaskContext) -> TaskHandle:
        handle = await super().start(ctx)
        if self.fail_rate and self._rng.random() < self.fail_rate:
            delay = self._rng.uniform(0.0, self.fail_within)
            handle.state["exit_code"] = 1
            handle.state["deadline"] = time.time() + delay
            self._arm(handle, delay)
        return handle

    def _arm(self, handle: TaskHandle, delay: float) -> _Run:
        if delay <= NO_TIMER_AFTER:
            return super()._arm(handle, delay)
        run = _Run(handle, asyncio.get_running_loop())  # ends only when stopped
        old = self._runs.get(handle.task_id)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        self._runs[handle.task_id] = run
        return run


MOCK_INFO = DriverInfo(detected=True, healthy=True, description="simulated tasks, no processes")


PROCESS_SPECS: SpecCache = {}
HEARTBEAT_SECONDS: list[float] = []
"""Every heartbeat's time to its answer (retries included) of this process' simulated
agents, since the run's timed span began (cleared then: ``podium sim``'s ``reset``)."""
"""The job specs the simulated agents of this process have parsed (see SimAgent)."""


class SimAgent(Agent):
    """A real agent whose machine is made up: its node comes from a :class:`NodeShape`.

    The agents of one process share the job specs they parse (``shared_specs``): each
    spec reaches thousands of them, where a real machine validates it once for itself;
    the server still sends it to each node that lacks it."""

    shared_specs = PROCESS_SPECS

    def __init__(
        self,
        shape: NodeShape,
        settings: AgentSettings,
        client: AsyncClient,
        driver: MockDriver,
        node_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``node_id``: the node's id when it is known beforehand (``--secure``: the one
        its certificate names); else the agent makes one, as a real agent does."""
        state = MemoryLocalState()
        if node_id is not None:
            state.put("node_id", node_id)
        super().__init__(settings, client, drivers={"mock": driver}, state=state, **kwargs)
        self.shape = shape

    def node(self) -> Node:
        s = self.shape
        return Node(
            id=self.node_id,
            name=s.name,
            datacenter=self.settings.datacenter,
            node_pool=self.settings.node_pool,
            http_addr=self.http_addr,
            attributes=dict(s.attributes),
            meta=dict(s.meta),
            resources=NodeResources(cpu=s.cpu, memory=s.memory),
            drivers={"mock": MOCK_INFO},
        )

    def apply_sync(
        self,
        allocs: list[Allocation],
        jobs: dict[str, JobSpec],
        live: set[str] | None = None,
        *,
        removals: bool = True,
    ) -> set[str]:
        """As the agent's, with each received allocation compacted first (shared field
        sets, resources, short strings and ids, as the store keeps its own): the agent
        never mutates an allocation it received, and thousands of simulated agents in
        one process hold one per placement."""
        for alloc in allocs:
            compact_alloc(alloc)
            # ids a node's allocations share (its node, a job, a plan's evaluation)
            _intern(alloc.__dict__, "node_id", "node_name", "job_id", "eval_id", "deployment_id")
        return super().apply_sync(allocs, jobs, live, removals=removals)

    def mark_dirty(self, runner: Any) -> None:
        """As the agent's, sharing the short strings of the runner's task events (never
        changed once made) before they wait for the report."""
        for track in runner.machine.tasks.values():
            compact_task_state(track.state)
        super().mark_dirty(runner)

    def mark_persist(self, runner: Any) -> None:
        """Nothing to persist: a simulated agent never restarts."""
        return None

    def heartbeat_answered(self, seconds: float) -> None:
        super().heartbeat_answered(seconds)
        HEARTBEAT_SECONDS.append(seconds)


def raise_fd_limit() -> None:
    """Thousands of held connections: the soft open-files limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
