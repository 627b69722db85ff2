"""``podium deployment list|status|promote|fail`` against a real server in this process.

The server is not started: the test runs evaluations and plays the agent
(``client_update`` with task states and health) by hand, so every state is
reached without sleeps.
"""

from __future__ import annotations

from pathlib import Path

from podium.models import (
    AllocClientUpdate,
    AllocHealth,
    ClientStatus,
    DeploymentStatus,
    EvalStatus,
    TaskState,
    TaskStateName,
)
from podium.server.core import Server
from podium.spec import load_job_file

from .conftest import Invoke
from .test_job_plan import server  # noqa: F401 - the in-process server fixture

JOB = """\
job: web
update:
  max_parallel: 1
  canary: 1
  health_check: task_states
  min_healthy_time: 1s
groups:
  web:
    count: 2
    tasks:
      server:
        driver: mock
        env: {{VERSION: "{version}"}}
        config: {{run_for: 1h}}
        resources: {{cpu: 100, memory: 64}}
"""


def _register(srv: Server, tmp_path: Path, version: str) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(JOB.format(version=version))
    srv.register_job(load_job_file(path))
    _settle(srv)


def _settle(srv: Server) -> None:
    """Run pending evaluations; report every live allocation running and healthy."""
    for _ in range(5):
        for ev in srv.store.evaluations():
            if ev.status == EvalStatus.PENDING:
                srv.process_eval(ev)
        by_node: dict[str, list[AllocClientUpdate]] = {}
        for a in srv.store.allocs():
            stopped = a.desired_status == "stop"
            status = ClientStatus.COMPLETE if stopped else ClientStatus.RUNNING
            if a.client_status == status:
                continue
            health = AllocHealth(healthy=True, timestamp=1000.0) if a.deployment_id else None
            by_node.setdefault(a.node_id, []).append(
                AllocClientUpdate(
                    id=a.id,
                    client_status=status,
                    task_states={"server": TaskState(state=TaskStateName.RUNNING)},
                    deployment_status=health,
                )
            )
        for node_id, updates in by_node.items():
            srv.client_update(node_id, updates)


def test_canary_deployment_status_promote_and_list(
    cli: Invoke,
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    _register(server, tmp_path, "1")
    first = server.store.latest_deployment("web")
    assert first is not None and first.status == DeploymentStatus.SUCCESSFUL

    _register(server, tmp_path, "2")
    dep = server.store.latest_deployment("web")
    assert dep is not None and dep.job_version == 1 and dep.active()

    result = cli("deployment", "status", dep.id[:8])
    assert result.exit_code == 0, result.output
    assert f"Deployment {dep.id[:8]} of job web version 1: running" in result.output
    assert "1/1 (not promoted)" in result.output
    assert f"podium deployment promote {dep.id[:8]}" in result.output

    result = cli("deployment", "promote", dep.id[:8])
    assert result.exit_code == 0, result.output
    assert "promoted" in result.output
    _settle(server)
    done = server.store.deployment(dep.id)
    assert done is not None and done.status == DeploymentStatus.SUCCESSFUL, done

    result = cli("deployment", "list", "--job", "web")
    assert result.exit_code == 0, result.output
    lines = [x for x in result.output.splitlines() if "web" in x]
    assert [("successful" in x) for x in lines] == [True, True]

    result = cli("deployment", "status", dep.id, "-o", "json")
    assert '"status": "successful"' in result.output


def test_fail_and_errors(cli: Invoke, server: Server, tmp_path: Path) -> None:  # noqa: F811
    _register(server, tmp_path, "1")
    _register(server, tmp_path, "2")
    dep = server.store.latest_deployment("web")
    assert dep is not None
    result = cli("deployment", "fail", dep.id[:8])
    assert result.exit_code == 0, result.output
    # the status once, not "failed: failed: failed by a person"
    assert f"Deployment {dep.id[:8]} failed by a person" in result.output
    assert "failed: failed" not in result.output
    # a second fail is refused, saying why
    result = cli("deployment", "fail", dep.id[:8])
    assert result.exit_code == 1
    assert "only a running one can fail" in result.output
    result = cli("deployment", "status", "nope")
    assert result.exit_code == 1
    assert "deployment 'nope' not found" in result.output
