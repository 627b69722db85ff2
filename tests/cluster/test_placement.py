"""Placement rules on a real cluster: `podium job run` against three hosts (racks r1..r3).

Every job here goes through the CLI; where it lands is read back from the API.  A job the
scheduler cannot place (wholly or partly) makes `podium job run` exit 2 and print the scheduler's
reasons, which are checked word for word (see podium/scheduler/README.md).

The tests only run jobs, so they share one cluster (``reset_cluster``: no job, every node
eligible, before and after each) and one pytest-xdist worker: one cluster start, not nine.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import SHARED, Cluster, job_file

pytestmark = pytest.mark.xdist_group(SHARED)

EXIT_PLACEMENT = 3
PORT = 18080


@pytest.fixture
def cluster(reset_cluster: Cluster) -> Cluster:
    return reset_cluster


def hosts_of(cluster: Cluster, job: str) -> list[str]:
    """Sorted host names of the job's running allocations."""
    names = {n["id"]: n["name"] for n in cluster.view.get("/v1/nodes")}
    return sorted(names[a["node_id"]] for a in cluster.view.running(job))


def run(cluster: Cluster, path: str) -> subprocess.CompletedProcess[str]:
    return cluster.view.cli("job", "run", path, timeout=60)


def run_ok(cluster: Cluster, path: str) -> None:
    cluster.view.cli("job", "run", path, check=True, timeout=60)


def placement_failure(result: subprocess.CompletedProcess[str]) -> str:
    """The run's output, once checked that it failed to place."""
    out = result.stdout + result.stderr
    assert result.returncode == EXIT_PLACEMENT, out
    assert "Placement failed" in out, out
    return " ".join(out.split())  # the table may wrap; compare the words


def rack(value: str) -> dict[str, Any]:
    return {"attribute": "${meta.rack}", "operator": "=", "value": value}


def test_constraint_on_meta_puts_every_instance_on_that_host(
    cluster: Cluster, tmp_path: Path
) -> None:
    run_ok(cluster, job_file(tmp_path, "r2only", count=3, constraints=[rack("r2")]))
    assert hosts_of(cluster, "r2only") == ["host2"] * 3


def test_impossible_constraint_explains_every_node(cluster: Cluster, tmp_path: Path) -> None:
    arch = {"attribute": "${attr.cpu.arch}", "operator": "=", "value": "sparc"}
    out = placement_failure(
        run(cluster, job_file(tmp_path, "sparc", count=2, group={"constraints": [arch]}))
    )
    assert (
        'Group "g" could not place 2 allocations: '
        "3 nodes evaluated: 3 constraint ${attr.cpu.arch} = sparc" in out
    ), out
    assert cluster.view.running("sparc") == []


def test_unknown_datacenter_fits_nowhere(cluster: Cluster, tmp_path: Path) -> None:
    out = placement_failure(run(cluster, job_file(tmp_path, "dc9", datacenters=["dc9"])))
    assert "3 nodes evaluated: 3 datacenter not in [dc9]" in out, out
    assert cluster.view.running("dc9") == []


def test_distinct_hosts_one_per_host_and_no_fourth(cluster: Cluster, tmp_path: Path) -> None:
    distinct = [{"operator": "distinct_hosts"}]
    run_ok(cluster, job_file(tmp_path, "three", count=3, constraints=distinct))
    assert hosts_of(cluster, "three") == ["host1", "host2", "host3"]

    out = placement_failure(
        run(cluster, job_file(tmp_path, "four", count=4, group={"constraints": distinct}))
    )
    assert 'Group "g" could not place 1 allocation: 3 nodes evaluated: 3 distinct_hosts' in out, out
    # the three that fit run, one per host
    cluster.view.wait_running("four", 3)
    assert hosts_of(cluster, "four") == ["host1", "host2", "host3"]


