"""Benchmark: what TLS and ACL checks cost per request, beside plain HTTP in the same run.

    python bench/secure_api.py [--requests 2000] [--runs 3]

Three real `podium server` processes on loopback, started side by side: one plain, one with
`--acl` (access control alone, plain HTTP), one with `--secure` (TLS on the API and ACL;
bootstrapped by this script), so the two costs show apart.  Against each, from this
process, it times requests one at a time (p50, p99), in interleaved blocks so drift in the
machine's load falls on both alike:

- sync: what an agent at rest sends, `POST /v1/client/node/{id}/allocations?since=N` (no
  reports, nothing changed since N: the answer is the node's allocation ids and indexes), on a
  kept-alive connection.  Secure: with the node's certificate (issued here from the server's
  CA, as a join would) and its node secret.  This is the path the issue's 15% target is about;
- full sync: the same without ``since`` (an agent starting: every allocation, ~45 KB here),
  where TLS's cost per byte shows;
- read: a person's `GET /v1/jobs` on a kept-alive connection.  Secure: with a management
  token (so the ACL edge resolves a token and checks a capability on every request);
- connect: the sync request on a new connection each time (secure: a full TLS handshake
  with a client certificate), the price of an agent that cannot keep its connection.

The kept-alive figures are measured first, the new-connection one after them (a closed
connection is work a server does after its answer, which would land in the other figures).
Each figure is printed beside the plain server's in the same run, with the ratio.  The
servers' stores hold a few jobs and one node with 20 allocations (a realistic sync answer).
Results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from devagent import PODIUM, free_port

from podium.tls.agent import AgentTLS
from podium.tls.ca import CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority

BLOCK = 50
"""Requests per interleaved block."""
JOBS = 5
ALLOCS = 20


@dataclass
class Target:
    name: str
    base: str
    data: Path
    proc: subprocess.Popen[bytes]
    verify: ssl.SSLContext | bool = True
    agent_ctx: ssl.SSLContext | bool = True
    headers: dict[str, str] = field(default_factory=dict)
    node_headers: dict[str, str] = field(default_factory=dict)
    node_id: str = ""
    since: int = 0


MODES = ("plain", "acl", "secure")


def start_server(mode: str) -> Target:
    secure = mode == "secure"
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="podium-bench-secure-"))
    args = [str(PODIUM), "server", "--data-dir", str(data), "--http-addr", f"127.0.0.1:{port}"]
    args += ["--log-level", "warning", "--dns-addr", "off", "--audit-log", "off"]
    if mode != "plain":
        args.append(f"--{mode}")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
    scheme = "https" if secure else "http"
    target = Target(mode, f"{scheme}://127.0.0.1:{port}", data, proc)
    tls_dir = data / "server" / "tls"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"podium server exited with {proc.returncode}")
        try:
            if secure:
                target.verify = ssl.create_default_context(cafile=str(tls_dir / CA_CERT_FILE))
            httpx.get(f"{target.base}/v1/status", verify=target.verify, timeout=2)
            break
        except (httpx.HTTPError, OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise SystemExit("podium server did not answer within 60 s") from None
            time.sleep(0.1)
    return target


def prepare(target: Target) -> None:
    """A node with a certificate (secure) and a node secret, a few jobs, a management token."""
    node_id = str(uuid.uuid4())
    target.node_id = node_id
    if target.name != "plain":
        target.headers = {"X-Podium-Token": bootstrap(target)}
    if target.name == "secure":
        ca = CertificateAuthority.load(
            target.data / "server" / "tls" / CA_CERT_FILE,
            target.data / "server" / "tls" / CA_KEY_FILE,
        )
        key, csr = AgentTLS.new_request("bench-node")
        issued = ca.issue_agent(csr, node_id, "bench-node")
        agent_dir = target.data / "bench-agent"
        AgentTLS.store(agent_dir, key, issued.cert_pem, ca.cert_pem)
        agent = AgentTLS(agent_dir)
        target.agent_ctx = agent.client_context
    else:
        target.agent_ctx = target.verify
    node = {
        "id": node_id,
        "name": "bench-node",
        "resources": {"cpu": 100_000, "memory": 100_000},
        "drivers": {"mock": {"detected": True, "healthy": True}},
    }
    with httpx.Client(base_url=target.base, verify=target.agent_ctx, timeout=10) as http:
        r = http.put("/v1/node/register", json=node, headers=target.headers)
        r.raise_for_status()
        secret = r.json().get("node_secret")
        if secret:
            target.node_headers = {"X-Podium-Node-Secret": secret}
    with httpx.Client(base_url=target.base, verify=target.verify, timeout=10) as http:
        for j in range(JOBS):
            spec = {
                "job": f"bench-{j}",
                "groups": {
                    "g": {
                        "count": ALLOCS // JOBS,
                        "tasks": {"t": {"driver": "mock", "config": {"run_for": "1h"}}},
                    }
                },
            }
            http.post("/v1/jobs", json={"job": spec}, headers=target.headers).raise_for_status()
        deadline = time.monotonic() + 30
        while (
            len(http.get(f"/v1/node/{node_id}/allocations", headers=target.headers).json()) < ALLOCS
        ):
            if time.monotonic() > deadline:
                raise SystemExit(f"{target.name}: the {ALLOCS} allocations were not placed")
            time.sleep(0.05)


def bootstrap(target: Target) -> str:
    r = httpx.post(f"{target.base}/v1/acl/bootstrap", verify=target.verify, timeout=10)
    r.raise_for_status()
    return str(r.json()["secret_id"])


def timed(fn: Callable[..., httpx.Response], *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    r = fn(*args, **kwargs)
    elapsed = time.perf_counter() - start
    if r.status_code != 200:
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:200]}")
    return elapsed


@contextlib.contextmanager
def clients(target: Target) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        httpx.Client(base_url=target.base, verify=target.agent_ctx, timeout=10) as agent,
        httpx.Client(base_url=target.base, verify=target.verify, timeout=10) as person,
    ):
        yield agent, person


def measure(targets: list[Target], requests: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {
        t.name: {"sync": [], "full": [], "read": [], "connect": []} for t in targets
    }
    body = {"updates": [], "have": []}
    with contextlib.ExitStack() as stack:
        open_clients = {t.name: stack.enter_context(clients(t)) for t in targets}
        for t in targets:  # warm: connections, the servers' code paths
            agent, person = open_clients[t.name]
            first = agent.post(sync_path(t), json=body, headers=t.node_headers)
            first.raise_for_status()
            t.since = int(first.json()["index"])
            for _ in range(50):
                timed(agent.post, sync_path(t), json=body, headers=t.node_headers)
                timed(person.get, "/v1/jobs", headers=t.headers)
        for _ in range(max(1, requests // BLOCK)):
            for t in targets:
                agent, person = open_clients[t.name]
                # the node stays up (a silent one is marked down after 20 s, and its
                # allocations are then lost and replaced: not a node at rest)
                agent.put(f"/v1/node/{t.node_id}/heartbeat", headers=t.node_headers)
                path, delta = sync_path(t), f"{sync_path(t)}?since={t.since}"
                sync, full = out[t.name]["sync"], out[t.name]["full"]
                read = out[t.name]["read"]
                for _ in range(BLOCK):
                    sync.append(timed(agent.post, delta, json=body, headers=t.node_headers))
                for _ in range(BLOCK // 5):
                    full.append(timed(agent.post, path, json=body, headers=t.node_headers))
                for _ in range(BLOCK):
                    read.append(timed(person.get, "/v1/jobs", headers=t.headers))
        # New connections apart: closing them is work a server does after the answer,
        # which would land in the next block's kept-alive figures.
        for _ in range(max(1, requests // BLOCK)):
            for t in targets:
                delta = f"{sync_path(t)}?since={t.since}"
                open_clients[t.name][0].put(
                    f"/v1/node/{t.node_id}/heartbeat", headers=t.node_headers
                )
                for _ in range(BLOCK // 10):
                    with httpx.Client(base_url=t.base, verify=t.agent_ctx, timeout=10) as fresh:
                        out[t.name]["connect"].append(
                            timed(fresh.post, delta, json=body, headers=t.node_headers)
                        )
    return out


def sync_path(t: Target) -> str:
    return f"/v1/client/node/{t.node_id}/allocations"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stop(target: Target) -> None:
    if target.proc.poll() is None:
        target.proc.terminate()
        try:
            target.proc.wait(20)
        except subprocess.TimeoutExpired:
            target.proc.kill()
            target.proc.wait(5)
    shutil.rmtree(target.data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--requests", type=int, default=2000, help="per figure, per server, per run"
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {platform.machine()} ({cpu}), {os.cpu_count()} cpus, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )
    figures = ("sync", "full", "read", "connect")
    per_run: dict[str, dict[str, list[tuple[float, float]]]] = {
        n: {f: [] for f in figures} for n in MODES
    }
    for run in range(1, args.runs + 1):
        targets = [start_server(mode) for mode in MODES]
        try:
            for t in targets:
                prepare(t)
            got = measure(targets, args.requests)
        finally:
            for t in targets:
                stop(t)
        line = [f"run {run}:"]
        for f in figures:
            for n in MODES:
                per_run[n][f].append((pct(got[n][f], 0.5), pct(got[n][f], 0.99)))
            p50 = [per_run[n][f][-1][0] * 1e3 for n in MODES]
            line.append(f"{f} p50 " + "/".join(f"{v:.2f}" for v in p50) + " ms")
        print("  ".join(line), flush=True)

    print(
        f"\nmedian of {args.runs} runs: plain | acl (plain HTTP + ACL) | secure (TLS + ACL); "
        "ratios to plain (median of the runs' ratios)"
    )
    for f, what in (
        ("sync", "agent sync at rest, kept-alive"),
        ("full", "agent full sync (20 allocs), kept-alive"),
        ("read", "GET /v1/jobs, kept-alive"),
        ("connect", "agent sync at rest, new connection each"),
    ):
        for i, q in ((0, "p50"), (1, "p99")):
            med = {n: statistics.median(r[i] for r in per_run[n][f]) for n in MODES}
            ratio = {
                n: statistics.median(
                    x[i] / p[i] for x, p in zip(per_run[n][f], per_run["plain"][f], strict=True)
                )
                for n in ("acl", "secure")
            }
            print(
                f"  {what:40} {q}: {med['plain'] * 1e3:6.2f} | {med['acl'] * 1e3:6.2f} "
                f"({(ratio['acl'] - 1) * 100:+.0f}%) | {med['secure'] * 1e3:6.2f} ms "
                f"({(ratio['secure'] - 1) * 100:+.0f}%)"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
