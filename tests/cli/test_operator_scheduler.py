"""``podium operator scheduler get-config/set-config`` and the preemptions ``job plan``
prints, against a real server in this process (its API through an in-memory transport)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podium.cli import common
from podium.client import Client
from podium.models import EvalStatus
from podium.scheduler.harness import make_job, make_node
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore

from .conftest import Invoke
from .test_job_plan import InProcessTransport

URGENT = """\
job: urgent
priority: 80
groups:
  urgent:
    tasks:
      main:
        driver: mock
        config:
          run_for: 1h
        resources:
          cpu: 500
          memory: 64
"""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Server:
    srv = Server(StateStore(), clock=lambda: 1000.0)
    transport = InProcessTransport(create_app(srv))
    monkeypatch.setattr(
        common, "client_factory", lambda address: Client(address, transport=transport)
    )
    return srv


def test_get_config_shows_the_defaults(cli: Invoke, server: Server) -> None:
    result = cli("operator", "scheduler", "get-config")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split() == ["system", "enabled"] for line in lines)
    assert any(line.split() == ["service", "disabled"] for line in lines)
    assert any(line.split() == ["batch", "disabled"] for line in lines)
    assert "never set" in result.output


def test_set_config_then_get_config(cli: Invoke, server: Server) -> None:
    result = cli("operator", "scheduler", "set-config", "--preempt", "service,system")
    assert result.exit_code == 0, result.output
    assert server.store.scheduler_config().preemption_config.types() == ["service", "system"]
    got = cli("operator", "scheduler", "get-config", "-o", "json")
    assert got.exit_code == 0, got.output
    data = json.loads(got.output)
    assert data["preemption_config"] == {
        "system_scheduler_enabled": True,
        "service_scheduler_enabled": True,
        "batch_scheduler_enabled": False,
    }
    index = data["modify_index"]
    off = cli(
        "operator", "scheduler", "set-config", "--preempt", "none", "--check-index", str(index)
    )
    assert off.exit_code == 0, off.output
    assert server.store.scheduler_config().preemption_config.types() == []


def test_set_config_refuses_bad_input_and_changes_nothing(cli: Invoke, server: Server) -> None:
    before = server.store.scheduler_config()
    bad = cli("operator", "scheduler", "set-config", "--preempt", "service,gpu")
    assert bad.exit_code == 2
    assert "gpu" in bad.output and "service, batch, system" in bad.output
    stale = cli("operator", "scheduler", "set-config", "--preempt", "batch", "--check-index", "7")
    assert stale.exit_code != 0
    assert "index" in stale.output
    assert server.store.scheduler_config() == before


def test_job_plan_prints_preemptions(cli: Invoke, server: Server, tmp_path: Path) -> None:
    server.register_node(make_node("a", cpu=1000, memory=4096))
    assert cli("operator", "scheduler", "set-config", "--preempt", "service").exit_code == 0
    server.register_job(make_job("low", priority=20, count=4, cpu=250, memory=64))
    for ev in list(server.store.evaluations()):
        if ev.status == EvalStatus.PENDING:
            server.process_eval(ev)
    path = tmp_path / "urgent.yaml"
    path.write_text(URGENT)
    result = cli("job", "plan", str(path))
    assert result.exit_code == 1, result.output  # it would create allocations
    assert "Preemptions: 2 allocations of lower-priority jobs would be stopped" in result.output
    assert result.output.count("(job 'low', priority 20;") == 2
    data = json.loads(cli("job", "plan", str(path), "-o", "json").output)
    assert [p["job_id"] for p in data["preemptions"]] == ["low", "low"]
    assert not any(a.preempted_by_alloc for a in server.store.allocs_by_job("low"))
