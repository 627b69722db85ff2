"""Leader election through an etcd lease (podium.state.election) against real etcd members
on loopback: one wins and the others see it; a resignation hands over at once; a leader
killed outright (a real process, SIGKILL) is replaced within its TTL + 2 s; a leader cut
off from etcd steps down before another can be elected, and its old guard can never
commit again (the test that would catch a split brain).

etcd raises a lease's TTL to its minimum, 1.5 election timeouts: 3 s with the members'
2 s election timeout (podium.state.etcd_member), so the tests use TTL 3.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podium.state.election import LeaderElection
from podium.state.etcd import EtcdBackend, FenceLost, Guard
from podium.state.etcd_client import EtcdClient, EtcdUnavailable
from podium.state.etcd_member import EtcdCluster
from tests.state.etcd_support import need_etcd

TTL = 3


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Candidate:
    """A LeaderElection with its callbacks recorded as (event, monotonic time)."""

    election: LeaderElection
    events: list[tuple[str, float]] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)

    def elected(self) -> bool:
        return bool(self.events) and self.events[-1][0] == "elected"

    def deposed(self) -> bool:
        return bool(self.events) and self.events[-1][0] == "deposed"

    def at(self, event: str) -> float:
        return next(t for e, t in reversed(self.events) if e == event)


@pytest.fixture
def candidates() -> Iterator[Callable[..., Candidate]]:
    made: list[Candidate] = []

    def make(endpoints: list[str], url: str, cluster: str, ttl: int = TTL) -> Candidate:
        candidate: Candidate

        def elected(guard: Guard) -> None:
            candidate.guards.append(guard)
            candidate.events.append(("elected", time.monotonic()))

        def deposed() -> None:
            candidate.events.append(("deposed", time.monotonic()))

        election = LeaderElection(
            endpoints, url=url, cluster=cluster, ttl=ttl, on_elected=elected, on_deposed=deposed
        )
        candidate = Candidate(election)
        made.append(candidate)
        election.start()
        return candidate

    yield make
    for candidate in made:
        candidate.election.stop(timeout=15)


def leader_key(client: EtcdClient, cluster: str) -> tuple[str, int]:
    """(value, create revision) of the leader key, ("", 0) when there is none."""
    found = client.range(f"/podium/{cluster}/leader")[1]
    return (found[0].value.decode(), found[0].create_revision) if found else ("", 0)


def row(value: str) -> dict[str, list[tuple[str, bytes]]]:
    return {"jobs": [("web", f'{{"by":"{value}"}}'.encode())]}


def test_one_of_two_wins_and_the_other_sees_it(
    etcd: EtcdCluster, name: str, candidates: Callable[..., Candidate]
) -> None:
    a = candidates(etcd.endpoints, "http://a:7634", name)
    b = candidates(etcd.endpoints, "http://b:7634", name)
    winner = wait_until(lambda: a if a.elected() else b if b.elected() else None, what="a leader")
    loser = b if winner is a else a
    url = winner.election.url
    wait_until(lambda: loser.election.leader_url() == url, what="the other to see the leader")
    assert winner.election.leader_url() == url
    assert winner.election.is_leader and not loser.election.is_leader
    assert loser.events == [] and [e for e, _ in winner.events] == ["elected"]
    # the key holds the winner's URL; its guard names the key's term and lease
    client = EtcdClient(etcd.endpoints)
    value, created = leader_key(client, name)
    assert value == url
    (guard,) = winner.guards
    assert guard == winner.election.guard()
    assert guard.key == f"/podium/{name}/leader" and guard.create_revision == created
    # the winner commits under its fence; the other is refused before etcd is asked
    EtcdBackend(etcd.endpoints, cluster=name, fence=winner.election.fence).commit(1, row(url), {})
    with pytest.raises(FenceLost, match="not the leader"):
        EtcdBackend(etcd.endpoints, cluster=name, fence=loser.election.fence).commit(
            2, row("other"), {}
        )
    assert EtcdBackend(etcd.endpoints, cluster=name).load()[0] == 1
    # the lease is kept alive: past two TTLs the same term still leads
    time_elected = winner.at("elected")
    wait_until(lambda: time.monotonic() > time_elected + 2 * TTL, what="two TTLs")
    assert winner.election.is_leader and leader_key(client, name) == (url, created)
    assert [e for e, _ in winner.events] == ["elected"] and loser.events == []


def test_the_winner_resigns_and_the_other_wins_at_once(
    etcd: EtcdCluster, name: str, candidates: Callable[..., Candidate]
) -> None:
    ttl = 10  # long: a successor that had to wait for the lease to expire would be late
    a = candidates(etcd.endpoints, "http://a:7634", name, ttl)
    wait_until(a.elected, what="a to be elected")
    b = candidates(etcd.endpoints, "http://b:7634", name, ttl)
    wait_until(lambda: b.election.leader_url() == "http://a:7634", what="b to see a")
    resigned = time.monotonic()
    a.election.stop()
    assert a.deposed() and not a.election.is_leader
    wait_until(b.elected, timeout=ttl, what="b to be elected")
    took = b.at("elected") - resigned
    assert took < ttl / 2, f"b was elected {took:.1f}s after a resigned: the lease was not revoked"
    assert b.election.leader_url() == "http://b:7634"
    assert b.guards[0].create_revision != a.guards[0].create_revision


CANDIDATE = """
import sys, threading
from podium.state.election import LeaderElection
from tests.state.etcd_support import need_etcd

