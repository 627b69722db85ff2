"""Whether a silence is the nodes' or the server's own (podium.server.hearing), as numbers:
the arithmetic alone, then :class:`podium.server.nodes.Nodes` with both clocks injected."""

from __future__ import annotations

from pathlib import Path

from podium.models import Node, NodeResources, NodeStatus
from podium.server.core import Server, ServerConfig
from podium.server.hearing import MASS_MIN, MAX_HOLDS, Hearing, check_interval
from podium.state import SqliteBackend, StateStore

TTL = 10.0


def test_a_check_on_time_shifts_nothing_and_a_late_one_shifts_by_its_lateness() -> None:
    h = Hearing(TTL)
    assert check_interval(TTL) == 1.0 and check_interval(0.2) == 0.05
    assert h.stall(100.0) == (0.0, None)  # the first check: nothing to compare with
    assert h.stall(101.0) == (0.0, None)
    assert h.stall(103.5) == (0.0, None)  # 1.5 s late: within the slack
    shift, why = h.stall(133.5)  # 30 s since the last check, due every 1 s
    assert shift == 29.0 and why is not None and "not listening for 29.0s" in why
    h.restart()  # duties taken again: the time before is nobody's stall
    assert h.stall(500.0) == (0.0, None)
    # from the moment they were taken: a loop held before the first check is a stall too
    h.restart(600.0)
    shift, why = h.stall(612.0)
    assert shift == 11.0 and why is not None


def _heard_late(h: Hearing, now: float, nodes: int, gap: float) -> None:
    for i in range(nodes):
        h.heard(f"live{i}", now, now - gap)


def test_a_mass_silence_is_held_only_while_the_others_are_heard_late() -> None:
    silent = [f"n{i}" for i in range(MASS_MIN)]
    # the others heard on time (every TTL/2): the silent ones are silent
    on_time = Hearing(TTL)
    _heard_late(on_time, 1_000.0, 50, TTL / 2)
    assert on_time.hold(1_000.0, silent, ready=60) == (set(), None)
    # the others heard 3 TTLs apart: the backlog is the server's; held, at most MAX_HOLDS times
    late = Hearing(TTL)
    _heard_late(late, 1_000.0, 50, 3 * TTL)
    for _ in range(MAX_HOLDS):
        held, why = late.hold(1_000.0, silent, ready=60)
        assert held == set(silent) and why is not None and "backlog" in why
    assert late.hold(1_000.0, silent, ready=60) == (set(), None)
    # a node heard again starts afresh
    late.heard("n0", 1_001.0, 900.0)
    assert late.hold(1_001.0, silent, ready=60)[0] == {"n0"}


def test_a_few_silent_nodes_are_never_the_servers_fault() -> None:
    h = Hearing(TTL)
    _heard_late(h, 1_000.0, 500, 3 * TTL)
    assert h.hold(1_000.0, ["a", "b"], ready=500) == (set(), None)  # under MASS_MIN
    many = [f"n{i}" for i in range(40)]
    assert h.hold(1_000.0, many, ready=500) == (set(), None)  # under MASS_SHARE of 500
    assert h.hold(1_000.0, many, ready=100)[0] == set(many)


class Clocks:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.mono = 50.0

    def clock(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Time passes, for the cluster and the process alike; what makes a stall is that
        no check ran meanwhile."""
        self.now += seconds
        self.mono += seconds


def _server(tmp_path: Path, clocks: Clocks, nodes: int) -> Server:
    store = StateStore(SqliteBackend(tmp_path / "state.db"))
    server = Server(store, ServerConfig(heartbeat_ttl=TTL, heartbeat_grace=TTL), clock=clocks.clock)
    server.nodes.monotonic = clocks.monotonic
    for i in range(nodes):
        server.register_node(
            Node(id=f"n{i:02}", name=f"n{i:02}", resources=NodeResources(cpu=1000, memory=1000))
        )
    return server


def test_a_server_that_did_not_run_for_longer_than_ttl_and_grace_declares_nobody_down(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    server = _server(tmp_path, clocks, 20)
    assert server.check_heartbeats() == []
    # every node heartbeats on time until the server stops running for 30 s (TTL + grace
    # is 20 s); its check then runs before the queued heartbeats are read
    for _ in range(5):
        clocks.advance(1.0)
        for i in range(20):
            server.heartbeat(f"n{i:02}")
        assert server.check_heartbeats() == []
    clocks.advance(30.0)
    assert server.check_heartbeats() == []
    assert server.nodes.missed_heartbeats == 0
    for i in range(20):
        server.heartbeat(f"n{i:02}")
    clocks.advance(1.0)
    assert server.check_heartbeats() == []
    assert all(n.status == NodeStatus.READY for n in server.store.nodes())
    server.store.close()


def test_nodes_that_really_went_silent_go_down_while_the_others_are_heard(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    server = _server(tmp_path, clocks, 30)
    server.check_heartbeats()
    silent = {f"n{i:02}" for i in range(12)}  # a rack of 12 of 30 loses its network
    down: list[str] = []
    for _ in range(25):  # 25 s: past TTL + grace for the silent ones
        clocks.advance(1.0)
        for i in range(30):
            if f"n{i:02}" not in silent:
                server.heartbeat(f"n{i:02}")
        down += server.check_heartbeats()
    assert set(down) == silent
    assert server.nodes.held_heartbeats == 0
    server.store.close()