def test_max_per_node(cluster: Cluster, tmp_path: Path) -> None:
    run_ok(cluster, job_file(tmp_path, "mpn", count=3, group={"max_per_node": 1}))
    assert hosts_of(cluster, "mpn") == ["host1", "host2", "host3"]

    out = placement_failure(
        run(cluster, job_file(tmp_path, "mpn", count=5, group={"max_per_node": 1}))
    )
    assert (
        'Group "g" could not place 2 allocations: 3 nodes evaluated: 3 max_per_node 1 '
        "(2 instances could not be placed)" in out
    ), out
    assert hosts_of(cluster, "mpn") == ["host1", "host2", "host3"]

    # two per node fit six
    run_ok(cluster, job_file(tmp_path, "mpn", count=6, group={"max_per_node": 2}))
    assert Counter(hosts_of(cluster, "mpn")) == {"host1": 2, "host2": 2, "host3": 2}


def test_affinity_prefers_its_rack(cluster: Cluster, tmp_path: Path) -> None:
    # soft: only asserted where it fits, one instance per job; three jobs, so luck (1/27)
    # cannot pass it
    for i in range(3):
        name = f"aff{i}"
        run_ok(
            cluster,
            job_file(tmp_path, name, affinities=[{**rack("r3"), "weight": 100}]),
        )
        assert hosts_of(cluster, name) == ["host3"]


def test_spread_over_racks(cluster: Cluster, tmp_path: Path) -> None:
    even = [{"attribute": "${meta.rack}", "weight": 100}]
    run_ok(cluster, job_file(tmp_path, "even", count=3, spread=even))
    assert hosts_of(cluster, "even") == ["host1", "host2", "host3"]

    # with targets: half on r1, half on r3, none on r2
    targeted = [
        {
            "attribute": "${meta.rack}",
            "weight": 100,
            "targets": [{"value": "r1", "percent": 50}, {"value": "r3", "percent": 50}],
        }
    ]
    run_ok(cluster, job_file(tmp_path, "halves", count=4, group={"spread": targeted}))
    assert Counter(hosts_of(cluster, "halves")) == {"host1": 2, "host3": 2}


def static_port(port: int = PORT) -> dict[str, Any]:
    return {"network": {"ports": {"web": {"static": port}}}}


def test_static_port_never_shared_on_a_node(cluster: Cluster, tmp_path: Path) -> None:
    # two groups of one job, and a second job, all on the same static port: one per host
    run_ok(cluster, job_file(tmp_path, "a", groups={"x": static_port(), "y": static_port()}))
    run_ok(cluster, job_file(tmp_path, "b", group=static_port()))
    hosts = hosts_of(cluster, "a") + hosts_of(cluster, "b")
    assert sorted(hosts) == ["host1", "host2", "host3"], hosts
    ports = [a["ports"] for job in ("a", "b") for a in cluster.view.running(job)]
    assert all(p["web"]["value"] == PORT for p in ports), ports

    # a fourth has nowhere to go
    out = placement_failure(run(cluster, job_file(tmp_path, "c", count=2, group=static_port())))
    assert f"3 nodes evaluated: 3 port {PORT} in use" in out, out


def test_static_port_in_use_on_the_only_eligible_host(cluster: Cluster, tmp_path: Path) -> None:
    for name in ("host2", "host3"):
        out = cluster.view.cli("node", "eligibility", name, "--disable", check=True).stdout
        assert f"Node {name} is ineligible." in out
    run_ok(cluster, job_file(tmp_path, "first", group=static_port()))
    assert hosts_of(cluster, "first") == ["host1"]

    out = placement_failure(run(cluster, job_file(tmp_path, "second", group=static_port())))
    # ineligible nodes are not candidates, so not counted
    assert f'Group "g" could not place 1 allocation: 1 node evaluated: 1 port {PORT} in use' in (
        out
    ), out
    assert "is blocked: the job will be placed when capacity appears" in out, out

    # capacity appears: the blocked evaluation places it on the host made eligible
    cluster.view.cli("node", "eligibility", "host3", "--enable", check=True)
    cluster.view.wait_running("second", 1)
    assert hosts_of(cluster, "second") == ["host3"]
    assert hosts_of(cluster, "first") == ["host1"]
