"""A real cluster on one machine: `podium server` in the root namespace, and one
`podium agent` per "host", each host a network namespace on a private bridge
(see netns.py).  Needs root and `ip netns`; skipped otherwise.

Fixtures:

- ``make_cluster(hosts=3, heartbeat_ttl=2, heartbeat_grace=2)`` → a started :class:`Cluster`
  (``Cluster.add_host()`` adds one more host and its agent later);
- ``cluster``: ``make_cluster()`` with the defaults.

Cleanup always runs, even when a test fails: jobs purged (briefly), agents killed, every task
recorded under the agents' data dirs killed, every process left in the namespaces killed, then
the namespaces, veths and bridge removed, then the server stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.cluster import netns
from tests.e2e.conftest import (
    PODIUM,
    DevAgent,
    free_port,
    kill_recorded_tasks,
    recorded_pids,
    wait_until,
)


class Cluster:
    def __init__(
        self, tmp: Path, net: netns.Network, heartbeat_ttl: float, heartbeat_grace: float
    ) -> None:
        self.tmp = tmp
        self.net = net
        self.heartbeat_ttl = heartbeat_ttl
        self.heartbeat_grace = heartbeat_grace
        self.port = free_port()
        self.addr = f"http://{net.gateway}:{self.port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        # the e2e helpers (get, cli, allocs, running, wait_running) against this server
        self.view = DevAgent(addr=self.addr, data_dir=tmp, log_path=tmp / "server.log")

    @property
    def hosts(self) -> dict[str, netns.Host]:
        return self.net.hosts

    # ------------------------------------------------------------------ processes
    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            return subprocess.Popen(
                args,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start_server(self) -> None:
        self.server = self._spawn(
            [
                *PODIUM,
                "server",
                "--data-dir",
                str(self.tmp / "server"),
                "--http-addr",
                f"{self.net.gateway}:{self.port}",
                "--heartbeat-ttl",
                f"{self.heartbeat_ttl:g}",
                "--heartbeat-grace",
                f"{self.heartbeat_grace:g}",
            ],
            self.tmp / "server.log",
        )
        server = self.server

        def up() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log('server')}")
            return httpx.get(f"{self.addr}/v1/status", timeout=1).status_code == 200

        wait_until(up, timeout=30, what="the server")

    def kill_server(self) -> None:
        assert self.server is not None
        os.kill(self.server.pid, signal.SIGKILL)
        self.server.wait(10)

    def agent_dir(self, name: str) -> Path:
        return self.tmp / name

    def start_agent(self, name: str, *extra: str) -> None:
        """Start host's agent inside its namespace; returns once it has (re-)registered."""
        self.wait_registered(self.spawn_agent(name, *extra))

    def start_agents(self, names: list[str]) -> None:
        """Start several hosts' agents at once; returns once every one has registered."""
        waits = [self.spawn_agent(name) for name in names]
        for registered in waits:
            self.wait_registered(registered)

    @staticmethod
    def wait_registered(registered: tuple[str, Callable[[], bool]]) -> None:
        name, check = registered
        wait_until(check, timeout=30, what=f"agent {name} to register")

    def spawn_agent(self, name: str, *extra: str) -> tuple[str, Callable[[], bool]]:
        """Start host's agent inside its namespace; answers what says it has registered."""
        host = self.hosts[name]
        log = self.tmp / f"{name}.log"
        before = self.log_count(name, "registered node")
        rack = f"r{name.removeprefix('host')}"
        proc = self._spawn(
            [
                *host.exec_prefix(),
                *PODIUM,
                "agent",
                "--servers",
                self.addr,
                "--data-dir",
                str(self.agent_dir(name)),
                "--name",
                name,
                "--raw-exec",
                "--datacenter",
                "dc1",
                "--meta",
                f"rack={rack}",
                *extra,
            ],
            log,
        )
        self.agents[name] = proc

        def registered() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"agent {name} exited:\n{self.log(name)}")
            return self.log_count(name, "registered node") > before

        return name, registered

    def add_host(self, *extra: str) -> str:
        """One more host (namespace ``host<N+1>``, rack ``r<N+1>``) and its agent, after the
        cluster has started; returns its name once the agent has registered."""
        host = self.net.add_host(len(self.hosts) + 1)
        self.start_agent(host.name, *extra)
        return host.name

    def kill_agent(self, name: str) -> None:
        proc = self.agents[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def log_count(self, name: str, text: str) -> int:
        """How often ``text`` appears in the whole log of ``name`` (server or host)."""
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace").count(text)
        except OSError:
            return 0

    def log(self, name: str) -> str:
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ network
    def cut(self, name: str) -> None:
        self.net.cut(self.hosts[name])

    def heal(self, name: str) -> None:
        self.net.heal(self.hosts[name])

    # ------------------------------------------------------------------ views
    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.view.get("/v1/nodes")}

    def wait_nodes(self, status: str, names: list[str], timeout: float = 30) -> None:
        wait_until(
            lambda: all((n := self.nodes().get(x)) and n["status"] == status for x in names),
            timeout=timeout,
            what=f"nodes {names} {status}",
        )

    def evals(self, job: str, triggered_by: str, node_id: str | None = None) -> list[Any]:
        """The job's evaluations so triggered (for that node)."""
        return [
            e
            for e in self.view.get(f"/v1/job/{job}/evaluations")
            if e["triggered_by"] == triggered_by and node_id in (None, e["node_id"])
        ]

    def evals_done(self, job: str, triggered_by: str, node_id: str | None, more_than: int) -> bool:
        """More than ``more_than`` such evaluations exist, and every one is done."""
        evals = self.evals(job, triggered_by, node_id)
        return len(evals) > more_than and all(e["status"] == "complete" for e in evals)

    def node_name(self, node_id: str) -> str:
        return str({n["id"]: n["name"] for n in self.view.get("/v1/nodes")}[node_id])

    def task_pids(self, job: str, task: str = "t") -> dict[str, int]:
        """alloc id → task pid of the job's running allocations (as the API reports them)."""
        return {a["id"]: a["task_states"][task]["pid"] for a in self.view.running(job)}

    def live_task_pids(self, job: str, host: str | None = None) -> list[int]:
        """Live processes that run the job's tasks: pids recorded by the shims under the agents'
        data dirs (of one host, or all), alive and in that host's namespace."""
        found = []
        for name, h in self.hosts.items():
            if host is not None and name != host:
                continue
            for pid in recorded_pids(self.agent_dir(name)):
                if job_of(pid) == job and h.owns_pid(pid):
                    found.append(pid)
        return found

    # ------------------------------------------------------------------ cleanup
    def reset(self) -> None:
        """Back to a fresh cluster's state: every job purged and its tasks gone, every node
        ready and eligible, no drain."""
        for job in self.view.get("/v1/jobs"):
            r = httpx.delete(
                f"{self.addr}/v1/job/{job['id']}", params={"purge": "true"}, timeout=10
            )
            r.raise_for_status()
        wait_until(
            lambda: all(
                a["client_status"] not in ("running", "pending")
                for a in self.view.get("/v1/allocations")
            ),
            timeout=30,
            what="every allocation to stop",
        )
        for n in self.view.get("/v1/nodes"):
            if n["eligibility"] != "eligible":
                r = httpx.put(
                    f"{self.addr}/v1/node/{n['id']}/eligibility",
                    json={"eligible": True},
                    timeout=10,
                )
                r.raise_for_status()
        self.wait_nodes("ready", list(self.hosts))
        nodes = self.nodes().values()
        assert all(n["eligibility"] == "eligible" and not n["drain"] for n in nodes), nodes
        assert not self.view.get("/v1/jobs")
        wait_until(
            lambda: not self.live_task_pids_any(), timeout=30, what="every task process to exit"
        )

    def live_task_pids_any(self) -> list[int]:
        """Live task processes of any job, on any host."""
        found = []
        for name, h in self.hosts.items():
            for pid in recorded_pids(self.agent_dir(name)):
                if job_of(pid) is not None and h.owns_pid(pid):
                    found.append(pid)
        return found

    def cleanup(self) -> None:
        if self.server is not None and self.server.poll() is None:
            try:
                for job in self.view.get("/v1/jobs"):
                    httpx.delete(
                        f"{self.addr}/v1/job/{job['id']}", params={"purge": "true"}, timeout=5
                    )
                wait_until(
                    lambda: all(
                        a["client_status"] not in ("running", "pending")
                        for a in self.view.get("/v1/allocations")
                    ),
                    timeout=10,
                    what="every allocation to stop",
                )
            except (AssertionError, httpx.HTTPError):
                pass
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        kill_recorded_tasks(self.tmp)
        self.net.destroy()
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(5)


