"""The false node-down of issue 18, reproduced at a size CI affords, and gone.

A full-size simulation once declared 1,808 healthy nodes down at once: the server had
stopped *hearing* heartbeats (its loop held by other work), not the nodes sending them.
Here a real server (SQLite store, the API app, its leader's heartbeat check) and twelve real
agents (mock driver, through the SDK and the same routes) run with a 2 s TTL and 2 s grace;
then the server's loop is held for 8 s, the way a long commit or a storm of requests holds
it, just before a heartbeat check.  The agents kept sending (their requests wait in the
server's queue); the check, run first when the loop comes back, finds every node silent
for twice TTL + grace.

Without podium.server.hearing (``stall`` answering "on time", as before issue 18) every
node is declared down and its allocations lost: the bug.  As built, the check sees that it
ran 8 s late, counts every silence that much shorter, and nobody goes down; the heartbeats
queued meanwhile are heard, and the nodes stay ready for several TTLs after.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podium.client import AsyncClient
from podium.models import ClientStatus, NodeStatus
from podium.server.api import create_app
from podium.server.core import Server, ServerConfig
from podium.state import SqliteBackend, StateStore
from tests.server.conftest import Cluster, mock_job

TTL = 2.0
GRACE = 2.0
NODES = 12
STALL = 2 * (TTL + GRACE)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The in-process cluster of tests/server/conftest.py, on a SQLite store, with a TTL
    that a held loop can outlast."""
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    server = Server(store, ServerConfig(heartbeat_ttl=TTL, heartbeat_grace=GRACE))
    await server.start()
    transport = httpx.ASGITransport(app=create_app(server))
    client = AsyncClient("http://podium", transport=transport, timeout=30)
    c = Cluster(server=server, store=store, client=client, tmp=tmp_path, _transport=transport)
    try:
        yield c
    finally:
        for agent in c.agents:
            with contextlib.suppress(Exception):
                await agent.stop()
            await agent.client.aclose()
        await client.aclose()
        await server.stop()
        store.close()


@pytest.mark.parametrize("hearing", [True, False], ids=["as-built", "without-hearing"])
async def test_a_server_that_stopped_listening_declares_no_node_down(
    cluster: Cluster, hearing: bool
) -> None:
    server = cluster.server
    for _ in range(NODES):
        await cluster.add_agent()
    await cluster.run(mock_job("web", count=NODES))

    def running() -> int:
        web = server.store.allocs_by_job("web")
        return sum(a.client_status == ClientStatus.RUNNING for a in web)

    await cluster.until(lambda: running() == NODES, 60, "every instance to run")
    nodes = server.nodes
    if not hearing:  # the server before issue 18: a late check is never its own fault
        nodes.hearing.stall = lambda now: (0.0, None)  # type: ignore[method-assign]

    checks = {"before": 0, "stalled": 0, "after": 0}
    resumed: list[float] = []
    check = nodes.check_heartbeats

    def stalled_check() -> list[str]:
        if checks["before"] < 2:  # two checks on time first: the cluster's steady state
            checks["before"] += 1
        elif not checks["stalled"]:
            time.sleep(STALL)  # the fault: the loop held, every heartbeat queued behind it
            resumed.append(server.clock())
            checks["stalled"] = 1
        else:
            checks["after"] += 1
        return check()

    nodes.check_heartbeats = stalled_check  # type: ignore[method-assign]
    await cluster.until(lambda: checks["stalled"], 60, "the stalled check")
    if not hearing:
        # the bug, reproduced: every node declared down, its instance lost
        assert nodes.missed_heartbeats >= NODES
        assert all(n.status == NodeStatus.DOWN for n in server.store.nodes())
        web = server.store.allocs_by_job("web")
        assert sum(a.client_status == ClientStatus.LOST for a in web) >= NODES
        return
    assert nodes.missed_heartbeats == 0
    # every node heard again after the stall, then two more checks: still nobody down
    await cluster.until(
        lambda: all(nodes.last_heard.get(n.id, 0) >= resumed[0] for n in server.store.nodes()),
        60,
        "every node's heartbeat after the stall",
    )
    after = checks["after"]
    await cluster.until(lambda: checks["after"] >= after + 2, 60, "two more heartbeat checks")
    assert nodes.missed_heartbeats == 0
    assert all(n.status == NodeStatus.READY for n in server.store.nodes())
    web = server.store.allocs_by_job("web")
    assert all(a.client_status == ClientStatus.RUNNING for a in web)
