"""A store that fails safe, on real processes and real files: a damaged or lost store
stops the server with one line naming the file and the recovery; `podium operator
snapshot save/restore` recovers a wiped store; a real full disk (a small tmpfs) answers
507 while the worker survives, and heals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.client import AsyncClient
from podium.errors import PodiumError
from podium.state.snapshot import verify
from tests.e2e.conftest import PODIUM, free_port, kill_recorded_tasks, stop_process, wait_until

pytestmark = pytest.mark.e2e


class ServerProc:
    """`podium server` (and, for placements, `podium agent`) in subprocesses."""

    def __init__(self, tmp: Path, data_dir: Path) -> None:
        self.tmp = tmp
        self.data_dir = data_dir
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agent_dirs: list[Path] = []
        self.env: dict[str, str] = dict(os.environ)

    def args(self) -> list[str]:
        return ["server", "--data-dir", str(self.data_dir), "--http-addr", f"127.0.0.1:{self.port}"]

    def run_once(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Start the server expecting it to refuse: its exit status and output."""
        return subprocess.run(
            [*PODIUM, *self.args()], capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [*PODIUM, *self.args()],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        log.close()
        self.procs.append(proc)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}: {self.log()}")
            return httpx.get(f"{self.addr}/v1/status", timeout=1).status_code == 200

        wait_until(up, timeout=30, what="the server")

    def start_agent(self, data_dir: Path) -> None:
        self.agent_dirs.append(data_dir)
        log = open(self.tmp / "agent.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs.append(
            subprocess.Popen(
                [
                    *PODIUM,
                    *("agent", "--servers", self.addr, "--data-dir", str(data_dir)),
                    *(
                        "--name",
                        "worker-1",
                        "--raw-exec",
                        "--http-addr",
                        f"127.0.0.1:{free_port()}",
                    ),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        log.close()
        wait_until(
            lambda: [n for n in self.get("/v1/nodes") if n["status"] == "ready"],
            timeout=30,
            what="the agent's node",
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()

    def kill_tasks(self) -> None:
        """An agent with a data dir leaves its tasks running for the next one: none comes."""
        for data_dir in self.agent_dirs:
            kill_recorded_tasks(data_dir)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.tmp / "server.log").read_text(errors="replace")[-3000:]
        return ""

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.addr}{path}", timeout=10)
        r.raise_for_status()
        return r.json()

    def register(self, job: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.addr}/v1/jobs", json={"job": job}, timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PODIUM_ADDR": self.addr, "NO_COLOR": "1", "COLUMNS": "200"}
        return subprocess.run([*PODIUM, *args], capture_output=True, text=True, env=env, timeout=60)


def sleep_job(job_id: str, count: int = 1) -> dict[str, Any]:
    return {
        "job": job_id,
        "groups": {
            "g": {
                "count": count,
                "tasks": {
                    "t": {
                        "driver": "raw_exec",
                        "config": {"command": "/bin/sleep", "args": ["300"]},
                        "resources": {"cpu": 20, "memory": 16},
                    }
                },
            }
        },
    }


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProc]]:
    made: list[ServerProc] = []
    yield made
    for s in made:
        for job in _safe(lambda s=s: s.get("/v1/jobs")) or []:
            _safe(lambda s=s, j=job: httpx.delete(f"{s.addr}/v1/job/{j['id']}?purge=true"))
        s.stop()
        s.kill_tasks()


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except (httpx.HTTPError, AssertionError):
        return None


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def _fresh_store(tmp_path: Path, servers: list[ServerProc]) -> ServerProc:
    """A data dir whose server ran once (and so wrote a store and its cluster id)."""
    s = ServerProc(tmp_path, tmp_path / "data")
    servers.append(s)
    s.start()
    assert s.register(sleep_job("web")).status_code == 200
    s.stop()
    return s


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_or_empty_store_stops_the_server_with_one_line(
    tmp_path: Path, servers: list[ServerProc], damage: str
) -> None:
    s = _fresh_store(tmp_path, servers)
    db = s.data_dir / "server" / "state.db"
    for extra in ("state.db-wal", "state.db-shm"):
        with contextlib.suppress(FileNotFoundError):
            (db.parent / extra).unlink()
    data = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        db.write_bytes(data[: len(data) // 2 + 100])
    else:
        db.write_bytes(b"")
    result = s.run_once()
    assert result.returncode != 0
    line = _one_line(result)
    assert str(db) in line
    assert "podium operator snapshot restore" in line and "podium operator store reset" in line
    assert db.read_bytes() == (b"" if damage == "empty" else db.read_bytes())  # untouched

    # the named way out works: a new, empty cluster, on purpose
    reset = s.cli("operator", "store", "reset", "--data-dir", str(s.data_dir))
    assert reset.returncode == 0, reset.stderr
    s.start()
    assert s.get("/v1/jobs") == []


def test_snapshot_save_then_restore_brings_back_jobs_allocations_and_index(
    tmp_path: Path, servers: list[ServerProc]
) -> None:
    s = ServerProc(tmp_path, tmp_path / "data")
    servers.append(s)
    s.start()
    s.start_agent(tmp_path / "agent")
    for name, count in (("web", 2), ("api", 1)):
        assert s.register(sleep_job(name, count)).status_code == 200
    wait_until(
        lambda: len([a for a in s.get("/v1/allocations") if a["client_status"] == "running"]) == 3,
        timeout=30,
        what="3 running allocations",
    )
    snap = tmp_path / "backup.db"
    saved = s.cli("operator", "snapshot", "save", str(snap))
    assert saved.returncode == 0, saved.stderr
    before_jobs = sorted(j["id"] for j in s.get("/v1/jobs"))
    before_allocs = sorted(a["id"] for a in s.get("/v1/allocations"))
    index = int(saved.stdout.split("index ")[1].split()[0])
    s.stop()

    # the store is lost: the server refuses to start as an empty cluster
    server_dir = s.data_dir / "server"
    for f in server_dir.glob("state.db*"):
        f.unlink()
    refused = s.run_once()
    assert refused.returncode != 0 and "missing" in _one_line(refused)

    # a damaged snapshot is refused and changes nothing
    bad = tmp_path / "bad.db"
    data = snap.read_bytes()
    bad.write_bytes(data[:4096] + os.urandom(len(data) - 4096))
    listing = sorted(p.name for p in server_dir.iterdir())
    out = s.cli("operator", "snapshot", "restore", str(bad), "--data-dir", str(s.data_dir))
    assert out.returncode != 0 and "not a valid Podium snapshot" in out.stderr, out.stderr
    assert sorted(p.name for p in server_dir.iterdir()) == listing

    out = s.cli("operator", "snapshot", "restore", str(snap), "--data-dir", str(s.data_dir))
    assert out.returncode == 0, out.stderr
    s.start()
    assert sorted(j["id"] for j in s.get("/v1/jobs")) == before_jobs
    assert sorted(a["id"] for a in s.get("/v1/allocations")) == before_allocs
    status = s.get("/v1/status")
    assert status["index"] >= index


def test_a_restore_is_refused_while_the_server_runs(
    tmp_path: Path, servers: list[ServerProc]
) -> None:
    s = ServerProc(tmp_path, tmp_path / "data")
    servers.append(s)
    s.start()
    snap = tmp_path / "snap.db"
    assert s.cli("operator", "snapshot", "save", str(snap)).returncode == 0
    out = s.cli("operator", "snapshot", "restore", str(snap), "--data-dir", str(s.data_dir))
    assert out.returncode != 0 and "state.lock is held" in out.stderr, out.stderr
    assert httpx.get(f"{s.addr}/v1/status").status_code == 200


# ------------------------------------------------------------------ a real full disk
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):  # until ENOSPC
            while True:
                os.write(fd, b"\0" * 65536)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_answers_507_the_worker_survives_and_it_heals(
    tmp_path: Path, small_disk: Path, servers: list[ServerProc]
) -> None:
    s = ServerProc(tmp_path, small_disk / "data")
    servers.append(s)
    s.start()
    s.start_agent(tmp_path / "agent")
    # a job whose task fails at once: its replacement is a follow-up evaluation that runs
    # after the reschedule delay, while the disk is full
    flaky = sleep_job("flaky")
    group = flaky["groups"]["g"]
    group["tasks"]["t"]["config"] = {"command": "/bin/false"}
    group["restart"] = {"attempts": 0, "mode": "fail"}
    group["reschedule"] = {"attempts": 5, "interval": "1h", "delay": "4s", "unlimited": False}
    assert s.register(flaky).status_code == 200, s.log()

    def followup() -> str | None:
        for ev in s.get("/v1/evaluations"):
            if ev["job_id"] == "flaky" and ev["status"] == "pending" and ev.get("wait_until"):
                return str(ev["id"])
        return None

    ev_id = wait_until(followup, timeout=30, what="flaky's delayed follow-up evaluation")
    allocs_before = len(s.get("/v1/job/flaky/allocations"))
    filler = _fill(small_disk)

    # A write may still fit in WAL pages the file already holds (SQLite reuses them after a
    # checkpoint): those land and answer 200. Writes go on until one needs a block the disk
    # has not got; none may answer anything but 200 or 507.
    tries = iter(range(1_000_000))

    def refused() -> dict[str, Any] | None:
        answer = s.register(sleep_job(f"fill{next(tries)}"))
        assert answer.status_code in (200, 507), answer.text
        return answer.json() if answer.status_code == 507 else None

    body = wait_until(refused, timeout=60, interval=0.05, what="a write to meet the full disk")
    assert "database or disk is full" in body["error"]
    wait_until(
        lambda: "store error" in s.log() and ev_id[:8] in s.log(),
        timeout=30,
        what="the follow-up evaluation to fail on the store",
    )
    assert httpx.get(f"{s.addr}/v1/status").status_code == 200  # the server serves

    filler.unlink()  # room again
    assert s.register(sleep_job("web")).status_code == 200
    wait_until(
        lambda: [a for a in s.get("/v1/job/web/allocations") if a["client_status"] == "running"],
        timeout=30,
        what="the new job to be placed",
    )
    wait_until(
        lambda: (
            next(e for e in s.get("/v1/evaluations") if e["id"] == ev_id)["status"] == "complete"
        ),
        timeout=60,
        what="the failed evaluation's retry",
    )
    assert len(s.get("/v1/job/flaky/allocations")) > allocs_before


def test_sqlite_is_what_the_snapshot_holds(tmp_path: Path, servers: list[ServerProc]) -> None:
    """The snapshot format is a plain, self-contained SQLite file (no WAL beside it)."""
    s = ServerProc(tmp_path, tmp_path / "data")
    servers.append(s)
    s.start()
    assert s.register(sleep_job("web")).status_code == 200
    snap = tmp_path / "s.db"
    assert s.cli("operator", "snapshot", "save", str(snap)).returncode == 0
    db = sqlite3.connect(f"file:{snap}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT tbl FROM objects")}
        assert {"jobs", "evals", "job_versions"} <= tables
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        db.close()