endpoints, cluster, ttl = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])

def elected(guard):
    print(f"elected {guard.create_revision} {guard.lease}", flush=True)

LeaderElection(endpoints, url="http://killed:7634", cluster=cluster, ttl=ttl,
               on_elected=elected).start()
threading.Event().wait()
"""


def test_a_killed_leader_is_replaced_within_its_ttl(
    etcd: EtcdCluster, name: str, candidates: Callable[..., Candidate]
) -> None:
    """The leader is a real process, killed with SIGKILL: it neither revokes its lease nor
    says goodbye; the other wins once etcd expires the lease, within TTL + 2 s."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CANDIDATE),
            ",".join(etcd.endpoints),
            name,
            str(TTL),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until it is elected (or dies)
        assert line.startswith("elected"), f"the candidate process said {line!r}"
        _, revision, lease = line.split()
        b = candidates(etcd.endpoints, "http://b:7634", name)
        wait_until(lambda: b.election.leader_url() == "http://killed:7634", what="b to see it")
    finally:
        killed = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_until(b.elected, timeout=TTL + 20, what="b to be elected")
    took = b.at("elected") - killed
    assert took <= TTL + 2, f"b was elected {took:.1f}s after the leader was killed (TTL {TTL})"
    # the dead leader's guard is refused by etcd itself
    old = Guard(f"/podium/{name}/leader", create_revision=int(revision), lease=int(lease))
    with pytest.raises(FenceLost):
        EtcdBackend(etcd.endpoints, cluster=name, fence=lambda: [old]).commit(1, row("dead"), {})
    EtcdBackend(etcd.endpoints, cluster=name, fence=b.election.fence).commit(1, row("b"), {})


def test_a_leader_whose_key_is_deleted_steps_down(
    etcd: EtcdCluster, name: str, candidates: Callable[..., Candidate]
) -> None:
    """etcd ends the leader's lease (an operator revoked it, or it expired while the
    leader was paused): the leader learns it and steps down, its term fenced off; a new
    term begins (b's, or a's own again when a campaigns first: both race for the free key,
    and either is right)."""
    a = candidates(etcd.endpoints, "http://a:7634", name)
    wait_until(a.elected, what="a to be elected")
    b = candidates(etcd.endpoints, "http://b:7634", name)
    wait_until(lambda: b.election.leader_url() == "http://a:7634", what="b to see a")
    old = a.guards[0]
    client = EtcdClient(etcd.endpoints)
    revoked = time.monotonic()
    client.lease_revoke(old.lease or 0)
    wait_until(
        lambda: leader_key(client, name)[1] not in (0, old.create_revision),
        what="a new term",
    )
    # a hears of it from its watch (at once) or its next renewal (TTL/3), and at the
    # latest its deadline passes (TTL - margin after its last renewal): the callback runs
    # on a thread that a loaded machine may wake late, so the bound has slack; the safety
    # (the fence refusing) does not depend on when the callback runs
    wait_until(a.deposed, timeout=TTL + 10, what="a to step down")
    assert a.at("deposed") - revoked < TTL + 2
    with pytest.raises(FenceLost):
        EtcdBackend(etcd.endpoints, cluster=name, fence=lambda: [old]).commit(1, row("old"), {})
    holder = leader_key(client, name)[0]
    wait_until(
        lambda: a.election.leader_url() == holder == b.election.leader_url(),
        what="both to see the new leader",
    )


