"""Exec uids leased per allocation, kept in the agent's ``agent.db`` (a real SQLite file):
a restarted agent keeps every allocation's uid and never hands one out twice; a lease is
released when the allocation is collected (its files gone), not when it merely stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.agent.agent import Agent
from podium.agent.config import AgentSettings
from podium.agent.localstate import LocalState
from podium.agent.runner import AllocRunner
from podium.drivers.exec import ExecDriver
from podium.drivers.mock import MockDriver
from podium.drivers.uids import UidPool
from podium.models import DesiredStatus, JobSpec

from .conftest import make_alloc, until

SPEC = JobSpec.model_validate(
    {
        "job": "web",
        "groups": {"g": {"tasks": {"t": {"driver": "mock", "config": {"run_for": 3600}}}}},
    }
)
RANGE = (300000, 300009)


def stored_pool(state: LocalState) -> UidPool:
    return UidPool(*RANGE, leases=state.uid_leases(), on_change=state.set_uid_lease)


def test_leases_survive_reopening_the_store(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    state = LocalState(db)
    pool = stored_pool(state)
    a, b = pool.lease("a"), pool.lease("b")
    assert a != b and pool.lease("a") == a
    state.close()

    state = LocalState(db)  # a new agent process on the same file
    pool = stored_pool(state)
    assert pool.leases == {"a": a, "b": b}
    assert pool.lease("a") == a and pool.lease("b") == b
    c = pool.lease("c")
    assert c not in (a, b)
    state.close()


def test_a_release_is_stored_and_frees_the_uid(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    state = LocalState(db)
    pool = UidPool(RANGE[0], RANGE[0] + 1, on_change=state.set_uid_lease)
    a, b = pool.lease("a"), pool.lease("b")
    pool.release("a")
    pool.release("never-leased")  # nothing to do
    state.close()

    state = LocalState(db)
    assert state.uid_leases() == {"b": b}
    pool = UidPool(RANGE[0], RANGE[0] + 1, leases=state.uid_leases())
    assert pool.lease("c") == a  # the range has two: a's, free again, and b's
    state.close()


def test_retain_releases_every_other_lease(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "agent.db")
    pool = stored_pool(state)
    for alloc in ("a", "b", "c"):
        pool.lease(alloc)
    assert sorted(pool.retain({"b", "zzz"})) == ["a", "c"]
    assert set(state.uid_leases()) == {"b"}
    state.close()


def test_a_lease_the_store_refuses_is_not_given(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "agent.db")
    pool = stored_pool(state)
    state.close()  # every write fails now
    with pytest.raises(Exception):  # noqa: B017  # sqlite3.ProgrammingError
        pool.lease("a")
    assert pool.leases == {}


def make_agent(data_dir: Path) -> Agent:
    agent = Agent(
        AgentSettings(
            data_dir=str(data_dir), servers=[], workload_identity=False, exec_uid_range=RANGE
        ),
        client=None,  # type: ignore[arg-type]  # never started: no server needed
    )
    agent.drivers["mock"] = MockDriver()
    return agent


def test_the_agent_loads_its_leases_before_anything_runs(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    assert agent.uid_pool is not None
    exec_driver = agent.drivers["exec"]
    assert isinstance(exec_driver, ExecDriver) and exec_driver.options.uids is agent.uid_pool
    assert (agent.uid_pool.first, agent.uid_pool.last) == RANGE
    uid = agent.uid_pool.lease("running")
    agent.state.close()

    again = make_agent(tmp_path)  # restarted on the same data dir
    assert again.uid_pool is not None and again.uid_pool.leases == {"running": uid}
    pool = again.drivers["exec"].options.uids  # type: ignore[attr-defined]
    assert pool.lease("running") == uid and pool.lease("new") != uid
    again.state.close()


async def test_a_collected_allocation_releases_its_uid_after_its_files_are_gone(
    tmp_path: Path,
) -> None:
    agent = make_agent(tmp_path)
    pool = agent.uid_pool
    assert pool is not None
    runners = {}
    for alloc_id in ("kept", "stopped", "collected"):
        runner = AllocRunner(agent, make_alloc(alloc_id), SPEC)
        agent.runners[alloc_id] = runner
        runner.start()
        pool.lease(alloc_id)
        runners[alloc_id] = runner
    await until(
        lambda: all(r.machine.tasks["t"].phase.value == "running" for r in runners.values()),
        "tasks running",
    )
    collected_dir = runners["collected"].alloc_dir
    assert collected_dir.is_dir()
    seen_at_release: dict[str, bool] = {}
    store = agent.state.set_uid_lease

    def record(alloc_id: str, uid: int | None) -> None:
        if uid is None:
            seen_at_release[alloc_id] = runners[alloc_id].alloc_dir.exists()
        store(alloc_id, uid)

    pool._on_change = record
    leases = pool.leases

    # "stopped": the server stops it but still lists it; "collected": no longer listed.
    stopped = make_alloc("stopped", desired_status=DesiredStatus.STOP, modify_index=5)
    agent.apply_sync([make_alloc("kept"), stopped], {}, live=None)
    await until(lambda: "collected" not in pool.leases, "the collected allocation's release")
    await until(lambda: runners["stopped"].machine.terminal(), "the stopped allocation to stop")
    assert seen_at_release == {"collected": False}  # released once its dir was removed
    assert not collected_dir.exists()
    assert pool.leases == {"kept": leases["kept"], "stopped": leases["stopped"]}
    assert agent.state.uid_leases() == pool.leases
    for runner in agent.runners.values():
        runner.close()
    agent.state.close()


async def test_after_the_first_sync_leases_of_unknown_allocations_are_released(
    tmp_path: Path,
) -> None:
    """An agent that died between forgetting an allocation and releasing its uid (or was
    down while the server collected it) releases the uid once the server says it is gone."""
    agent = make_agent(tmp_path)
    pool = agent.uid_pool
    assert pool is not None
    for alloc_id in ("listed", "held", "gone"):
        pool.lease(alloc_id)
    agent.runners["held"] = AllocRunner(agent, make_alloc("held"), SPEC)
    agent._release_leases({"listed"} | set(agent.runners) | agent._forgetting)
    assert set(pool.leases) == {"listed", "held"}
    assert set(agent.state.uid_leases()) == {"listed", "held"}
    agent.runners["held"].close()
    agent.state.close()
