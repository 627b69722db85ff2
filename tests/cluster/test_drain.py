"""Draining a host of a real cluster with `podium node drain`, watched through the API.

A drain makes the node ineligible at once; the server's drainer then stops its service
allocations at most ``migrate.max_parallel`` per group at a time (one counts as migrating until it
has exited and its replacement runs), lets batch ones run until the deadline, and stops system ones
last (never with ``--ignore-system``).  See docs/architecture.md, "Drain".
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.conftest import Cluster, job_file
from tests.e2e.conftest import wait_until

LONG_TASK = {"config": {"command": "/bin/sh", "args": ["-c", "sleep 300"]}}


def node(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.nodes()[name]


def set_eligible(cluster: Cluster, name: str, enable: bool) -> None:
    flag = "--enable" if enable else "--disable"
    out = cluster.view.cli("node", "eligibility", name, flag, check=True).stdout
    assert f"Node {name} is {'eligible' if enable else 'ineligible'}." in out, out


def hosts_of(cluster: Cluster, job: str) -> Counter[str]:
    names = {n["id"]: n["name"] for n in cluster.view.get("/v1/nodes")}
    return Counter(names[a["node_id"]] for a in cluster.view.running(job))


def run_job(cluster: Cluster, path: str, job: str, count: int) -> None:
    cluster.view.cli("job", "run", path, check=True)
    cluster.view.wait_running(job, count)


def client_terminal(a: dict[str, Any]) -> bool:
    return a["client_status"] in ("complete", "failed", "lost")


@dataclass
class Sample:
    at: float
    service: list[dict[str, Any]]
    """Every allocation of the service job."""
    system: dict[str, Any] | None
    """The system job's allocation on the drained node."""


@dataclass
class DrainWatch:
    """Samples, in the background, the service job's allocations and the system job's
    allocation on the drained node."""

    cluster: Cluster
    node_id: str
    service: str
    system: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        view = self.cluster.view
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                service = view.allocs(self.service)
                system = [a for a in view.allocs(self.system) if a["node_id"] == self.node_id]
                self.samples.append(
                    Sample(time.monotonic(), service, system[0] if system else None)
                )
            self._stop.wait(0.05)

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(5)
        assert self.samples, "the watch took no sample"
        return self.samples

    def migrating(self, s: Sample) -> int:
        """How many of the node's service allocations were migrating in a sample: stopped by
        the drain, and not yet both exited and replaced by a running one."""
        by_id = {a["id"]: a for a in s.service}
        n = 0
        for a in s.service:
            if (
                a["node_id"] != self.node_id
                or a["desired_status"] != "stop"
                or not a["desired_description"].startswith("node drain")
            ):
                continue
            nxt = by_id.get(a["next_allocation"] or "")
            done = client_terminal(a) and (nxt is None or nxt["client_status"] == "running")
            n += not done
        return n


