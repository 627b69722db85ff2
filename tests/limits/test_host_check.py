"""The Host header check against a real ``podium server`` (issue 14, DNS rebinding): while
ACLs are off, a request for a host that is not one of the server's names is answered 421
and changes nothing; its own names, loopback, --allowed-hosts, the CLI and agents pass."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx

from tests.e2e.conftest import PODIUM, DevAgent, free_port
from tests.limits.realserver import job, real_server


def test_a_foreign_host_is_refused_while_acls_are_off(tmp_path: Path) -> None:
    with (
        real_server(tmp_path) as server,
        httpx.Client(base_url=server.addr, timeout=30) as c,
    ):
        r = c.post("/v1/jobs", json=job(1), headers={"Host": "rebound.example.com"})
        assert r.status_code == 421, r.text
        assert "does not answer to the host 'rebound.example.com'" in r.json()["error"]
        assert "--allowed-hosts" in r.json()["error"]
        r = c.get("/v1/status", headers={"Host": f"attacker.test:{server.port}"})
        assert r.status_code == 421
        assert c.get("/v1/jobs").json() == []
        for host in (
            f"127.0.0.1:{server.port}",
            f"localhost:{server.port}",
            "LOCALHOST",
            f"[::1]:{server.port}",
            socket.gethostname(),
        ):
            assert c.get("/v1/status", headers={"Host": host}).status_code == 200, host
        # the CLI sends the Host of the URL it dials
        env = {**os.environ, "PODIUM_ADDR": f"http://localhost:{server.port}", "NO_COLOR": "1"}
        out = subprocess.run(
            [*PODIUM, "node", "status"], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr


def test_allowed_hosts_adds_names(tmp_path: Path) -> None:
    with (
        real_server(tmp_path, "--allowed-hosts", "podium.internal,lb.example") as server,
        httpx.Client(base_url=server.addr, timeout=30) as c,
    ):
        for host in ("podium.internal", f"lb.example:{server.port}"):
            assert c.get("/v1/status", headers={"Host": host}).status_code == 200
        assert c.get("/v1/status", headers={"Host": "other.example"}).status_code == 421


def test_with_acls_on_the_token_decides(tmp_path: Path) -> None:
    """A rebound page has no token: with --acl the Host is not what guards the API."""
    with (
        real_server(tmp_path, "--acl") as server,
        httpx.Client(base_url=server.addr, timeout=30) as c,
    ):
        r = c.get("/v1/jobs", headers={"Host": "rebound.example.com"})
        assert r.status_code in (401, 403), r.text


def test_the_agents_endpoint_checks_the_host_too(tmp_path: Path) -> None:
    """The agent's plain-HTTP endpoint serves task logs: a rebound page must not read them.
    The name the server dials (the advertised address) passes."""
    dev_agent = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "agent.log",
    )
    try:
        dev_agent.start()
        _check_agent_host(dev_agent)
    finally:
        dev_agent.cleanup()


def _check_agent_host(dev_agent: DevAgent) -> None:
    node = dev_agent.get("/v1/nodes")[0]
    agent = dev_agent.get(f"/v1/node/{node['id']}")["http_addr"]
    path = f"{agent}/v1/client/allocation/nope/logs?task=t"
    r = httpx.get(path, headers={"Host": "rebound.example.com"}, timeout=10)
    assert r.status_code == 421, r.text
    r = httpx.get(path, timeout=10)  # its own address: past the check, to the route
    assert r.status_code == 404, r.text
