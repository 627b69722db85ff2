"""System jobs on a real cluster: one allocation per eligible host, now and as hosts come and go."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.cluster.conftest import Cluster, job_file
from tests.e2e.conftest import wait_until


def per_host(cluster: Cluster, job: str) -> Counter[str]:
    """Running allocations of the job per host name."""
    names = {n["id"]: n["name"] for n in cluster.view.get("/v1/nodes")}
    return Counter(names[a["node_id"]] for a in cluster.view.running(job))


def wait_per_host(cluster: Cluster, job: str, hosts: list[str], timeout: float = 20) -> None:
    want = Counter(hosts)
    wait_until(
        lambda: per_host(cluster, job) == want,
        timeout=timeout,
        what=f"{job} running once on each of {hosts}",
    )


def system_job(tmp_path: Path, name: str, **job: object) -> str:
    return job_file(tmp_path, name, count=None, type="system", **job)


def test_one_per_host_and_a_late_host_gets_one(cluster: Cluster, tmp_path: Path) -> None:
    cluster.view.cli("job", "run", system_job(tmp_path, "sys"), check=True)
    wait_per_host(cluster, "sys", ["host1", "host2", "host3"])
    assert {a["name"] for a in cluster.view.running("sys")} == {"sys.g[0]"}
    # each on its host, in its namespace
    for a in cluster.view.running("sys"):
        host = cluster.hosts[cluster.node_name(a["node_id"])]
        assert host.owns_pid(a["task_states"]["t"]["pid"])

    name = cluster.add_host()
    assert name == "host4"
    wait_per_host(cluster, "sys", ["host1", "host2", "host3", "host4"])
    assert len(cluster.live_task_pids("sys")) == 4
    assert len(cluster.live_task_pids("sys", "host4")) == 1


def test_constrained_system_job_skips_filtered_hosts(cluster: Cluster, tmp_path: Path) -> None:
    not_r1 = [{"attribute": "${meta.rack}", "operator": "!=", "value": "r1"}]
    out = cluster.view.cli(
        "job", "run", system_job(tmp_path, "edge", constraints=not_r1), check=True
    )
    # filtered nodes are not failures: nothing reported as unplaceable
    assert "Placement failed" not in out.stdout, out.stdout
    wait_per_host(cluster, "edge", ["host2", "host3"])
    assert all(cluster.node_name(a["node_id"]) != "host1" for a in cluster.view.allocs("edge"))
    # a later host that passes gets one too; host1 still none
    cluster.add_host()
    wait_per_host(cluster, "edge", ["host2", "host3", "host4"])
    assert cluster.live_task_pids("edge", "host1") == []


def test_cut_host_loses_its_system_alloc_which_is_not_replaced(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.view.cli("job", "run", system_job(tmp_path, "sys"), check=True)
    wait_per_host(cluster, "sys", ["host1", "host2", "host3"])
    victim = "host2"
    (lost_alloc,) = [
        a for a in cluster.view.running("sys") if cluster.node_name(a["node_id"]) == victim
    ]

    victim_id = cluster.nodes()[victim]["id"]
    node_evals = len(cluster.evals("sys", "node-update", victim_id))
    cluster.cut(victim)
    cluster.wait_nodes("down", [victim], timeout=30)
    wait_until(
        lambda: (
            next(a for a in cluster.view.allocs("sys") if a["id"] == lost_alloc["id"])[
                "client_status"
            ]
            == "lost"
        ),
        timeout=15,
        what="the cut host's system allocation to be lost",
    )
    # not replaced elsewhere: once the scheduler has looked at the node's loss, the two
    # others keep exactly one each
    wait_until(
        lambda: cluster.evals_done("sys", "node-update", victim_id, node_evals),
        timeout=15,
        what="the scheduler's evaluation of the lost node",
    )
    assert per_host(cluster, "sys") == Counter({"host1": 1, "host3": 1})
    assert len(cluster.view.allocs("sys")) == 3
    # cut off, the host keeps its copy running: it cannot know
    assert len(cluster.live_task_pids("sys", victim)) == 1

    # healed, the host gets a system allocation again, and exactly one process runs there
    cluster.heal(victim)
    cluster.wait_nodes("ready", [victim], timeout=30)
    wait_per_host(cluster, "sys", ["host1", "host2", "host3"])
    (fresh,) = [a for a in cluster.view.running("sys") if cluster.node_name(a["node_id"]) == victim]
    assert fresh["id"] != lost_alloc["id"]
    # the healed agent stopped the copy it kept: only the new allocation's task runs there
    wait_until(
        lambda: cluster.live_task_pids("sys", victim) == [fresh["task_states"]["t"]["pid"]],
        timeout=20,
        what=f"only the new system task on {victim}",
    )
    assert len(cluster.live_task_pids("sys")) == 3