def test_the_async_client_saves_a_snapshot_whole(tmp_path: Path, servers: list[ServerProc]) -> None:
    """AsyncClient.save_snapshot writes the file whole, with the index it was taken at, and
    leaves nothing behind when there is no answer."""
    s = ServerProc(tmp_path, tmp_path / "data")
    servers.append(s)
    s.start()
    assert s.register(sleep_job("web")).status_code == 200
    snap = tmp_path / "a.db"

    async def save() -> int:
        async with AsyncClient(s.addr) as client:
            return await client.save_snapshot(snap)

    index = asyncio.run(save())
    assert index > 0 and verify(str(snap)).index == index

    async def refused() -> None:  # nothing listens there
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as c:
            await c.save_snapshot(tmp_path / "b.db")

    with pytest.raises(PodiumError):
        asyncio.run(refused())
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["a.db"]
    assert not list(tmp_path.glob(".*partial"))


# ------------------------------------------------------------------ a poison evaluation
CHOKE = """
import podium.server.core as core

_real = core.schedule


def _choking(snap, ev, now, **kw):
    if ev.job_id == "poison":
        raise KeyError("the scheduler chokes on job poison")
    return _real(snap, ev, now, **kw)


core.schedule = _choking
"""
"""Loaded by the server process (sitecustomize): the scheduler raises for job ``poison``."""