SLEEP_LOOP = {"command": "/bin/sh", "args": ["-c", "while true; do sleep 0.2; done"]}


def job_file(
    tmp: Path,
    name: str,
    *,
    count: int | None = 1,
    group: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
    groups: dict[str, dict[str, Any]] | None = None,
    **job: Any,
) -> str:
    """Write a job file of raw_exec sleep loops (task ``t``, 50 MHz / 32 MB) and return its path.

    ``job`` holds job-level fields (``type=``, ``constraints=``, ``datacenters=`` ...);
    ``group``/``task`` extra fields of the one group ``g`` and its task; ``groups`` several
    groups instead (name → extra group fields, each with the same task).  ``count=None`` leaves
    the count out (system jobs).
    """
    t: dict[str, Any] = {
        "driver": "raw_exec",
        "config": SLEEP_LOOP,
        "resources": {"cpu": 50, "memory": 32},
        **(task or {}),
    }

    def make_group(extra: dict[str, Any]) -> dict[str, Any]:
        g: dict[str, Any] = {} if count is None else {"count": count}
        return {**g, **extra, "tasks": {"t": t}}

    spec = {
        "job": name,
        **job,
        "groups": {n: make_group(e) for n, e in (groups or {"g": group or {}}).items()},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def job_of(pid: int) -> str | None:
    """The PODIUM_JOB_ID a task process runs with (None when gone or unreadable)."""
    try:
        return psutil.Process(pid).environ().get("PODIUM_JOB_ID")
    except (psutil.Error, OSError):
        return None


def start_cluster(
    tmp: Path,
    made: list[Cluster],
    hosts: int = 3,
    heartbeat_ttl: float = 2.0,
    heartbeat_grace: float = 2.0,
) -> Cluster:
    """A started cluster in ``tmp``, added to ``made`` (to be cleaned up, even half-made)."""
    net = netns.Network()
    try:
        net.create(hosts)  # picks the subnet the server's address is on
    except BaseException:
        net.destroy()
        raise
    c = Cluster(tmp, net, heartbeat_ttl, heartbeat_grace)
    c.tmp.mkdir(parents=True, exist_ok=True)
    made.append(c)
    c.start_server()
    c.start_agents(list(c.hosts))
    c.wait_nodes("ready", list(c.hosts))
    return c


def _skip_without_netns() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    netns.clean_stale()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    _skip_without_netns()
    made: list[Cluster] = []

    def make(hosts: int = 3, heartbeat_ttl: float = 2.0, heartbeat_grace: float = 2.0) -> Cluster:
        return start_cluster(
            tmp_path / f"c{len(made)}", made, hosts, heartbeat_ttl, heartbeat_grace
        )

    try:
        yield make
    finally:
        for c in made:
            c.cleanup()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()


SHARED = "cluster-shared"
"""The xdist_group of the tests that use ``reset_cluster``: one worker runs them all, so they
share one cluster."""


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that only run jobs on it (mark them
    ``pytest.mark.xdist_group(SHARED)``, so they share one worker and so this cluster); use
    it through ``reset_cluster``."""
    _skip_without_netns()
    made: list[Cluster] = []
    try:
        yield start_cluster(tmp_path_factory.mktemp("cluster"), made)
    finally:
        for c in made:
            c.cleanup()


@pytest.fixture
def reset_cluster(shared_cluster: Cluster) -> Iterator[Cluster]:
    """The module's shared cluster, as a fresh one would be: no job, every node ready and
    eligible (checked before the test, restored after it)."""
    shared_cluster.reset()
    yield shared_cluster
    shared_cluster.reset()