def test_drain_moves_services_one_at_a_time_then_the_system_alloc(
    cluster: Cluster, tmp_path: Path
) -> None:
    run_job(cluster, job_file(tmp_path, "sys", count=None, type="system"), "sys", 3)
    # all three service instances on host1, so the drain has several to pace
    set_eligible(cluster, "host2", False)
    set_eligible(cluster, "host3", False)
    run_job(
        cluster,
        job_file(tmp_path, "web", count=3, group={"migrate": {"max_parallel": 1}}),
        "web",
        3,
    )
    assert hosts_of(cluster, "web") == {"host1": 3}
    set_eligible(cluster, "host2", True)
    set_eligible(cluster, "host3", True)
    host1 = node(cluster, "host1")["id"]
    drained_ids = {a["id"] for a in cluster.view.running("web")}

    watch = DrainWatch(cluster, host1, "web", "sys")
    started = time.monotonic()
    out = cluster.view.cli("node", "drain", "host1", "--deadline", "1m", timeout=60, check=True)
    took = time.monotonic() - started
    samples = watch.stop()
    print(f"\ndrain of 3 service allocs (max_parallel 1) + 1 system alloc: {took:.1f}s")
    assert "Draining node host1" in out.stdout and "Node host1 drained." in out.stdout, out.stdout

    # the node: ineligible, drain over
    n = node(cluster, "host1")
    assert n["eligibility"] == "ineligible" and not n["drain"], n
    # the service job: all three on host2/host3, none left on host1
    running = cluster.view.wait_running("web", 3)
    assert all(a["node_id"] != host1 for a in running)
    assert set(hosts_of(cluster, "web")) <= {"host2", "host3"}
    # (polled as well, though the drain now ends only once the tasks have exited; see below)
    wait_until(
        lambda: (
            not cluster.live_task_pids("web", "host1")
            and not cluster.live_task_pids("sys", "host1")
        ),
        timeout=15,
        what="host1's tasks to exit",
    )
    wait_until(
        lambda: all(
            a["client_status"] == "complete"
            for a in cluster.view.allocs("web") + cluster.view.allocs("sys")
            if a["node_id"] == host1
        ),
        timeout=15,
        what="host1's allocations to complete",
    )
    old = [a for a in cluster.view.allocs("web") if a["id"] in drained_ids]
    assert len(old) == 3 and all(
        a["desired_status"] == "stop" and a["desired_description"] == "node drain" for a in old
    ), old
    # each replacement links back to the drained allocation of its index
    assert {a["previous_allocation"] for a in running} == drained_ids

    # paced: never two migrating at once (sampled) ...
    most = max(watch.migrating(s) for s in samples)
    assert most <= 1, f"{most} service allocations of host1 were migrating at once"

    # ... and one after the other, by the tasks' own event times (a migration can end between
    # two samples): each drained task was killed only after the one before it had exited
    # and its replacement had started
    def event_time(alloc: dict[str, Any], kind: str) -> float:
        times = [e["time"] for ts in alloc["task_states"].values() for e in ts["events"]]
        kinds = [e["type"] for ts in alloc["task_states"].values() for e in ts["events"]]
        return min(t for t, k in zip(times, kinds, strict=True) if k == kind)

    by_id = {a["id"]: a for a in cluster.view.allocs("web")}
    chain = sorted(old, key=lambda a: event_time(a, "Killing"))
    for before, after in itertools.pairwise(chain):
        replacement = by_id[before["next_allocation"]]
        killed = event_time(after, "Killing")
        assert killed > event_time(before, "Killed"), (before, after)
        assert killed > event_time(replacement, "Started"), (replacement, after)

    # the system alloc went last: stopped only once every service one had been stopped (that
    # they had also exited is test_system_alloc_outlives_a_slow_stopping_service_alloc's)
    sys_alloc = next(a for a in cluster.view.allocs("sys") if a["node_id"] == host1)
    assert sys_alloc["desired_status"] == "stop" and sys_alloc["desired_description"] == (
        "node drain"
    ), sys_alloc
    first_stop = next(
        s for s in samples if s.system is not None and s.system["desired_status"] == "stop"
    )
    on_host1 = [a for a in first_stop.service if a["id"] in drained_ids]
    assert len(on_host1) == 3 and all(a["desired_status"] == "stop" for a in on_host1), on_host1
    # the other hosts keep their system allocs
    assert hosts_of(cluster, "sys") == {"host2": 1, "host3": 1}

    # eligible again: new work may land there (the system job comes back too)
    set_eligible(cluster, "host1", True)
    assert node(cluster, "host1")["eligibility"] == "eligible"
    wait_until(
        lambda: hosts_of(cluster, "sys") == {"host1": 1, "host2": 1, "host3": 1},
        timeout=15,
        what="the system job back on host1",
    )


def test_drain_ignore_system_keeps_the_system_alloc(cluster: Cluster, tmp_path: Path) -> None:
    run_job(cluster, job_file(tmp_path, "sys", count=None, type="system"), "sys", 3)
    run_job(cluster, job_file(tmp_path, "web", count=3), "web", 3)
    host1 = node(cluster, "host1")["id"]
    sys_before = next(a for a in cluster.view.running("sys") if a["node_id"] == host1)

    out = cluster.view.cli(
        "node", "drain", "host1", "--deadline", "1m", "--ignore-system", timeout=60, check=True
    )
    assert "Node host1 drained; 1 system allocation(s) left running." in out.stdout, out.stdout
    n = node(cluster, "host1")
    assert n["eligibility"] == "ineligible" and not n["drain"], n
    running = cluster.view.wait_running("web", 3)
    assert all(a["node_id"] != host1 for a in running)
    # the system alloc is untouched, its task still the same process
    sys_after = next(a for a in cluster.view.allocs("sys") if a["id"] == sys_before["id"])
    assert sys_after["desired_status"] == "run" and sys_after["client_status"] == "running"
    assert cluster.live_task_pids("sys", "host1") == [sys_before["task_states"]["t"]["pid"]]
    assert hosts_of(cluster, "sys") == {"host1": 1, "host2": 1, "host3": 1}

    set_eligible(cluster, "host1", True)
    assert node(cluster, "host1")["eligibility"] == "eligible"
    # and new work lands on it again
    r1 = [{"attribute": "${meta.rack}", "operator": "=", "value": "r1"}]
    run_job(cluster, job_file(tmp_path, "r1", constraints=r1), "r1", 1)
    assert hosts_of(cluster, "r1") == {"host1": 1}