def _eval(s: ServerProc, job: str) -> dict[str, Any] | None:
    found = [e for e in s.get("/v1/evaluations") if e["job_id"] == job]
    return found[0] if found else None


def test_a_poison_evaluation_is_parked_and_a_restart_with_it_pending_serves(
    tmp_path: Path, servers: list[ServerProc]
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CHOKE)
    s = ServerProc(tmp_path, tmp_path / "data")
    s.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    servers.append(s)
    s.start()
    assert s.register(sleep_job("poison")).status_code == 200
    wait_until(
        lambda: "try 1 of 5 failed" in ((_eval(s, "poison") or {}).get("status_description", "")),
        timeout=30,
        what="the first failed try to be recorded",
    )
    s.stop()  # with the poison evaluation pending

    s.start()  # starts and answers at once
    assert s.register(sleep_job("other")).status_code == 200
    other = wait_until(
        lambda: (e := _eval(s, "other")) and e["status"] != "pending" and e,
        timeout=30,
        what="the other job's evaluation to be processed",
    )
    assert other["status"] in ("complete", "blocked"), other
    parked = wait_until(
        lambda: (e := _eval(s, "poison")) and e["status"] == "failed" and e,
        timeout=60,
        what="the poison evaluation to be parked",
    )
    assert "failed 5 times" in parked["status_description"]
    assert "the scheduler chokes on job poison" in parked["status_description"]
    assert httpx.get(f"{s.addr}/v1/status").status_code == 200
