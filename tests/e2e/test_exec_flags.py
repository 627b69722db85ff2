"""End to end: a real ``podium agent`` with the ``--exec-*`` flags.

``--exec-user-denylist nobody``: an exec job that asks for ``user: nobody`` is not placed,
and its status says why.  ``--exec-uid-range``: allocations run as uids of that range, one
each; an agent stopped and started again on the same data dir keeps a running
allocation's uid (the leases are in ``agent.db``), releases the lease of an allocation
nobody has, and gives a new allocation another uid; a collected allocation's uid is
released and goes to the next allocation (with a range of two uids, nothing else could run).
"""

from __future__ import annotations

import os
import pwd
import sqlite3
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import DevAgent, free_port, recorded_pids, wait_until, write_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the exec driver needs root")

FIRST, LAST = 71000, 71001
"""Two uids: a third allocation can only run once one of the first two released its own."""

NOBODY = """
job: asnobody
type: batch
groups:
  g:
    tasks:
      t:
        driver: exec
        user: nobody
        config: {command: /bin/sh, args: ["-c", "id -u"]}
"""


def sleeper(name: str) -> str:
    return f"""
job: {name}
groups:
  g:
    tasks:
      t:
        driver: exec
        config:
          command: /bin/sh
          args: ["-c", "echo uid=$(id -u); exec sleep 3600"]
"""


def leases(agent: DevAgent) -> dict[str, int]:
    """The agent's stored leases, read from its real ``agent.db`` (WAL: readable live)."""
    db = sqlite3.connect(f"file:{agent.data_dir / 'agent' / 'agent.db'}?mode=ro", uri=True)
    try:
        return {str(a): int(u) for a, u in db.execute("SELECT alloc_id, uid FROM uid_leases")}
    finally:
        db.close()


def run_sleeper(agent: DevAgent, tmp_path: Path, name: str) -> tuple[str, int]:
    """Run job ``name``; its allocation's id and the uid its task printed."""
    agent.cli("job", "run", write_job(tmp_path, sleeper(name), f"{name}.yaml"), check=True)
    (alloc,) = agent.wait_running(name, 1, timeout=60)
    out = wait_until(
        lambda: "uid=" in (o := agent.cli("alloc", "logs", alloc["id"]).stdout) and o,
        what=f"{name}'s uid in its log",
    )
    return str(alloc["id"]), int(out.split("uid=")[1].split()[0])


@pytest.fixture
def agent(tmp_path: Path) -> DevAgent:
    made = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "agent.log",
        extra_args=["--exec-user-denylist", "nobody", "--exec-uid-range", f"{FIRST}-{LAST}"],
    )
    try:
        made.start()
        info = made.get("/v1/nodes")[0]["drivers"].get("exec", {})
        if not info.get("healthy"):
            pytest.fail(f"exec driver unhealthy on a root machine: {info.get('description')}")
        yield made  # type: ignore[misc]
    finally:
        made.cleanup()


def test_a_denylisted_user_is_not_placed_and_the_status_says_why(
    agent: DevAgent, tmp_path: Path
) -> None:
    node = agent.get("/v1/nodes")[0]
    exec_attrs = node["drivers"]["exec"]["attributes"]
    nobody_uid = str(pwd.getpwnam("nobody").pw_uid)
    assert set(exec_attrs["user_denylist"].split(",")) == {"0", "root", "nobody", nobody_uid}
    assert exec_attrs["uid_range"] == f"{FIRST}-{LAST}"
    reason = "exec: user nobody is refused"
    run = agent.cli("job", "run", write_job(tmp_path, NOBODY, "nobody.yaml"), timeout=60)
    assert run.returncode != 0, run.stdout
    assert reason in run.stdout + run.stderr
    status = agent.cli("job", "status", "asnobody", check=True).stdout
    assert reason in status
    assert not agent.allocs("asnobody")


def test_uids_survive_an_agent_restart_and_are_released_when_collected(
    agent: DevAgent, tmp_path: Path
) -> None:
    one, uid_one = run_sleeper(agent, tmp_path, "one")
    assert FIRST <= uid_one <= LAST
    assert leases(agent) == {one: uid_one}
    (pid,) = wait_until(lambda: list(recorded_pids(agent.data_dir)), what="the task's pid")

    agent.terminate()  # stopped (SIGTERM); its tasks keep running
    assert os.path.exists(f"/proc/{pid}")
    # a lease an earlier agent never released (it died first), of an allocation nobody has
    ghost = FIRST if uid_one == LAST else LAST
    db = sqlite3.connect(agent.data_dir / "agent" / "agent.db")
    with db:
        db.execute("INSERT INTO uid_leases(alloc_id, uid) VALUES ('ghost', ?)", (ghost,))
    db.close()
    agent.start()  # the same data dir and flags
    (again,) = agent.wait_running("one", 1, timeout=60)
    assert again["id"] == one and again["task_states"]["t"]["pid"] == pid  # re-attached
    wait_until(lambda: "ghost" not in leases(agent), what="the unknown allocation's release")
    assert leases(agent) == {one: uid_one}

    two, uid_two = run_sleeper(agent, tmp_path, "two")
    assert uid_two == ghost  # not one's: the only other uid of the range
    assert leases(agent) == {one: uid_one, two: uid_two}
    # one's task (under unshare and the namespace's init) still runs as its uid
    sleeps = [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "sleep"]
    assert [p.uids().real for p in sleeps] == [uid_one]

    # one is purged and collected (the server's GC runs every 30 s): its uid is released
    agent.cli("job", "stop", "--purge", "one", check=True)
    wait_until(
        lambda: one not in leases(agent), timeout=120, what="the collected allocation's release"
    )
    assert not (agent.data_dir / "agent" / "allocs" / one).exists()
    three, uid_three = run_sleeper(agent, tmp_path, "three")  # the range's only free uid
    assert uid_three == uid_one
    assert leases(agent) == {two: uid_two, three: uid_three}
