"""The API probe: a separate process that keeps registering small jobs and reading
(``GET /v1/jobs``, ``GET /v1/job/{id}``) through a real socket while the simulation
runs, and heartbeating a node of its own (``PUT /v1/node/{id}/heartbeat``: a heartbeat's
latency during the storm, seen by a client whose own loop is idle, unlike the simulated
agents' shared worker), and prints its latencies as one JSON object when its stdin closes.
Its node has no driver, so nothing is ever placed on it.

    python -m podium.sim.probe http://127.0.0.1:PORT [--interval 0.05]

With several servers (comma-separated: ``podium sim --failover``), a server that cannot
be reached is passed over for the next from then on (the request counts as an error).

A separate process, so what it measures is what any client of the server sees
(its own event loop and GIL are not the server's).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from podium.client import Client, ServerUnreachable
from podium.errors import PodiumError
from podium.models import JobSpec, Node, NodeResources
from podium.sim.workload import probe_job

PROBE_NODE = Node(
    id="sim-probe-node",
    name="sim-probe",
    resources=NodeResources(cpu=1, memory=1),
    drivers={},  # no driver: no task can be placed here
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="API latency probe for podium sim")
    parser.add_argument("address", help="the server's URL (several: comma-separated)")
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    samples: dict[str, list[float]] = {"register": [], "list": [], "get": [], "heartbeat": []}
    errors = 0
    i = 0
    servers = [a.strip() for a in args.address.split(",") if a.strip()]
    at = 0
    client = Client(servers[0], timeout=30.0)
    registered: bool | None = False
    try:
        while not stop.is_set():
            name = f"probe-{i}"
            for op in ("register", "list", "get", "heartbeat"):
                started = time.perf_counter()
                try:
                    if op == "register":
                        client.register_job(JobSpec.model_validate(probe_job(i)))
                    elif op == "list":
                        client.jobs()
                    elif op == "get":
                        client.job(name)
                    elif registered is None:
                        continue  # refused its node (--secure: a node needs a certificate)
                    elif not registered:
                        try:
                            client.register_node(PROBE_NODE)
                        except PodiumError:
                            registered = None
                            continue
                        registered = True
                        continue  # a registration is not a heartbeat
                    else:
                        client.heartbeat(PROBE_NODE.id)
                except ServerUnreachable:
                    errors += 1
                    if len(servers) > 1:
                        client.close()
                        at = (at + 1) % len(servers)
                        client = Client(servers[at], timeout=30.0)
                    continue
                except Exception:
                    errors += 1
                    continue
                samples[op].append((time.perf_counter() - started) * 1000.0)
            if i == 0:
                sys.stdout.write("ready\n")  # the simulation starts its clock after this
                sys.stdout.flush()
            i += 1
            stop.wait(args.interval)
    finally:
        client.close()
    sys.stdout.write(json.dumps({"samples": samples, "errors": errors, "jobs": i}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