@pytest.fixture
def three(tmp_path: Path) -> Iterator[EtcdCluster]:
    need_etcd()
    members = EtcdCluster.start(3, tmp_path / "etcd")
    yield members
    members.close()


def test_a_leader_cut_off_from_etcd_steps_down_before_another_is_elected(
    three: EtcdCluster, candidates: Callable[..., Candidate]
) -> None:
    """A talks to member 0 only, B to members 1 and 2.  Member 0 dies: the other two keep
    quorum and expire A's lease; B wins.  A must have stepped down (its fence refusing)
    within its TTL of the cut and before B was elected, and whatever path A's commit
    takes to etcd afterwards, its old guard is refused and nothing is written."""
    cluster = "cut"
    only_0, others = three.endpoints[:1], three.endpoints[1:]
    a = candidates(only_0, "http://a:7634", cluster)
    wait_until(a.elected, what="a to be elected")
    b = candidates(others, "http://b:7634", cluster)
    wait_until(lambda: b.election.leader_url() == "http://a:7634", what="b to see a")
    old = a.guards[0]
    EtcdBackend(only_0, cluster=cluster, fence=a.election.fence).commit(1, row("a"), {})

    cut = time.monotonic()
    three.stop(0)
    wait_until(b.elected, timeout=TTL + 30, what="b to be elected")
    wait_until(a.deposed, timeout=5, what="a to step down")
    deposed, elected = a.at("deposed"), b.at("elected")
    assert deposed - cut < TTL, f"a stepped down {deposed - cut:.1f}s after it was cut off"
    assert deposed < elected, "a still led when b was elected: two leaders at once"
    assert not a.election.is_leader
    with pytest.raises(FenceLost):
        a.election.guard()

    # A still believes its old guard (a GC pause, say) and reaches etcd another way
    stale = EtcdBackend(others, cluster=cluster, fence=lambda: [old])
    with pytest.raises(FenceLost, match="not the leader"):
        stale.commit(2, row("a-stale"), {})
    b_store = EtcdBackend(others, cluster=cluster, fence=b.election.fence)
    b_store.commit(2, row("b"), {})
    # member 0 comes back (the partition heals): A's commits through it are refused too
    three.restart(0)
    three.wait_ready(members=[0])
    healed = EtcdBackend(only_0, cluster=cluster, fence=lambda: [old], commit_timeout=15.0)
    with pytest.raises(FenceLost):
        healed.commit(3, row("a-stale"), {})
    index, rows = EtcdBackend(others, cluster=cluster).load()
    assert index == 2 and list(rows) == [("jobs", "web", b'{"by":"b"}')]
    # A, healed, follows B and does not take over
    wait_until(lambda: a.election.leader_url() == "http://b:7634", what="a to see b")
    assert b.election.is_leader and not a.election.is_leader


class Unreachable(EtcdClient):
    """A client whose lease renewals fail on demand, as if etcd were cut off."""

    cut = False

    def lease_keepalive(self, lease: int, *, timeout: float | None = None) -> int:
        if self.cut:
            raise EtcdUnavailable("cut off (test)")
        return super().lease_keepalive(lease, timeout=timeout)


def test_the_fence_refuses_at_the_deadline_before_on_deposed(etcd: EtcdCluster, name: str) -> None:
    """The local half of the step-down, with an injected clock: once no renewal proves the
    lease alive past the deadline, the fence refuses at once, before the supervisor has
    woken to call on_deposed; then it does call it."""
    now = [time.monotonic()]
    elected, deposed = threading.Event(), threading.Event()
    client = Unreachable(etcd.endpoints)
    election = LeaderElection(
        etcd.endpoints,
        url="http://a:7634",
        cluster=name,
        ttl=TTL,
        margin=1.0,
        client=client,
        clock=lambda: now[0],
        on_elected=lambda guard: elected.set(),
        on_deposed=deposed.set,
    )
    election.start()
    try:
        assert elected.wait(30)
        assert election.is_leader and election.fence()
        client.cut = True
        now[0] += TTL - 1.0  # the deadline: TTL - margin after the last proof
        assert not election.is_leader
        with pytest.raises(FenceLost, match="not the leader"):
            election.fence()
        # its own key is still in etcd, but past the deadline it names no leader it knows
        assert election.leader_url() == ""
        assert deposed.wait(TTL + 10)  # and the supervisor, woken, steps down
    finally:
        election.stop()
        client.close()
