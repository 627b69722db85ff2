"""End to end: a variable rendered into a real task's file, and a change restarting it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DevAgent, as_json, wait_until, write_job

pytestmark = pytest.mark.e2e

JOB = """
job: greeter
groups:
  g:
    restart: {attempts: 2, interval: 1m, delay: 100ms}
    tasks:
      t:
        driver: raw_exec
        config:
          command: /bin/sh
          args: ["-c", "cat local/app.conf; echo TOKEN=$TOKEN; exec sleep 1000"]
        templates:
          - destination: local/app.conf
            data: |
              greeting={{ var("app/config").greeting }}
              alloc={{ env.PODIUM_ALLOC_ID }}
          - destination: secrets/app.env
            data: 'TOKEN={{ var("app/config").token }}'
            env: true
"""


def test_a_variable_change_restarts_the_task_with_the_new_content(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    dev_agent.cli("var", "put", "app/config", "greeting=hello-1", "token=s3cr3t-one", check=True)
    assert dev_agent.cli("var", "get", "app/config", "greeting", check=True).stdout == "hello-1\n"

    dev_agent.cli("job", "run", write_job(tmp_path, JOB), check=True)
    (alloc,) = dev_agent.wait_running("greeter", 1)
    alloc_id = alloc["id"]

    def logs() -> str:  # polled through the API: a CLI process per poll costs a busy box
        r = httpx.get(f"{dev_agent.addr}/v1/allocation/{alloc_id}/logs", timeout=10)
        r.raise_for_status()
        return r.text

    wait_until(lambda: "greeting=hello-1" in logs(), what="the first rendering in the task's log")
    first = dev_agent.cli("alloc", "logs", alloc_id, "t", check=True).stdout
    assert f"alloc={alloc_id}" in first and "TOKEN=s3cr3t-one" in first

    dev_agent.cli("var", "put", "app/config", "greeting=hello-2", "token=s3cr3t-two", check=True)

    def restarted() -> dict[str, Any] | None:
        a = dev_agent.get(f"/v1/allocation/{alloc_id}")
        state = a["task_states"]["t"]
        return a if state["restarts"] == 1 and state["state"] == "running" else None

    alloc = wait_until(restarted, what="the task restarted by its template")
    events = [(e["type"], e["message"]) for e in alloc["task_states"]["t"]["events"]]
    assert ("Restart Signaled", "template local/app.conf changed") in events
    wait_until(lambda: "greeting=hello-2" in logs(), what="the new content in the task's log")
    assert "TOKEN=s3cr3t-two" in logs()

    status = as_json(dev_agent.cli("alloc", "status", alloc_id, "-o", "json", check=True))
    assert status["client_status"] == "running"

    # at rest: the server's store holds no value, the key sits apart with mode 0600
    server_dir = dev_agent.data_dir / "server"
    blob = b"".join(p.read_bytes() for p in server_dir.glob("state.db*"))
    assert b"app/config" in blob
    for secret in (b"hello-2", b"s3cr3t-one", b"s3cr3t-two"):
        assert secret not in blob
    keys = list((server_dir / "keyring").glob("*.key"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600

    listed = as_json(dev_agent.cli("var", "list", "-o", "json", check=True))
    assert [v["path"] for v in listed] == ["app/config"] and "items" not in listed[0]
    dev_agent.cli("var", "delete", "app/config", check=True)
    assert dev_agent.cli("var", "get", "app/config").returncode == 1
