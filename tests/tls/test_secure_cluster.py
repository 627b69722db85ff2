"""A secure cluster of real processes: `podium server --secure`, agents that join it with a
join token, and the ways in that must stay shut."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from podium.tls.ca import CertificateAuthority, key_pem, make_csr, new_key
from podium.tls.token import parse_token
from tests.e2e.conftest import PODIUM, wait_until, write_job
from tests.tls.conftest import SecureCluster

Make = Callable[..., SecureCluster]

SLEEPER = """
job: {name}
groups:
  g:
    count: 1
    tasks:
      t:
        driver: raw_exec
        config: {{command: /bin/sh, args: ["-c", "echo hello-tls; while true; do sleep 0.2; done"]}}
        resources: {{cpu: 50, memory: 32}}
"""

FAILURES = (
    "allocation sync failed",
    "cannot reach server",
    "cannot report allocation states",
    "cannot renew",
)


def run_sleeper(c: SecureCluster, tmp_path: Path, name: str) -> dict[str, object]:
    path = write_job(tmp_path, SLEEPER.format(name=name), f"{name}.yaml")
    c.cli("job", "run", path, check=True)
    return next(iter(wait_until(lambda: c.running(name), timeout=30, what=f"{name} running")))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_agent_joins_with_the_token_runs_a_task_and_keeps_its_certificate(
    secure_cluster: Make, tmp_path: Path
) -> None:
    c = secure_cluster()
    shown = c.cli("join-token", "agent", check=True).stdout
    token = c.token()
    assert f"--servers {c.addr} --join-token {token}" in shown
    assert (
        parse_token(token).fingerprint
        == CertificateAuthority.load(c.ca, c.ca.with_name("ca.key")).fingerprint
    )

    c.start_agent("a1", "--join-token", token)
    (node,) = c.get("/v1/nodes")
    assert node["name"] == "a1" and node["status"] == "ready"
    assert node["http_addr"].startswith("https://127.0.0.1:")
    tls_dir = c.agent_dir("a1") / "agent" / "tls"
    for name in ("agent.key", "agent.crt", "ca.crt"):
        assert mode(tls_dir / name) == 0o600, name
    assert mode(c.ca.with_name("ca.key")) == 0o600
    assert mode(c.ca.with_name("join.key")) == 0o600
    assert "ca.key" not in os.listdir(tls_dir)

    alloc = run_sleeper(c, tmp_path, "web")
    # logs: the server reaches the agent's endpoint over TLS, verified as that node
    logs = c.cli("alloc", "logs", str(alloc["id"])[:8], check=True).stdout
    assert "hello-tls" in logs

    # a rotated token refuses new joins, not the agents that joined: restarted without any
    # token, a1 comes back with the certificate it keeps, and its task was never restarted
    c.cli("join-token", "agent", "--rotate", check=True)
    assert c.token() != token
    c.stop_agent("a1")
    c.start_agent("a1")
    (again,) = c.running("web")
    assert again["id"] == alloc["id"]
    assert again["task_states"]["t"]["restarts"] == 0
    assert again["task_states"]["t"]["pid"] == alloc["task_states"]["t"]["pid"]  # type: ignore[index]


def test_no_token_a_rotated_token_a_wrong_fingerprint_or_another_ca_cannot_join_or_sync(
    secure_cluster: Make,
) -> None:
    c = secure_cluster()
    token = c.token()

    log = c.failed_agent("none")
    assert "this agent has no certificate yet: join with --join-token" in log

    other = CertificateAuthority.create()
    forged = f"PDM-1-{other.fingerprint}-{parse_token(token).secret}"
    log = c.failed_agent("forged", "--join-token", forged)
    assert "is not the one the join token pins" in log
    assert not (c.agent_dir("forged") / "agent" / "tls" / "agent.crt").exists()

    c.cli("join-token", "agent", "--rotate", check=True)
    log = c.failed_agent("stale", "--join-token", token)
    assert "not this cluster's current one" in log
    assert not (c.agent_dir("stale") / "agent" / "tls" / "agent.crt").exists()
    assert c.get("/v1/nodes") == []

    c.start_agent("good", "--join-token", c.token())
    (node,) = c.get("/v1/nodes")
    sync = f"/v1/client/node/{node['id']}/allocations"

    # no client certificate: refused with a JSON error that says what is needed
    with c.http() as h:
        r = h.get(sync)
    assert r.status_code == 401 and "join the cluster" in r.json()["error"]

    # a certificate from another CA: the handshake itself fails
    key = new_key()
    foreign = other.issue_agent(make_csr(key, "good"), node["id"], "good")
    cert_file, key_file = c.tmp / "foreign.crt", c.tmp / "foreign.key"
    cert_file.write_bytes(foreign.cert_pem)
    key_file.write_bytes(key_pem(key))
    with pytest.raises(httpx.TransportError), c.http(cert=(str(cert_file), str(key_file))) as h:
        h.get(sync).raise_for_status()

    # this cluster's certificate of one node cannot act for another
    tls_dir = c.agent_dir("good") / "agent" / "tls"
    own = (str(tls_dir / "agent.crt"), str(tls_dir / "agent.key"))
    with c.http(cert=own) as h:
        # the certificate passes the TLS guard; the node's routes still need its secret,
        # which only the agent holds (a stolen key alone does not speak for the node)
        r = h.get(sync)
        assert r.status_code == 401 and "X-Podium-Node-Secret" in r.json()["error"], r.text
        r = h.get("/v1/client/node/00000000-0000-0000-0000-000000000000/allocations")
        assert r.status_code == 403 and "cannot act for node" in r.json()["error"]
        r = h.put("/v1/node/00000000-0000-0000-0000-000000000000/heartbeat")
        assert r.status_code == 403


def test_plain_http_to_the_tls_port_gets_a_clear_refusal(secure_cluster: Make) -> None:
    c = secure_cluster()
    plain = c.addr.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/v1/jobs", timeout=10)
    out = c.cli("node", "status", "--address", plain)
    assert out.returncode == 1
    assert f"speaks TLS: use {c.addr}" in out.stderr, out.stderr

    # https without the cluster's CA: the certificate is not trusted, and the error says
    # how to give the CA
    assert c.cli("node", "status", "--address", c.addr).returncode == 0
    untrusted = subprocess.run(
        [*PODIUM, "node", "status", "--address", c.addr],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PODIUM_CACERT"},
    )
    assert untrusted.returncode == 1
    assert "--ca-cert" in untrusted.stderr and "PODIUM_CACERT" in untrusted.stderr


def test_certificates_renew_repeatedly_under_a_running_job_without_restarts(
    secure_cluster: Make, tmp_path: Path
) -> None:
    c = secure_cluster(cert_ttl="10s")
    c.start_agent("a1", "--join-token", c.token())
    alloc = run_sleeper(c, tmp_path, "steady")
    first_serial = (c.agent_dir("a1") / "agent" / "tls" / "agent.crt").read_bytes()

    def renewed() -> bool:
        agent = c.log_count("a1", "renewed this agent's certificate")
        server = int(c.get("/v1/operator/tls")["server_renewals"])
        return agent >= 3 and server >= 3

    wait_until(renewed, timeout=180, interval=0.5, what="three renewals of each certificate")
    assert (c.agent_dir("a1") / "agent" / "tls" / "agent.crt").read_bytes() != first_serial
    (now,) = c.running("steady")
    assert now["id"] == alloc["id"]
    assert now["task_states"]["t"]["restarts"] == 0
    assert now["task_states"]["t"]["pid"] == alloc["task_states"]["t"]["pid"]  # type: ignore[index]
    for text in FAILURES:
        assert c.log_count("a1", text) == 0, f"{text!r} in the agent's log:\n{c.log('a1')}"
    # the renewed certificates serve: the server reaches the agent, the CLI the server
    assert "hello-tls" in c.cli("alloc", "logs", str(alloc["id"])[:8], check=True).stdout
