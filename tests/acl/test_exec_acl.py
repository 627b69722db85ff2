"""``alloc exec`` behind access control, on a real `podium agent --dev --acl`: the upgrade
needs ``alloc-exec`` in the allocation's namespace, and each one is in the audit log."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podium.client import Client
from podium.errors import APIError
from tests.acl.test_cli_acl import Dev
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw_exec tasks as root")

JOB = """\
job: sleeper
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/sleep, args: ["3600"]}
"""
LOGS_ONLY = """\
namespaces:
  default: {policy: read, capabilities: [read-logs]}
"""
EXEC = """\
namespaces:
  default: {policy: read, capabilities: [alloc-exec]}
"""


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    d = Dev(tmp_path)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def _token(dev: Dev, admin: str, name: str, rules: str) -> str:
    (dev.tmp / f"{name}.yaml").write_text(rules)
    applied = dev.cli("acl", "policy", "apply", name, f"{name}.yaml", token=admin)
    assert applied.returncode == 0, applied.stderr
    made = dev.cli(
        "acl", "token", "create", "--name", name, "--policy", name, "-o", "json", token=admin
    )
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["secret_id"])


def test_exec_needs_alloc_exec_and_is_audited(dev: Dev) -> None:
    boot = dev.cli("acl", "bootstrap", "-o", "json")
    admin = json.loads(boot.stdout)["secret_id"]
    (dev.tmp / "job.yaml").write_text(JOB)
    ran = dev.cli("job", "run", "job.yaml", token=admin)
    assert ran.returncode == 0, ran.stderr
    headers = {"X-Podium-Token": admin}
    alloc = wait_until(
        lambda: [
            a["id"]
            for a in httpx.get(
                f"{dev.addr}/v1/job/sleeper/allocations", headers=headers, timeout=5
            ).json()
            if a["client_status"] == "running"
        ],
        what="the allocation to run",
    )[0]
    logs_only = _token(dev, admin, "logs", LOGS_ONLY)
    may_exec = _token(dev, admin, "exec", EXEC)

    with Client(dev.addr) as anonymous, pytest.raises(APIError) as no_token:
        anonymous.exec(alloc, ["id"])
    assert no_token.value.status == 401
    with Client(dev.addr, token=logs_only) as c, pytest.raises(APIError) as lacking:
        c.exec(alloc, ["id"])
    assert lacking.value.status == 403
    assert "alloc-exec" in str(lacking.value)
    with Client(dev.addr, token=may_exec) as c:
        done = c.exec(alloc, ["/bin/sh", "-c", "echo granted; exit 2"])
    assert (done.exit_code, done.stdout) == (2, b"granted\n")
    # the CLI says the same as the SDK
    refused = dev.cli("alloc", "exec", alloc, "--", "id", token=logs_only)
    assert refused.returncode == 1 and "alloc-exec" in refused.stderr

    log = dev.tmp / "data" / "server" / "audit" / "audit.log"
    entries = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if f"/v1/allocation/{alloc}/exec" in line
    ]
    outcomes = [(e["status"], e["outcome"], e.get("identity", {}).get("name")) for e in entries]
    assert (401, "refused", None) in outcomes
    assert (403, "refused", "logs") in outcomes
    assert (101, "allowed", "exec") in outcomes
    allowed = next(e for e in entries if e["status"] == 101)
    assert allowed["websocket"] is True and "command=" in allowed["query"]
