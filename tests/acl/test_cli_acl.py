"""A real `podium agent --dev --acl` in a subprocess, driven by the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acl.devagent import AclAgent
from tests.e2e.conftest import PODIUM, wait_until

POLICY = """\
namespaces:
  default: {policy: read}
node: read
"""
BAD_POLICY = """\
namespaces:
  default: {policy: read}
operater: deny
"""
JOB = """\
job: sleeper
type: batch
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {command: /bin/true}
"""


class Dev(AclAgent):
    """Not bootstrapped: the tests do it through the CLI."""

    def start(self, *, bootstrap: bool = False) -> None:
        super().start(bootstrap=bootstrap)

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PODIUM_ADDR": self.addr, "COLUMNS": "200", "NO_COLOR": "1"}
        env.pop("PODIUM_TOKEN", None)
        if token:
            env["PODIUM_TOKEN"] = token
        return subprocess.run(
            [*PODIUM, *args], capture_output=True, text=True, env=env, timeout=60, cwd=self.tmp
        )


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    d = Dev(tmp_path)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def test_acl_from_the_command_line(dev: Dev) -> None:
    (dev.tmp / "job.yaml").write_text(JOB)
    (dev.tmp / "read.yaml").write_text(POLICY)
    (dev.tmp / "bad.yaml").write_text(BAD_POLICY)

    refused = dev.cli("job", "run", "job.yaml")
    assert refused.returncode == 1 and "submit-job" in refused.stderr, refused.stderr

    boot = dev.cli("acl", "bootstrap", "-o", "json")
    assert boot.returncode == 0, boot.stderr
    admin = json.loads(boot.stdout)["secret_id"]
    again = dev.cli("acl", "bootstrap")
    assert again.returncode == 1 and "already done" in again.stderr

    # the dev agent's own node registered without a token
    nodes = wait_until(
        lambda: httpx.get(
            f"{dev.addr}/v1/nodes", headers={"X-Podium-Token": admin}, timeout=5
        ).json(),
        what="the dev node",
    )
    assert nodes[0]["status"] == "ready"

    bad = dev.cli("acl", "policy", "apply", "reader", "bad.yaml", token=admin)
    assert bad.returncode == 1 and "bad.yaml:3" in bad.stderr and "operator" in bad.stderr
    ok = dev.cli("acl", "policy", "apply", "reader", "read.yaml", token=admin)
    assert ok.returncode == 0, ok.stderr
    made = dev.cli(
        "acl", "token", "create", "--name", "ci", "--policy", "reader", "-o", "json", token=admin
    )
    assert made.returncode == 0, made.stderr
    reader = json.loads(made.stdout)["secret_id"]

    listed = dev.cli("acl", "token", "list", token=admin)
    assert listed.returncode == 0 and "ci" in listed.stdout
    assert reader not in listed.stdout and admin not in listed.stdout
    me = dev.cli("acl", "token", "self", "--token", reader)
    assert me.returncode == 0 and "reader" in me.stdout, me.stderr

    assert dev.cli("job", "run", "job.yaml", "--detach", token=admin).returncode == 0
    assert dev.cli("--token", reader, "job", "status").returncode == 0
    denied = dev.cli("job", "run", "job.yaml", token=reader)
    assert denied.returncode == 1
    assert "lacks capability 'submit-job' in namespace 'default'" in denied.stderr
    assert "HTTP 403" in denied.stderr


def test_a_token_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    env = {
        **os.environ,
        "PODIUM_TOKEN": "b87a861f-fbca\nID>).",
        "PODIUM_ADDR": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [*PODIUM, "job", "status"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1
    assert "PODIUM_TOKEN holds a space or a line break" in done.stderr
