"""End to end: a real HTTP server task, its http check, the catalog and DNS."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.e2e.conftest import DevAgent, as_json, free_port, wait_until, write_job

WEB = f"""
job: site
groups:
  g:
    network: {{ports: {{http: {{}}}}}}
    services:
      - name: site
        port: http
        tags: [v1]
        checks:
          - {{name: root, type: http, path: /, interval: 300ms, timeout: 300ms}}
    tasks:
      web:
        driver: raw_exec
        config:
          command: {sys.executable}
          args: ["-m", "http.server", "${{PODIUM_PORT_http}}", "--bind", "127.0.0.1"]
"""


@pytest.fixture
def dns_agent(tmp_path: Path) -> Iterator[tuple[DevAgent, int]]:
    dns_port = free_port()
    agent = DevAgent(
        addr=f"http://127.0.0.1:{free_port()}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "agent.log",
        extra_args=["--dns-addr", f"127.0.0.1:{dns_port}"],
    )
    try:
        agent.start()
        yield agent, dns_port
    finally:
        agent.cleanup()


def dig(port: int, name: str, qtype: str) -> DNSRecord:
    raw = DNSRecord.question(name, qtype).send("127.0.0.1", port, timeout=2)
    return DNSRecord.parse(raw)


def test_http_checked_service_in_catalog_and_dns(
    dns_agent: tuple[DevAgent, int], tmp_path: Path
) -> None:
    agent, dns_port = dns_agent
    agent.cli("job", "run", "--detach", write_job(tmp_path, WEB), check=True)
    (alloc,) = agent.wait_running("site", 1)
    port = wait_until(lambda: agent.allocs("site")[0]["ports"]["http"]["value"], what="a port")

    def healthy() -> list[dict[str, Any]]:
        found = as_json(agent.cli("service", "info", "site", "-o", "json", check=True))
        return [i for i in found if i["healthy"]]

    (instance,) = wait_until(healthy, timeout=15, what="a healthy instance of site")
    assert (instance["alloc_id"], instance["port"]) == (alloc["id"], port)
    assert (instance["address"], instance["tags"]) == ("127.0.0.1", ["v1"])
    assert instance["checks"]["root"]["status"] == "passing"

    table = agent.cli("service", "info", "site", check=True).stdout
    assert f"127.0.0.1:{port}" in table and "healthy" in table and "root: passing" in table
    listed = agent.cli("service", "list", check=True).stdout
    assert listed.splitlines()[1].split() == ["site", "1", "1", "v1"]

    srv = dig(dns_port, "site.service.podium", "SRV")
    assert [rr.rdata.port for rr in srv.rr] == [port]
    assert [str(rr.rdata) for rr in srv.ar if rr.rtype == QTYPE.A] == ["127.0.0.1"]
    a = dig(dns_port, "site.service.podium", "A")
    assert [str(rr.rdata) for rr in a.rr] == ["127.0.0.1"]

    agent.cli("job", "stop", "site", check=True)
    gone = agent.cli("service", "info", "site", "-o", "json")  # left the catalog with its job
    assert gone.returncode == 1 and json.loads(gone.stderr)["error"]["kind"] == "not_found"
    assert dig(dns_port, "site.service.podium", "SRV").header.rcode == RCODE.NXDOMAIN
