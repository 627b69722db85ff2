"""The store on a three-member etcd cluster when members die: one down, commits and
followers go on; two down, a commit is refused with a clear error within its timeout,
and changes nothing a reader can see."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.state.errors import StoreError
from podium.state.etcd import Commit, EtcdBackend, IndexConflict
from podium.state.etcd_member import EtcdCluster, etcd_binary


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian's etcd-server package: /usr/bin/etcd)")
    members = EtcdCluster.start(3, tmp_path / "etcd")
    yield members
    members.close()


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def row(index: int) -> dict[str, list[tuple[str, bytes]]]:
    return {"jobs": [(f"j{index}", f'{{"at":{index}}}'.encode())]}


def test_one_member_down_commits_go_on_two_down_refused(cluster: EtcdCluster) -> None:
    # the client asks member 0 first: it is the one killed, so every call fails over
    backend = EtcdBackend(cluster.endpoints, cluster="ha", commit_timeout=15.0)
    follower = EtcdBackend(cluster.endpoints, cluster="ha")
    tail = follower.tail(0)
    seen: list[Commit] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            seen.extend(tail)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    for i in range(1, 11):
        backend.commit(i, row(i), {})
    wait_until(lambda: len(seen) == 10 or errors, what="the follower to see 10 commits")

    cluster.stop(0)  # one of three down (perhaps etcd's leader: a new one is elected)
    for i in range(11, 21):
        backend.commit(i, row(i), {})
    assert backend.load()[0] == 20
    # the follower's watch was on member 0: it moved to another member and goes on
    wait_until(lambda: len(seen) == 20 or errors, what="the follower to see 20 commits")
    assert not errors
    assert [c.index for c in seen] == list(range(1, 21))

    cluster.stop(1)  # two of three down: no quorum
    refusing = EtcdBackend(cluster.endpoints, cluster="ha", commit_timeout=3.0)
    started = time.monotonic()
    with pytest.raises(StoreError, match="quorum") as refused:
        refusing.commit(21, row(21), {})
    took = time.monotonic() - started
    # bounded by the commit timeout, not hung (slack for a busy machine: not a speed test)
    assert took < 3.0 + 10.0, f"the refusal took {took:.1f}s"
    assert "commit 21 refused" in str(refused.value)

    # the members come back: the refused commit is not there, or (etcd may apply a
    # proposal it had accepted before it lost its quorum) whole, never in part
    cluster.restart(0)
    cluster.restart(1)
    cluster.wait_ready(60)
    index, rows = EtcdBackend(cluster.endpoints, cluster="ha").load()
    assert index in (20, 21)
    assert {(t, k) for t, k, _ in rows} == {("jobs", f"j{i}") for i in range(1, index + 1)}
    if index == 20:
        refusing.commit(21, row(21), {})  # the same index again: it lands once
    else:
        with pytest.raises(IndexConflict, match="landed after all"):
            refusing.commit(21, row(21), {})
    assert backend.load()[0] == 21
    # the follower waited out the lost quorum without an error and caught up
    wait_until(lambda: len(seen) == 21 or errors, what="the follower to see commit 21")
    assert not errors
    assert [c.index for c in seen] == list(range(1, 22))
    tail.close()
    thread.join(10)
    assert not thread.is_alive()