def test_batch_alloc_is_stopped_at_the_drain_deadline(cluster: Cluster, tmp_path: Path) -> None:
    set_eligible(cluster, "host2", False)
    set_eligible(cluster, "host3", False)
    run_job(cluster, job_file(tmp_path, "crunch", type="batch", task=LONG_TASK), "crunch", 1)
    (batch,) = cluster.view.running("crunch")
    assert cluster.node_name(batch["node_id"]) == "host1"
    set_eligible(cluster, "host2", True)
    set_eligible(cluster, "host3", True)

    started = time.monotonic()
    drain = threading.Thread(
        target=lambda: cluster.view.cli(
            "node", "drain", "host1", "--deadline", "2s", timeout=30, check=True
        ),
        daemon=True,
    )
    drain.start()
    # before the deadline the batch alloc may finish: it is left running
    wait_until(lambda: node(cluster, "host1")["drain"], timeout=5, what="the drain to start")
    while time.monotonic() - started < 1.5:
        a = next(x for x in cluster.view.allocs("crunch") if x["id"] == batch["id"])
        assert a["desired_status"] == "run" and a["client_status"] == "running", a
        time.sleep(0.1)
    drain.join(30)
    took = time.monotonic() - started
    assert not drain.is_alive(), "podium node drain did not return"
    print(f"\ndrain of a batch alloc with --deadline 2s: {took:.1f}s")
    assert took >= 2.0

    a = next(x for x in cluster.view.allocs("crunch") if x["id"] == batch["id"])
    assert a["desired_status"] == "stop", a
    assert a["desired_description"] == "node drain: deadline reached", a
    wait_until(
        lambda: not cluster.live_task_pids("crunch", "host1"), timeout=15, what="crunch to exit"
    )
    wait_until(
        lambda: (
            next(x for x in cluster.view.allocs("crunch") if x["id"] == batch["id"])[
                "client_status"
            ]
            == "complete"
        ),
        timeout=15,
        what="the drained batch allocation to complete",
    )
    n = node(cluster, "host1")
    assert n["eligibility"] == "ineligible" and not n["drain"], n


# A service task that takes ~5 s to stop after SIGTERM (a server finishing its requests).
SLOW_STOP_S = 5
SLOW_STOP = {
    "config": {
        "command": "/bin/sh",
        "args": ["-c", f"trap 'sleep {SLOW_STOP_S}; exit 0' TERM; while true; do sleep 0.2; done"],
    },
    "kill_timeout": "20s",
}

# A drain waits for tasks to *exit*, not only to be told to stop: the two tests below use a
# service task that takes SLOW_STOP_S to shut down after SIGTERM.


def slow_service_on_host1(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    """One slow-stopping service allocation, on host1; returns it."""
    set_eligible(cluster, "host2", False)
    set_eligible(cluster, "host3", False)
    run_job(cluster, job_file(tmp_path, "slow", task=SLOW_STOP), "slow", 1)
    set_eligible(cluster, "host2", True)
    set_eligible(cluster, "host3", True)
    (alloc,) = cluster.view.running("slow")
    assert cluster.node_name(alloc["node_id"]) == "host1"
    return alloc


def test_system_alloc_outlives_a_slow_stopping_service_alloc(
    cluster: Cluster, tmp_path: Path
) -> None:
    run_job(cluster, job_file(tmp_path, "sys", count=None, type="system"), "sys", 3)
    slow_service_on_host1(cluster, tmp_path)
    host1 = node(cluster, "host1")["id"]
    watch = DrainWatch(cluster, host1, "slow", "sys")
    started = time.monotonic()
    cluster.view.cli("node", "drain", "host1", "--deadline", "1m", timeout=60, check=True)
    wait_until(lambda: not cluster.live_task_pids("slow", "host1"), timeout=30, what="slow to stop")
    samples = watch.stop()
    first_stop = next(
        s for s in samples if s.system is not None and s.system["desired_status"] == "stop"
    )
    on_host1 = [a for a in first_stop.service if a["node_id"] == host1]
    print(
        f"\nsystem alloc stopped {first_stop.at - started:.1f}s into the drain; service allocs "
        f"on host1 then: {[(a['desired_status'], a['client_status']) for a in on_host1]}"
    )
    # "system allocations go last, once nothing else is left": the service task has exited
    assert on_host1 and all(client_terminal(a) for a in on_host1), on_host1


def test_drain_ends_only_once_the_node_is_empty(cluster: Cluster, tmp_path: Path) -> None:
    alloc = slow_service_on_host1(cluster, tmp_path)
    pid = alloc["task_states"]["t"]["pid"]
    started = time.monotonic()
    out = cluster.view.cli("node", "drain", "host1", "--deadline", "1m", timeout=60, check=True)
    print(f"\n`podium node drain` returned after {time.monotonic() - started:.1f}s")
    assert "Node host1 drained." in out.stdout, out.stdout
    # "once the node is empty the drain ends": nothing of the job runs on host1 any more
    assert cluster.live_task_pids("slow", "host1") == [], f"task {pid} still runs on host1"
    a = next(x for x in cluster.view.allocs("slow") if x["id"] == alloc["id"])
    assert client_terminal(a), a
