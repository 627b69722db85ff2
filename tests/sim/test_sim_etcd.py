"""``podium sim --store etcd``: a small simulation on real etcd (20 nodes, 300 placements).

The run's server commits to an etcd member the simulation starts itself (or to a cluster
it is given, under a fresh cluster name); its invariants must hold, including
``etcd_reload_matches``: a fresh backend's load of the cluster returns the index and the
allocations the server holds.  Whatever ends the run, the members it started are stopped
and their data removed, and the keys it wrote to a given cluster are deleted.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from podium.cli.main import app
from podium.models import Job, JobSpec
from podium.sim import SimConfig, simulate
from podium.sim import invariants as inv
from podium.sim.workload import sim_job
from podium.state import SqliteBackend, StateStore
from podium.state.etcd_client import EtcdClient
from podium.state.etcd_member import EtcdCluster, etcd_binary
from tests.sim.test_sim import _alloc, _node

ETCD_FIGURES = {
    "etcd_endpoints",
    "etcd_members",
    "etcd_put_ms_p50",
    "etcd_cpu_s",
    "etcd_reload_matches",
    "commits",
    "commit_ms_p50",
    "commit_ms_p99",
    "store_write_ms_p50",
}


def need_etcd() -> None:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian's etcd-server package: /usr/bin/etcd)")


@pytest.fixture(scope="module")
def given_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """An etcd cluster that is not the simulation's own (as ``--etcd URLS`` names one)."""
    need_etcd()
    cluster = EtcdCluster.start(1, tmp_path_factory.mktemp("given-etcd"))
    yield cluster
    cluster.close()


