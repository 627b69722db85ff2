"""``podium sim --secure``: the simulated cluster over TLS with ACL on, each agent with its
own certificate (podium.sim.secure).

The small run checks what the simulation reports about itself: every instance placed once
(its invariants), every node's agent connected with a certificate naming that node, and a
caller with neither token nor certificate refused (ACL on, the agent routes guarded).
"""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from podium.cli.main import app
from podium.sim import SimConfig, simulate
from podium.sim.run import _secure_problems
from podium.sim.secure import AgentCerts, issue_agents, server_tls, sim_node_id
from podium.tls.identity import identity_of


def test_secure_simulation_over_tls_with_agent_certificates() -> None:
    res = CliRunner().invoke(
        app,
        ["sim", "--secure", "--nodes", "20", "--jobs", "2", "--count", "10", "--agent-procs", "1"],
    )
    assert res.exit_code == 0, res.output
    f = json.loads(res.stdout.strip().splitlines()[-1])
    assert f["invariants_ok"] is True
    assert f["placements"] == 20 and f["agent_procs"] == 1
    secure = f["secure"]
    # every node's agent connected with the certificate the CA issued to that node
    assert secure["agent_cert_nodes"] == 20
    assert secure["agent_cert_connections"] >= 20
    # the probe (a person with the management token, no certificate) connected too
    assert secure["tls_connections"] > secure["agent_cert_connections"]
    assert f["api_requests"] > 0
    # ACL on: no token, no answer; no certificate, no sync
    assert secure["anonymous_jobs_status"] == 401
    assert secure["certless_sync_status"] == 401


def test_secure_implies_agent_procs_and_refuses_zero() -> None:
    res = CliRunner().invoke(
        app, ["sim", "--secure", "--agent-procs", "0", "--nodes", "2", "--jobs", "1"]
    )
    assert res.exit_code == 2
    assert "--secure needs real sockets" in res.output and "--agent-procs" in res.output
    with pytest.raises(ValueError, match="agent_procs"):
        simulate(SimConfig(nodes=2, jobs=1, count=1, secure=True, agent_procs=0))


def test_agents_get_their_own_certificates(tmp_path: Path) -> None:
    tls = server_tls(tmp_path / "server-tls")
    names = ["sim-00000", "sim-00001", "sim-00002"]
    issue_agents(tls, names, tmp_path / "agents")
    certs = AgentCerts.load(tmp_path / "agents")
    for i, name in enumerate(names):
        pem = tmp_path / "agents" / f"{name}.pem"
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600  # it holds the agent's key
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        cert.verify_directly_issued_by(tls.ca.cert)
        identity = identity_of(cert)
        assert identity is not None and identity.role == "agent"
        assert identity.node_id == sim_node_id(i) == certs.node_id(name)
        assert isinstance(certs.context(name), ssl.SSLContext)
    assert len({sim_node_id(i) for i in range(1000)}) == 1000
    assert not (tmp_path / "agents" / "ca.key").exists()  # the CA key stays with the server


def test_secure_checks_catch_what_they_promise() -> None:
    good = {
        "tls_connections": 21,
        "agent_cert_connections": 20,
        "agent_cert_nodes": 20,
        "anonymous_jobs_status": 401,
        "certless_sync_status": 401,
    }
    assert _secure_problems(good, 20) == []
    assert _secure_problems({**good, "agent_cert_nodes": 19}, 20) == [
        "secure: 19 of 20 nodes connected with their agent certificates"
    ]
    assert _secure_problems({**good, "anonymous_jobs_status": 200}, 20) == [
        "secure: anonymous_jobs_status is 200, not 401"
    ]
    assert _secure_problems({**good, "certless_sync_status": 404}, 20) == [
        "secure: certless_sync_status is 404, not 401"
    ]
