"""A small simulation end to end (100 nodes, 3,000 placements), as CI runs it.

(bench/ and ``podium sim`` run the large ones; 3,000 placements over the same 100 nodes
and 10 constrained jobs exercise the same paths in a fifth of the CPU time.)

The simulator checks its own invariants (every instance placed once, no node
over-committed, nothing on an ineligible or down node); the test also checks
them against the figures it prints and breaks one on purpose to see the check
catch it.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from podium.cli.main import app
from podium.models import Allocation, Node, NodeResources, NodeStatus
from podium.sim import SimConfig, health, simulate
from podium.sim import invariants as inv
from podium.sim.nodes import node_shapes
from podium.sim.workload import sim_job
from podium.state import StateStore

KEYS = {
    "nodes",
    "jobs",
    "placements",
    "seconds",
    "placements_per_s",
    "scheduler_placements_per_s",
    "plan_rejections",
    "server_rss_mb",
    "api_p50_ms",
    "api_p99_ms",
}


def test_small_simulation_places_everything_once() -> None:
    result = simulate(
        SimConfig(nodes=100, jobs=10, count=300, store="memory", constraints=True, timeout=120)
    )
    assert result.problems == []
    f = result.figures
    assert f.keys() >= KEYS
    assert f["nodes"] == 100 and f["jobs"] == 10
    assert f["placements"] == 3_000
    assert f["seconds"] > 0 and f["placements_per_s"] > 0
    assert f["scheduler_placements_per_s"] > 0
    assert f["api_p99_ms"] is not None and f["api_p99_ms"] >= f["api_p50_ms"] > 0


def test_cli_prints_json_last_on_sqlite() -> None:
    res = CliRunner().invoke(
        app, ["sim", "--nodes", "20", "--jobs", "3", "--count", "50", "--no-probe"]
    )
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    assert figures.keys() >= KEYS
    assert figures["placements"] == 150 and figures["store"] == "sqlite"
    assert figures["api_p50_ms"] is None  # no probe asked for


def test_failures_are_replaced_and_invariants_hold() -> None:
    result = simulate(
        SimConfig(
            nodes=20,
            jobs=2,
            count=50,
            store="memory",
            fail_rate=0.2,
            fail_within=0.2,
            probe=False,
            timeout=60,
        )
    )
    assert result.problems == []
    assert result.figures["placements"] == 100


def _node(i: int, status: NodeStatus = NodeStatus.READY) -> Node:
    return Node(
        id=f"n{i}", name=f"n{i}", status=status, resources=NodeResources(cpu=1000, memory=1000)
    )


def _alloc(i: int, node: str, *, job: str = "sim-0", cpu: int = 100) -> Allocation:
    return Allocation(
        id=f"a{i}-{node}",
        eval_id="e",
        name=f"{job}.g[{i}]",
        job_id=job,
        job_version=0,
        group="g",
        index=i,
        node_id=node,
        resources={"cpu": cpu, "memory": 10},
    )


def _store(allocs: list[Allocation], nodes: list[Node]) -> StateStore:
    from podium.models import Job, JobSpec

    store = StateStore()
    txn = store.txn()
    spec = JobSpec.model_validate(sim_job(0, 2))
    txn.put_job(Job(id="sim-0", version=0, type="service", priority=50, spec=spec))
    for n in nodes:
        txn.put_node(n)
    for a in allocs:
        txn.put_alloc(a)
    store.commit(txn)
    return store


def test_invariants_catch_what_they_promise() -> None:
    nodes = [_node(0), _node(1), _node(2, NodeStatus.DOWN)]
    good = _store([_alloc(0, "n0"), _alloc(1, "n1")], nodes)
    assert inv.check(good, set()) == []
    twice = _store([_alloc(0, "n0"), _alloc(0, "n1"), _alloc(1, "n1")], nodes)
    assert any("placed twice" in p for p in inv.check(twice, set()))
    full = _store([_alloc(0, "n0", cpu=900), _alloc(1, "n0", cpu=200)], nodes)
    assert any("over-committed" in p for p in inv.check(full, set()))
    assert any("ineligible" in p for p in inv.check(good, {"n1"}))
    down = _store([_alloc(0, "n0"), _alloc(1, "n2")], nodes)
    assert any("which is down" in p for p in inv.check(down, set()))
    short = _store([_alloc(0, "n0")], nodes)
    assert any("1 live instances, count 2" in p for p in inv.check(short, set()))


def test_node_shapes_make_classes_and_racks() -> None:
    shapes = node_shapes(100, 4)
    assert len({(s.cpu, s.memory) for s in shapes}) == 4
    assert len({s.meta["rack"] for s in shapes}) == 10


def test_agents_in_worker_processes_over_http() -> None:
    """``--agent-procs``: the agents run in two worker processes over real HTTP; the
    server's RSS is its own and the workers' is reported apart."""
    result = simulate(
        SimConfig(nodes=50, jobs=2, count=1000, store="memory", agent_procs=2, timeout=120)
    )
    assert result.problems == []
    f = result.figures
    assert f["placements"] == 2_000 and f["agent_procs"] == 2
    assert f["agents_rss_mb"] is not None and f["agents_rss_mb"] > 0
    assert f["server_rss_mb"] > 0 and f["api_p99_ms"] is not None
    # the cluster stayed whole, and the run says on what and how late its loops ran
    assert (f["nodes_down"], f["allocs_lost"], f["placements_total"]) == (0, 0, 2_000)
    lag = f["event_loop_lag_p99_ms"]
    assert lag["server"] is not None and lag["agents"] is not None
    assert lag["server"] >= 0 and lag["agents"] >= 0
    machine = f["machine"]
    assert machine["cpu_model"] and machine["cpus"] >= 1 and machine["calibration_ms"] > 0
    # heartbeats timed by the agents (none may fall in so short a span), sheds counted
    assert set(f["heartbeats"]) == {"probe", "agents"}
    probe = f["heartbeats"]["probe"]  # the probe's own node heartbeats once a round
    assert probe["count"] >= 1 and probe["p99_ms"] is not None, probe
    assert set(f["heartbeats"]["agents"]) == {"count", "p50_ms", "p99_ms", "max_ms"}
    assert set(f["shed"]) == {"sync", "read"}


def test_with_no_failure_injected_a_node_down_a_loss_or_a_replacement_breaks_the_run() -> None:
    ok = {"nodes_down": 0, "allocs_lost": 0, "placements_total": 100, "target": 100}
    assert health.stability_problems(**ok, fail_rate=0.0) == []
    down = health.stability_problems(**{**ok, "nodes_down": 1808}, fail_rate=0.0)
    assert down == ["1,808 nodes declared down with no failure injected (heartbeats starved)"]
    lost = health.stability_problems(**{**ok, "allocs_lost": 3}, fail_rate=0.0)
    assert lost == ["3 allocations lost with no failure injected"]
    extra = health.stability_problems(**{**ok, "placements_total": 109}, fail_rate=0.0)
    assert extra == ["109 placements for a target of 100: 9 replacements with no failure injected"]
    # with failures injected, replacements are the point
    assert health.stability_problems(**{**ok, "placements_total": 150}, fail_rate=0.2) == []


def test_heartbeat_figures_pool_the_counts_and_keep_the_worst_process() -> None:
    one = health.heartbeat_figures([0.002] * 98 + [0.040, 1.5])
    assert one == {"count": 100, "p50_ms": 2.0, "p99_ms": 40.0, "max_ms": 1500.0}
    other = health.heartbeat_figures([0.001] * 50)
    pooled = health.worst_heartbeats([other, one, health.heartbeat_figures([])])
    assert pooled == {**one, "count": 150}
    assert health.worst_heartbeats([{}, health.heartbeat_figures([])])["count"] == 0


def test_lag_percentile_and_machine() -> None:
    assert health.percentile_ms([], 0.99) is None
    assert health.percentile_ms([0.001 * i for i in range(1, 101)], 0.99) == 99.0
    assert health.percentile_ms([0.5], 0.99) == 500.0
    info = health.machine(calibration=False)
    assert info["cpus"] >= 1 and info["python"].startswith("3.") and "calibration_ms" not in info


def test_the_event_stream_delivers_every_change_of_a_10000_placement_simulation() -> None:
    """A subscriber in another process reads the stream over a socket for the whole run;
    ``podium sim`` compares what it was sent, index by index, with what the commits wrote
    (a broken invariant otherwise).  The API's latency meanwhile is bench/events_sim.py's."""
    result = simulate(
        SimConfig(nodes=200, jobs=10, count=1000, store="memory", events=True, timeout=300)
    )
    assert result.problems == []
    events = result.figures["events"]
    assert result.figures["placements"] == 10_000
    # each placement is told at least twice: placed, then running
    assert events["received"] == events["expected"] >= 20_000
    assert events["missing_indexes"] == events["extra_indexes"] == 0


def test_the_event_check_catches_a_missing_or_invented_event() -> None:
    import asyncio

    from podium.sim import run

    async def check(counts: dict[int, int], expected: dict[int, int]) -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            f"read x; echo '{json.dumps({'counts': counts, 'events': 0, 'bytes': 0, 'error': None})}'",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        _, problems = await run._check_events(proc, expected)
        return problems

    assert asyncio.run(check({1: 2, 2: 1}, {1: 2, 2: 1})) == []
    short = asyncio.run(check({1: 2}, {1: 2, 2: 1}))
    assert short and "1 indexes short of events, first [2]" in short[0]
    extra = asyncio.run(check({1: 2, 2: 1, 3: 1}, {1: 2, 3: 1}))
    assert extra and "never committed" in extra[0]
