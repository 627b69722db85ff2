"""Failures of a real cluster: a host cut off the network, an agent or the server killed -9."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from tests.cluster.conftest import Cluster
from tests.cluster.test_hosts import run_sleeper
from tests.e2e.conftest import wait_until


class RunningWatch:
    """Samples the API in the background: the most allocations of a job running at once."""

    def __init__(self, cluster: Cluster, job: str) -> None:
        self.cluster, self.job = cluster, job
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                self.most = max(self.most, len(self.cluster.view.running(self.job)))
            self._stop.wait(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.most


def test_cut_host_is_replaced_and_stopped_on_heal(cluster: Cluster, tmp_path: Path) -> None:
    run_sleeper(cluster, tmp_path, "web", 3)
    watch = RunningWatch(cluster, "web")
    before = cluster.view.running("web")
    victim = cluster.node_name(before[0]["node_id"])
    victim_allocs = {a["id"] for a in before if cluster.node_name(a["node_id"]) == victim}
    victim_pids = [a["task_states"]["t"]["pid"] for a in before if a["id"] in victim_allocs]

    cut_at = time.monotonic()
    cluster.cut(victim)
    cluster.wait_nodes("down", [victim], timeout=30)
    down_after = time.monotonic() - cut_at

    def replaced() -> bool:
        running = cluster.view.running("web")
        return len(running) == 3 and all(
            a["id"] not in victim_allocs and cluster.node_name(a["node_id"]) != victim
            for a in running
        )

    wait_until(replaced, timeout=30, what="the cut host's allocations to run elsewhere")
    recovered_after = time.monotonic() - cut_at
    print(
        f"\ncut {victim}: node down after {down_after:.1f}s, all 3 running again after "
        f"{recovered_after:.1f}s (heartbeat TTL {cluster.heartbeat_ttl:g}s + grace "
        f"{cluster.heartbeat_grace:g}s)"
    )
    # cut off, the host keeps its tasks running (it cannot know it was given up on)
    for pid in victim_pids:
        assert psutil.pid_exists(pid) and cluster.hosts[victim].owns_pid(pid)
    lost = [a for a in cluster.view.allocs("web") if a["id"] in victim_allocs]
    assert all(a["client_status"] == "lost" for a in lost), lost

    cluster.heal(victim)
    cluster.wait_nodes("ready", [victim], timeout=30)
    # the healed agent stops its copies: the job is back to exactly its count of processes
    wait_until(
        lambda: not cluster.live_task_pids("web", victim),
        timeout=20,
        what=f"{victim}'s stale tasks to stop",
    )
    healed_at = time.monotonic()
    while time.monotonic() - healed_at < 2:  # and nothing comes back in the next moments
        assert len(cluster.live_task_pids("web")) == 3
        time.sleep(0.2)
    assert not any(psutil.pid_exists(p) for p in victim_pids)
    assert len(cluster.view.running("web")) == 3
    lost = [a for a in cluster.view.allocs("web") if a["id"] in victim_allocs]
    assert all(a["client_status"] in ("lost", "complete") for a in lost), lost
    assert watch.stop() <= 3


def test_agent_kill9_restarted_within_ttl_keeps_tasks(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    # a longer grace, so a slow restart on a busy machine still falls inside it
    cluster: Cluster = make_cluster(heartbeat_ttl=2, heartbeat_grace=8)
    run_sleeper(cluster, tmp_path, "steady", 3)
    pids = cluster.task_pids("steady")
    name = "host1"
    cluster.kill_agent(name)
    assert all(psutil.pid_exists(p) for p in pids.values())
    cluster.start_agent(name)
    assert "re-attached to" in cluster.log(name)
    # the node never went down: ready since the agent's registration, never "heartbeat resumed"
    node = cluster.nodes()[name]
    assert (node["status"], node["status_description"]) == ("ready", "registered"), node
    after = cluster.view.wait_running("steady", 3)
    assert {a["id"]: a["task_states"]["t"]["pid"] for a in after} == pids
    assert all(a["task_states"]["t"]["restarts"] == 0 for a in after)
    assert len(cluster.live_task_pids("steady")) == 3


def test_server_kill9_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    run_sleeper(cluster, tmp_path, "steady", 3)
    before_allocs = {a["id"]: a["node_id"] for a in cluster.view.allocs("steady")}
    before_nodes = {n["id"]: n["name"] for n in cluster.view.get("/v1/nodes")}
    pids = cluster.task_pids("steady")

    gone = "cannot reach server"
    noticed = {name: cluster.log_count(name, gone) for name in cluster.hosts}
    cluster.kill_server()
    wait_until(
        lambda: all(cluster.log_count(name, gone) > n for name, n in noticed.items()),
        timeout=30,
        what="every agent to notice the server is gone",
    )
    assert all(psutil.pid_exists(p) for p in pids.values())  # and keep their tasks
    cluster.start_server()
    restarted_at = time.monotonic()

    after = cluster.view.wait_running("steady", 3)
    assert {a["id"]: a["node_id"] for a in cluster.view.allocs("steady")} == before_allocs
    assert {n["id"]: n["name"] for n in cluster.view.get("/v1/nodes")} == before_nodes
    assert [j["id"] for j in cluster.view.get("/v1/jobs")] == ["steady"]
    assert {a["id"]: a["task_states"]["t"]["pid"] for a in after} == pids
    assert all(a["task_states"]["t"]["restarts"] == 0 for a in after)
    # agents carry on: they stay ready past TTL + grace of the restarted server (which would
    # have marked them down by then without their heartbeats) and still take new work
    until = restarted_at + cluster.heartbeat_ttl + cluster.heartbeat_grace + 1
    while time.monotonic() < until:
        assert all(n["status"] == "ready" for n in cluster.nodes().values())
        time.sleep(0.2)
    cluster.view.cli("job", "scale", "steady", "g", "4", check=True)
    cluster.view.wait_running("steady", 4)
    assert all(psutil.pid_exists(p) for p in pids.values())
