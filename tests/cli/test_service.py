"""``podium service list|info`` against the scripted fake server."""

from __future__ import annotations

import json
from typing import Any

from podium.models import CheckResult, CheckStatus, ServiceRegistration, ServiceSummary

from .conftest import Invoke
from .fakes import ALLOC_A, ALLOC_B, NODE_ID, FakeServer


def reg(alloc_id: str, port: int, healthy: bool, **kw: Any) -> ServiceRegistration:
    return ServiceRegistration(
        id=f"{alloc_id}/web",
        service_name="web",
        job_id="web",
        group="web",
        alloc_id=alloc_id,
        node_id=NODE_ID,
        address="10.0.0.5",
        port=port,
        tags=["v1", "blue"],
        healthy=healthy,
        **kw,
    )


def test_list(cli: Invoke, fake: FakeServer) -> None:
    fake.on(
        "GET",
        "/v1/services",
        [
            ServiceSummary(name="db", instances=1, healthy=0),
            ServiceSummary(name="web", instances=2, healthy=2, tags=["blue", "v1"]),
        ],
    )
    result = cli("service", "list")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert lines[0] == ["Service", "Instances", "Healthy", "Tags"]
    assert lines[1] == ["db", "1", "0", "-"]
    assert lines[2] == ["web", "2", "2", "blue,", "v1"]


def test_list_empty_and_json(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/services", [])
    assert "No services." in cli("service", "list").output
    assert json.loads(cli("service", "list", "-o", "json").stdout) == []


def test_info_shows_instances_with_health_and_checks(cli: Invoke, fake: FakeServer) -> None:
    bad = CheckResult(
        name="alive", service="web", status=CheckStatus.CRITICAL, output="HTTP 500\nboom"
    )
    good = CheckResult(name="alive", service="web", status=CheckStatus.PASSING)
    fake.on(
        "GET",
        "/v1/service/web",
        [
            reg(ALLOC_B, 23002, False, checks={"alive": bad}),
            reg(ALLOC_A, 23001, True, checks={"alive": good}),
        ],
    )
    result = cli("service", "info", "web")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["Alloc", "ID", "Node", "ID", "Address", "Tags", "Health", "Checks"]
    # healthy instances first
    assert lines[1].split() == [
        ALLOC_A[:8],
        NODE_ID[:8],
        "10.0.0.5:23001",
        "v1,",
        "blue",
        "healthy",
        "alive:",
        "passing",
    ]
    assert lines[2].split()[:6] == [
        ALLOC_B[:8],
        NODE_ID[:8],
        "10.0.0.5:23002",
        "v1,",
        "blue",
        "unhealthy",
    ]
    assert "alive: critical (HTTP 500)" in lines[2]
    assert "healthy" not in fake.calls("GET", "/v1/service/web")[0].url.params


def test_info_healthy_only_and_json(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/service/web", [reg(ALLOC_A, 23001, True)])
    result = cli("service", "info", "web", "--healthy", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["alloc_id"] == ALLOC_A
    assert fake.calls("GET", "/v1/service/web")[0].url.params["healthy"] == "true"


def test_info_of_an_unknown_service_is_an_error(cli: Invoke, fake: FakeServer) -> None:
    fake.on("GET", "/v1/service/nope", [])
    result = cli("service", "info", "nope")
    assert result.exit_code == 1
    assert "Error: service 'nope' is not in the catalog" in result.stderr
    assert result.stdout == ""
    as_json = cli("service", "info", "nope", "-o", "json")
    assert as_json.exit_code == 1 and as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert error["kind"] == "not_found" and error["exit_code"] == 1
    assert cli("service", "info", "nope", "--healthy").exit_code == 1


def test_info_of_a_service_with_no_healthy_instance(cli: Invoke, fake: FakeServer) -> None:
    # the --healthy query answers nothing; the catalog still holds the service
    fake.on("GET", "/v1/service/web", [], [reg(ALLOC_A, 23001, False)])
    result = cli("service", "info", "web", "--healthy")
    assert result.exit_code == 0, result.output
    assert "No healthy instances of service 'web'." in result.output


# -- the DNS address option of `podium agent` and `podium server` ---------------------


class _Config:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _fake_runtime(monkeypatch: Any) -> list[Any]:
    import sys
    import types

    ran: list[Any] = []
    mod = types.ModuleType("podium.runtime")
    mod.AgentConfig = _Config  # type: ignore[attr-defined]
    mod.run_agent = lambda config: ran.append(config) or 0  # type: ignore[attr-defined]
    mod.run_server = lambda config: ran.append(config) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "podium.runtime", mod)
    return ran


def test_dns_addr_option(cli: Invoke, monkeypatch: Any) -> None:
    ran = _fake_runtime(monkeypatch)
    assert cli("agent", "--dev", "--dns-addr", "127.0.0.1:5353").exit_code == 0
    assert cli("agent", "--dev", "--dns-addr", "off").exit_code == 0
    assert cli("server", "--data-dir", "/tmp/x", "--dns-addr", "").exit_code == 0
    assert cli("agent", "--dev").exit_code == 0
    assert [getattr(c, "dns_addr", None) for c in ran] == ["127.0.0.1:5353", "", "", None]
    bad = cli("agent", "--dev", "--dns-addr", "7653")
    assert bad.exit_code == 2 and "--dns-addr" in bad.stderr
