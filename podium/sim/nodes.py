"""Simulated nodes: shapes and attributes, and the agent that plays one.

``--node-classes N`` gives N node shapes (cpu, memory, cpu architecture, os);
every node also carries a rack in its meta, so constraints, spreads and the
scheduler's computed node classes have real work to do.
"""

from __future__ import annotations

import importlib.util
import random
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.agent.localstate import LocalState, StoredAlloc
from podium.client import AsyncClient
from podium.drivers.base import TaskContext, TaskHandle
from podium.drivers.mock import MockDriver
from podium.models import DriverInfo, Node, NodeResources

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

    def close(self) -> None:
        return None


class SimDriver(MockDriver):
    """The mock driver, where a share of the tasks (``fail_rate``) exits 1 within ``fail_within`` s."""

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


MOCK_INFO = DriverInfo(detected=True, healthy=True, description="simulated tasks, no processes")


class SimAgent(Agent):
    """A real agent whose machine is made up: its node comes from a :class:`NodeShape`."""

    def __init__(
        self,
        shape: NodeShape,
        settings: AgentSettings,
        client: AsyncClient,
        driver: MockDriver,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            settings, client, drivers={"mock": driver}, state=MemoryLocalState(), **kwargs
        )
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

    def mark_persist(self, runner: Any) -> None:
        """Nothing to persist: a simulated agent never restarts."""
        return None


def no_failed_imports() -> None:
    """httpx's ASGI transport tries ``import sniffio`` on every request; where it is not
    installed each try searches sys.path again (34,000 requests: 5.6 s of stat calls in a
    profile).  Record the absence once, as the import system itself would for ``None``."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def raise_fd_limit() -> None:
    """Thousands of held connections: the soft open-files limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
