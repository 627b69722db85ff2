"""Namespaces end to end: a real ``podium agent --dev`` and the real CLI.  One job id in
two namespaces runs twice, independently (stopping one leaves the other running); ``-n``
and ``PODIUM_NAMESPACE`` pick the namespace; ``-n '*'`` lists every one; a quota refusal
reaches the person with its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import DevAgent, as_json, wait_until, write_job

pytestmark = pytest.mark.e2e

SLEEPER = """
job: web
groups:
  g:
    count: {count}
    tasks:
      t:
        driver: raw_exec
        resources: {{cpu: 100, memory: 64}}
        config:
          command: /bin/sh
          args: ["-c", "echo ns=$PODIUM_NAMESPACE; exec sleep 300"]
"""


def running(agent: DevAgent, namespace: str) -> list[dict[str, object]]:
    allocs = agent.get("/v1/job/web/allocations", namespace=namespace)
    return [a for a in allocs if a["client_status"] == "running" and a["desired_status"] == "run"]


def test_one_job_id_in_two_namespaces_runs_twice(
    dev_agent: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev_agent.cli("namespace", "apply", "team-a", "--description", "team A", check=True)
    path = write_job(tmp_path, SLEEPER.format(count=1))
    dev_agent.cli("job", "run", path, check=True)
    two = write_job(tmp_path, SLEEPER.format(count=2), "two.yaml")
    dev_agent.cli("job", "run", "-n", "team-a", two, check=True)
    wait_until(lambda: len(running(dev_agent, "default")) == 1, what="default's web")
    wait_until(lambda: len(running(dev_agent, "team-a")) == 2, what="team-a's web")
    team_alloc = running(dev_agent, "team-a")[0]
    assert team_alloc["namespace"] == "team-a"
    # the task knows its namespace
    logs = wait_until(
        lambda: (
            "ns=team-a"
            in (
                out := dev_agent.cli(
                    "alloc", "logs", "--namespace", "team-a", str(team_alloc["id"])
                ).stdout
            )
            and out
        ),
        what="the task's output",
    )
    assert "ns=team-a" in logs

    # -n '*' lists both, with their namespaces
    table = dev_agent.cli("job", "status", "-n", "*", check=True).stdout
    assert "Namespace" in table and "team-a" in table and "default" in table
    listed = as_json(dev_agent.cli("job", "status", "-n", "*", "-o", "json", check=True))
    assert sorted(j["namespace"] for j in listed) == ["default", "team-a"]
    # PODIUM_NAMESPACE does what -n does
    monkeypatch.setenv("PODIUM_NAMESPACE", "team-a")  # the fixture's cli() passes os.environ
    one = as_json(dev_agent.cli("job", "status", "web", "-o", "json", check=True))
    monkeypatch.delenv("PODIUM_NAMESPACE")
    assert one["namespace"] == "team-a" and one["spec"]["groups"]["g"]["count"] == 2

    info = as_json(dev_agent.cli("namespace", "info", "team-a", "-o", "json", check=True))
    assert info["usage"]["count"] == 2 and info["usage"]["memory"] == 128

    # stopping team-a's web leaves default's running
    dev_agent.cli("job", "stop", "-n", "team-a", "web", check=True)
    wait_until(lambda: not running(dev_agent, "team-a"), what="team-a's web to stop")
    assert len(running(dev_agent, "default")) == 1
    assert dev_agent.get("/v1/job/web")["stop"] is False

    # the namespace cannot go while its allocations or jobs live; once they are gone it can
    wait_until(
        lambda: all(
            a["client_status"] not in ("running", "pending")
            for a in dev_agent.get("/v1/allocations", namespace="team-a")
        ),
        what="team-a's allocations to exit",
    )
    dev_agent.cli("namespace", "delete", "team-a", check=True)
    names = [n["name"] for n in as_json(dev_agent.cli("namespace", "list", "-o", "json"))]
    assert names == ["default"]


def test_quota_refusal_reaches_the_cli(dev_agent: DevAgent, tmp_path: Path) -> None:
    dev_agent.cli("namespace", "apply", "team-b", "--quota", "memory=100,count=5", check=True)
    path = write_job(tmp_path, SLEEPER.format(count=2))
    refused = dev_agent.cli("job", "run", "-n", "team-b", path)
    assert refused.returncode != 0
    assert "namespace team-b quota memory: job web asks 128 MB more; 100 MB of 100 MB left" in (
        refused.stderr + refused.stdout
    )
    assert dev_agent.get("/v1/jobs", namespace="team-b") == []
    # a missing namespace names the command that creates it
    missing = dev_agent.cli("job", "run", "-n", "team-z", path)
    assert missing.returncode != 0 and "podium namespace apply team-z" in missing.stderr
    # a bad -n is a usage error
    bad = dev_agent.cli("job", "status", "-n", "Team Z")
    assert bad.returncode == 2 and "not a valid namespace name" in bad.stderr
    bad_quota = dev_agent.cli("namespace", "apply", "team-c", "--quota", "disk=1")
    assert bad_quota.returncode == 2 and "KEY one of cpu" in bad_quota.stderr


TEMPLATED = """
job: cfg
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        resources: {cpu: 100, memory: 64}
        config:
          command: /bin/sh
          args: ["-c", "cat local/app.conf; exec sleep 300"]
        templates:
          - destination: local/app.conf
            data: 'who={{ var("app/config").who }}'
"""


def test_a_template_reads_its_own_namespace_variables(dev_agent: DevAgent, tmp_path: Path) -> None:
    dev_agent.cli("namespace", "apply", "team-a", check=True)
    dev_agent.cli("var", "put", "app/config", "who=default", check=True)
    dev_agent.cli("var", "put", "-n", "team-a", "app/config", "who=team-a", check=True)
    path = write_job(tmp_path, TEMPLATED)
    dev_agent.cli("job", "run", "-n", "team-a", path, check=True)

    def output() -> str:
        allocs = dev_agent.get("/v1/job/cfg/allocations", namespace="team-a")
        alloc_id = str(allocs[0]["id"])
        return dev_agent.cli("alloc", "logs", "--namespace", "team-a", alloc_id).stdout

    assert "who=team-a" in wait_until(lambda: "who=" in (out := output()) and out)