@pytest.fixture
def sim_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the simulation makes its temporary directory (and its etcd member's data)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def etcd_processes_under(root: Path) -> list[int]:
    """Pids of etcd processes whose data dir is under ``root``."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].endswith("etcd") and any(str(root) in a for a in cmdline):
            out.append(proc.info["pid"])
    return out


def podium_keys(cluster: EtcdCluster) -> list[str]:
    client = EtcdClient(cluster.endpoints)
    try:
        _, kvs, _ = client.range("/podium/", b"/podium0")
    finally:
        client.close()
    return [kv.key for kv in kvs]


def small(
    etcd: list[str] | None = None, progress: Callable[[str], None] | None = None
) -> SimConfig:
    return SimConfig(
        nodes=20,
        jobs=3,
        count=100,
        store="etcd",
        etcd=etcd,
        probe=False,
        timeout=60,
        progress=progress,
    )


def test_a_small_simulation_on_its_own_etcd_member(sim_tmp: Path) -> None:
    need_etcd()
    result = simulate(small())
    assert result.problems == []
    f = result.figures
    assert f.keys() >= ETCD_FIGURES
    assert f["store"] == "etcd" and f["placements"] == 300
    assert f["etcd_reload_matches"] is True
    assert f["etcd_endpoints"] == 1 and f["etcd_members"] == 1
    assert f["etcd_put_ms_p50"] > 0 and f["etcd_cpu_s"] >= 0
    assert f["commits"] > 0 and f["commit_ms_p99"] >= f["commit_ms_p50"] > 0
    assert f["store_write_ms_p50"] > 0
    # the member is stopped, its data (the run's temporary directory) removed
    assert etcd_processes_under(sim_tmp) == []
    assert list(sim_tmp.iterdir()) == []


def test_a_given_etcd_cluster_gets_its_keys_back(given_etcd: EtcdCluster) -> None:
    result = simulate(small(etcd=given_etcd.endpoints))
    assert result.problems == []
    f = result.figures
    assert f["etcd_reload_matches"] is True and f["placements"] == 300
    assert f["etcd_members"] is None and f["etcd_endpoints"] == 1
    assert podium_keys(given_etcd) == []


class Boom(Exception):
    pass


def explode_once_registered(message: str) -> None:
    if "agents registered" in message:
        raise Boom(message)


def test_an_error_mid_run_stops_the_member_and_removes_its_data(sim_tmp: Path) -> None:
    need_etcd()
    with pytest.raises(Boom):
        simulate(small(progress=explode_once_registered))
    assert etcd_processes_under(sim_tmp) == []
    assert list(sim_tmp.iterdir()) == []


def test_an_error_mid_run_deletes_the_keys_in_a_given_cluster(given_etcd: EtcdCluster) -> None:
    with pytest.raises(Boom):
        simulate(small(etcd=given_etcd.endpoints, progress=explode_once_registered))
    assert podium_keys(given_etcd) == []


def test_reload_matches_catches_what_the_store_lacks(tmp_path: Path) -> None:
    """The invariant itself, on SQLite: a fresh load that matches, then a server holding a
    commit its store never got (applied in memory only)."""
    path = tmp_path / "state.db"
    store = StateStore(SqliteBackend(path))
    txn = store.txn()
    txn.put_job(
        Job(
            id="sim-0",
            version=0,
            type="service",
            priority=50,
            spec=JobSpec.model_validate(sim_job(0, 2)),
        )
    )
    txn.put_node(_node(0))
    txn.put_alloc(_alloc(0, "n0"))
    store.commit(txn)
    fresh = SqliteBackend(path)
    try:
        assert inv.reload_matches(store, fresh, "etcd_reload_matches") == []
    finally:
        fresh.close()

    lost = store.txn()
    lost.put_alloc(_alloc(1, "n0"))
    store.apply_committed(lost)  # in memory, never written to the store
    fresh = SqliteBackend(path)
    try:
        problems = inv.reload_matches(store, fresh, "etcd_reload_matches")
    finally:
        fresh.close()
        store.close()
    assert any("index 1, the server at 2" in p for p in problems), problems
    assert any("1 missing from the store" in p for p in problems), problems


def test_cli_store_flags() -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["sim", "--help"]).stdout
    assert "etcd" in help_text and "--etcd-members" in help_text
    for args in (
        ["--etcd", "http://127.0.0.1:2379"],  # without --store etcd
        ["--store", "etcd", "--etcd", "http://127.0.0.1:2379", "--etcd-members", "3"],
        ["--store", "etcd", "--etcd", "127.0.0.1:2379"],
        ["--store", "etcd", "--etcd-members", "0"],
    ):
        res = runner.invoke(app, ["sim", "--nodes", "1", *args])
        assert res.exit_code == 2, (args, res.output)


def test_cli_prints_the_etcd_figures(sim_tmp: Path) -> None:
    need_etcd()
    res = CliRunner().invoke(
        app,
        ["sim", "--nodes", "10", "--jobs", "2", "--count", "20", "--store", "etcd", "--no-probe"],
    )
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    assert figures["store"] == "etcd" and figures["placements"] == 40
    assert figures["etcd_reload_matches"] is True


def test_failover_mid_run_loses_nothing(sim_tmp: Path) -> None:
    """Two servers on the run's etcd; the leader crashes (its listener gone, its lease left
    to run out) once half the instances are placed; the survivor leads within 10 s and
    its store holds every job, node and allocation, each instance placed once."""
    need_etcd()
    cfg = small()
    cfg.jobs, cfg.count, cfg.agent_procs, cfg.failover = 6, 50, 1, True
    result = simulate(cfg)
    assert result.problems == []
    f = result.figures
    assert f["placements"] == 300 and f["etcd_reload_matches"] is True
    failover = f["failover"]
    assert failover["lost_writes"] == 0 and failover["placements_total"] == 300
    assert 150 <= failover["at_placements"] <= 300
    assert 0 < failover["new_leader_after_s"] <= 10
    assert etcd_processes_under(sim_tmp) == []


def test_cli_failover_flag_needs_etcd_and_agent_procs() -> None:
    runner = CliRunner()
    assert "--failover" in runner.invoke(app, ["sim", "--help"]).stdout
    for args in (
        ["--failover", "--agent-procs", "1"],  # not on etcd
        ["--failover", "--store", "etcd"],  # agents in this process
        ["--failover", "--store", "etcd", "--agent-procs", "1", "--secure"],
    ):
        res = runner.invoke(app, ["sim", "--nodes", "1", *args])
        assert res.exit_code == 2, (args, res.output)
