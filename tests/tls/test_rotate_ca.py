"""`podium tls rotate-ca` on real processes: a secure server and an agent running a task
move to a new CA without a restart, a dropped task or a failed sync; afterwards the old CA
is trusted nowhere and the old join token joins nothing."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from podium.tls.ca import fingerprint
from podium.tls.token import parse_token
from tests.e2e.conftest import wait_until
from tests.tls.conftest import SecureCluster
from tests.tls.test_secure_cluster import FAILURES, run_sleeper

Make = Callable[..., SecureCluster]


def cas(path: Path) -> list[str]:
    return [fingerprint(c) for c in x509.load_pem_x509_certificates(path.read_bytes())]


def issuer(cert: Path, ca_file: Path) -> str:
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    for ca in x509.load_pem_x509_certificates(ca_file.read_bytes()):
        if ca.subject == leaf.issuer:
            return fingerprint(ca)
    return ""


def test_rotate_ca_moves_server_and_agent_to_a_new_ca_without_a_restart(
    secure_cluster: Make, tmp_path: Path
) -> None:
    c = secure_cluster()
    old_token = c.token()
    (old_ca,) = cas(c.ca)
    c.start_agent("a1", "--join-token", old_token)
    alloc = run_sleeper(c, tmp_path, "steady")
    tls_dir = c.agent_dir("a1") / "agent" / "tls"
    assert issuer(tls_dir / "agent.crt", tls_dir / "ca.crt") == old_ca
    # a certificate the old CA issued, kept to knock with afterwards
    shutil.copy(tls_dir / "agent.crt", tmp_path / "old-agent.crt")
    shutil.copy(tls_dir / "agent.key", tmp_path / "old-agent.key")

    out = c.cli("tls", "rotate-ca", "--timeout", "3m", check=True, timeout=240).stdout
    assert "phase trust" in out and "done: only CA" in out, out

    info = c.get("/v1/operator/tls")
    new_ca = info["ca_fingerprint"]
    assert new_ca != old_ca and info["rotation"] is None
    assert info["ca_trusted"] == [new_ca]
    assert cas(c.ca) == [new_ca]  # the file clients trust
    (agent,) = info["agents"]
    assert agent["name"] == "a1" and agent["ca_fingerprint"] == new_ca
    # the agent holds a certificate from the new CA and trusts only it
    wait_until(lambda: cas(tls_dir / "ca.crt") == [new_ca], timeout=30, what="a1 to drop the CA")
    assert issuer(tls_dir / "agent.crt", tls_dir / "ca.crt") == new_ca
    shown = c.cli("tls", "info", check=True).stdout
    assert "rotation" not in shown and f"{new_ca[:16]}… (signing)" in shown, shown

    # the old CA's certificate is refused at the handshake
    (node,) = c.get("/v1/nodes")
    sync = f"/v1/client/node/{node['id']}/allocations"
    old_cert = (str(tmp_path / "old-agent.crt"), str(tmp_path / "old-agent.key"))
    with pytest.raises(httpx.TransportError), c.http(cert=old_cert) as h:
        h.get(sync).raise_for_status()
    own = (str(tls_dir / "agent.crt"), str(tls_dir / "agent.key"))
    with c.http(cert=own) as h:
        # the new certificate passes the handshake and the TLS guard; the node's routes then
        # ask for its node secret (which only the agent holds)
        r = h.get(sync)
        assert r.status_code == 401 and "X-Podium-Node-Secret" in r.json()["error"], r.text

    # the task never restarted, no sync failed, and the relay reaches the agent
    (now,) = c.running("steady")
    assert now["id"] == alloc["id"]
    assert now["task_states"]["t"]["restarts"] == 0
    assert now["task_states"]["t"]["pid"] == alloc["task_states"]["t"]["pid"]  # type: ignore[index]
    for text in FAILURES:
        assert c.log_count("a1", text) == 0, f"{text!r} in the agent's log:\n{c.log('a1')}"
    assert "hello-tls" in c.cli("alloc", "logs", str(alloc["id"])[:8], check=True).stdout

    # join tokens pin the new CA; the old token joins nothing (the agent refuses the CA it
    # is shown, and the server refuses the token's fingerprint)
    new_token = c.token()
    assert parse_token(new_token).fingerprint == new_ca
    assert parse_token(new_token).secret == parse_token(old_token).secret
    log = c.failed_agent("late", "--join-token", old_token)
    assert "is not the one the join token pins" in log
    with c.http() as h:
        r = h.post(
            "/v1/agent/join",
            json={
                "secret": parse_token(old_token).secret,
                "csr": "x",
                "node_id": "n-late",
                "name": "late",
                "ca_fingerprint": old_ca,
            },
        )
    assert r.status_code == 401 and "rotate-ca" in r.json()["error"]
    c.start_agent("a2", "--join-token", new_token)
    assert {n["name"] for n in c.get("/v1/nodes")} == {"a1", "a2"}

    # a second rotation while none is in progress works the same way (state was cleaned)
    out = c.cli("tls", "rotate-ca", "--timeout", "3m", check=True, timeout=240).stdout
    assert "done: only CA" in out
    assert c.running("steady")[0]["task_states"]["t"]["restarts"] == 0
    for name in ("a1", "a2"):
        for text in FAILURES:
            assert c.log_count(name, text) == 0, f"{text!r} in {name}'s log:\n{c.log(name)}"


def test_rotate_ca_on_a_dev_agent_moves_its_in_process_agent(tmp_path: Path) -> None:
    """`podium agent --dev --secure`: the agent beside the server follows the rotation through
    calls in the process (no HTTP), and is counted like any other."""
    c = SecureCluster(tmp_path, None)
    c.server = c._spawn(
        [
            "agent",
            "--dev",
            "--secure",
            "--data-dir",
            str(tmp_path / "server"),
            "--http-addr",
            f"127.0.0.1:{c.port}",
            "--dns-addr",
            "off",
        ],
        tmp_path / "server.log",
    )
    try:
        wait_until(lambda: c.ca.exists() and c.get("/v1/agent/ca"), timeout=30, what="dev agent")
        c.bootstrap_acl()
        wait_until(lambda: c.get("/v1/nodes"), timeout=30, what="the dev agent's node")
        (old,) = cas(c.ca)
        out = c.cli("tls", "rotate-ca", "--timeout", "2m", check=True, timeout=180).stdout
        assert "phase trust: 0/1" in out and "done: only CA" in out, out
        info = c.get("/v1/operator/tls")
        (agent,) = info["agents"]
        assert agent["ca_fingerprint"] == info["ca_fingerprint"] != old
        agent_tls = tmp_path / "server" / "agent" / "tls"
        wait_until(lambda: cas(agent_tls / "ca.crt") == [info["ca_fingerprint"]], what="drop")
        assert c.log_count("server", "cannot") == 0, c.log("server")
        assert c.get("/v1/nodes")[0]["status"] == "ready"
    finally:
        c.cleanup()
