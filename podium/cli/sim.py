"""``podium sim``: a real server and N simulated agents (mock driver), here or in workers.

Prints progress on stderr and, last, one JSON line of figures on stdout; exits 1
when an invariant is broken (see :mod:`podium.sim.invariants`).  The simulator
is imported only here, when the command runs (it composes server and agents,
which the rest of the CLI never imports).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer

from podium.cli import common


class StoreKind(StrEnum):
    SQLITE = "sqlite"
    MEMORY = "memory"
    ETCD = "etcd"


def sim(
    nodes: Annotated[int, typer.Option("--nodes", help="Simulated agents (nodes).")] = 100,
    jobs: Annotated[int, typer.Option("--jobs", help="Service jobs to register.")] = 10,
    count: Annotated[int, typer.Option("--count", help="Instances per job.")] = 100,
    store: Annotated[
        StoreKind,
        typer.Option(
            "--store",
            help="Server store: sqlite (a temporary dir, the default), memory, or etcd (real "
            "etcd: a member of the run's own, or --etcd).",
        ),
    ] = StoreKind.SQLITE,
    etcd: Annotated[
        str | None,
        typer.Option(
            "--etcd",
            help="With --store etcd: use this etcd cluster (client URLs, comma-separated) "
            "under a fresh cluster name sim-<random>, whose keys are deleted at the end, "
            "instead of starting members.",
        ),
    ] = None,
    etcd_members: Annotated[
        int,
        typer.Option(
            "--etcd-members",
            help="With --store etcd and no --etcd: etcd members to start (3: the quorum's "
            "cost); stopped and removed at the end.",
        ),
    ] = 1,
    node_classes: Annotated[
        int, typer.Option("--node-classes", help="Node shapes (cpu, memory, arch).")
    ] = 4,
    constraints: Annotated[
        bool,
        typer.Option(
            "--constraints/--no-constraints",
            help="Jobs need ${attr.cpu.arch} = amd64; every 10th also spreads over racks.",
        ),
    ] = False,
    run_for: Annotated[
        float, typer.Option("--run-for", help="Seconds each task runs (0: until stopped).")
    ] = 0.0,
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", help="Share of tasks that exit 1 soon after starting.")
    ] = 0.0,
    workers: Annotated[int, typer.Option("--workers", help="Scheduler workers.")] = 1,
    agent_procs: Annotated[
        int | None,
        typer.Option(
            "--agent-procs",
            help="Run the agents in N worker processes over real HTTP (0: in this process; "
            "default 0, or 1 with --secure).",
        ),
    ] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="As `podium server --secure`: TLS with a cluster CA made for the run, ACL on "
            "(jobs and probe use the bootstrap token), each agent with its own certificate "
            "over HTTPS. Needs real sockets: implies --agent-procs 1; --agent-procs 0 is refused.",
        ),
    ] = False,
    failover: Annotated[
        bool,
        typer.Option(
            "--failover",
            help="With --store etcd and --agent-procs 1 or more: two servers on the etcd "
            "cluster; the leader crashes (no resignation) once half the instances are "
            "placed, the other must lead within 10 s and lose nothing.",
        ),
    ] = False,
    heartbeat_ttl: Annotated[
        float | None,
        typer.Option("--heartbeat-ttl", help="Seconds (default: 10, or nodes/50 when larger)."),
    ] = None,
    shed_lag: Annotated[
        float | None,
        typer.Option(
            "--shed-lag",
            help="The server's --shed-lag: seconds its event loop may run behind before "
            "syncs and reads are shed (default: the server's, 2; 0 with the agents in the "
            "server's own process, whose loop they share).",
            min=0,
        ),
    ] = None,
    probe: Annotated[
        bool,
        typer.Option("--probe/--no-probe", help="Measure API latency from another process."),
    ] = True,
    events: Annotated[
        bool,
        typer.Option(
            "--events",
            help="Subscribe to the event stream from another process for the whole run; "
            "every event the commits made must arrive (else an invariant is broken).",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = 1800.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (shapes, job sizes).")] = 0,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Keep the server's state here.")
    ] = None,
) -> None:
    """Simulate a cluster: a real server and N mock-driver agents (here, or --agent-procs)."""
    with common.handle_errors():
        if nodes < 1 or jobs < 1 or count < 0 or workers < 1:
            common.usage("--nodes, --jobs and --workers must be at least 1, --count at least 0")
        if agent_procs is None:
            agent_procs = 1 if secure else 0
        if agent_procs < 0:
            common.usage("--agent-procs must be 0 or more")
        if secure and agent_procs < 1:
            common.usage(
                "--secure needs real sockets (TLS, agent certificates): --agent-procs 1 or more"
            )
        if not 0.0 <= fail_rate <= 1.0:
            common.usage("--fail-rate must be between 0 and 1")
        etcd_urls = [u.strip() for u in etcd.split(",") if u.strip()] if etcd else None
        if store != StoreKind.ETCD and (etcd is not None or etcd_members != 1):
            common.usage("--etcd and --etcd-members go with --store etcd")
        if etcd is not None and not etcd_urls:
            common.usage("--etcd needs client URLs, e.g. http://127.0.0.1:2379")
        if etcd_urls and etcd_members != 1:
            common.usage("--etcd-members starts members of the run's own: not with --etcd")
        if etcd_members < 1:
            common.usage("--etcd-members must be at least 1")
        for url in etcd_urls or ():
            if not url.startswith(("http://", "https://")):
                common.usage(f"--etcd: {url!r} is not an http(s):// URL")
        if failover and (store != StoreKind.ETCD or agent_procs < 1 or secure):
            common.usage("--failover needs --store etcd and --agent-procs 1 or more (not --secure)")
        if events and (failover or secure):
            common.usage("--events: not with --failover or --secure (one server, no token)")
        from podium.sim import SimConfig, simulate

        def progress(message: str) -> None:
            print(f"podium sim: {message}", file=sys.stderr, flush=True)

        result = simulate(
            SimConfig(
                nodes=nodes,
                jobs=jobs,
                count=count,
                store=store.value,
                etcd=etcd_urls,
                etcd_members=etcd_members,
                failover=failover,
                node_classes=node_classes,
                constraints=constraints,
                run_for=run_for,
                fail_rate=fail_rate,
                workers=workers,
                agent_procs=agent_procs,
                secure=secure,
                heartbeat_ttl=heartbeat_ttl,
                shed_lag=shed_lag,
                probe=probe,
                events=events,
                timeout=timeout,
                seed=seed,
                data_dir=data_dir,
                progress=progress,
            )
        )
        for problem in result.problems:
            print(f"podium sim: invariant broken: {problem}", file=sys.stderr)
        print(json.dumps(result.figures), flush=True)
    if not result.ok:
        raise typer.Exit(1)
