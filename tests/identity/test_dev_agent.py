"""A real `podium agent --dev --acl` (subprocess): a raw_exec task reads its job's variable
with its own token (``$PODIUM_TOKEN``, the secrets file) through the real CLI and is
refused another job's; a template renders its job's variable and a template reaching for
another job's fails the start with the server's reason; the token file is renewed while
the task runs, with no restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acl.devagent import AclAgent
from tests.e2e.conftest import PODIUM, wait_until

pytestmark = pytest.mark.e2e

SCRIPT = """
cd "$PODIUM_TASK_DIR"
if [ "$(cat secrets/podium_token)" = "$PODIUM_TOKEN" ]; then echo same > same.txt; fi
# the file holds the current token once renewed (6 s tokens, renewed every 4 s): a reader
# rereads it, and tries again when the token it read expired before its request arrived (on
# a busy machine a CLI start can take longer than what was left of it)
get() {{
    for try in 1 2 3 4 5; do
        PODIUM_TOKEN="$(cat secrets/podium_token)" {podium} var get "$1" v > "$2.out" 2> "$2.err"
        rc=$?
        grep -q "has expired" "$2.err" || break
    done
    echo $rc > "$2.rc"
}}
get jobs/default/reader/cfg own
get jobs/default/other/cfg other
echo "$PODIUM_ADDR" > addr.txt
echo "$PODIUM_CACERT" > cacert.txt
exec sleep 3600
"""


def reader_job(podium: str) -> str:
    return json.dumps(
        {
            "job": "reader",
            "groups": {
                "g": {
                    "restart": {"attempts": 0, "mode": "fail"},
                    "tasks": {
                        "t": {
                            "driver": "raw_exec",
                            "config": {
                                "command": "/bin/sh",
                                "args": ["-c", SCRIPT.format(podium=podium)],
                            },
                            "templates": [
                                {
                                    "destination": "local/cfg.txt",
                                    "data": 'cfg={{ var("jobs/default/reader/cfg").v }}',
                                }
                            ],
                        }
                    },
                }
            },
        }
    )


NOSY = json.dumps(
    {
        "job": "nosy",
        "groups": {
            "g": {
                "restart": {"attempts": 0, "mode": "fail"},
                "tasks": {
                    "t": {
                        "driver": "raw_exec",
                        "config": {"command": "/bin/sleep", "args": ["3600"]},
                        "templates": [
                            {
                                "destination": "local/cfg.txt",
                                "data": '{{ var("jobs/default/reader/cfg").v }}',
                            }
                        ],
                    }
                },
            }
        },
    }
)


class Dev(AclAgent):
    """``podium agent --dev --acl --identity-ttl 6s`` (or ``--secure``: TLS too) and the CLI
    against it."""

    def __init__(self, tmp: Path, mode: str = "acl") -> None:
        super().__init__(tmp, mode, ["--identity-ttl", "6s", "--dns-addr", "off"])

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"X-Podium-Token": token if token is not None else self.management}
        return httpx.request(
            method, f"{self.addr}{path}", headers=headers, timeout=10, verify=self.verify, **kw
        )

    def run(self, spec: str) -> None:
        r = self.api("POST", "/v1/jobs", json={"job": json.loads(spec)})
        assert r.status_code == 200, r.text

    def alloc(self, job: str) -> dict[str, Any]:
        allocs = self.api("GET", f"/v1/job/{job}/allocations").json()
        return allocs[0] if allocs else {}

    def task_dir(self, alloc_id: str, task: str = "t") -> Path:
        return self.tmp / "data" / "agent" / "allocs" / alloc_id / task


@pytest.fixture(params=["acl", "secure"])
def dev(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Dev]:
    """Both ways a cluster turns access control on; under --secure the task reaches the
    https server with the CA its agent gives it (``PODIUM_CACERT``, ``secrets/ca.crt``)."""
    d = Dev(tmp_path, request.param)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def test_a_task_reads_its_jobs_variables_with_its_token_and_keeps_it_renewed(dev: Dev) -> None:
    for path, value in (("jobs/default/reader/cfg", "mine"), ("jobs/default/other/cfg", "theirs")):
        r = dev.api("PUT", f"/v1/var/{path}", json={"items": {"v": value}})
        assert r.status_code == 200, r.text
    dev.run(reader_job(PODIUM[0] if len(PODIUM) == 1 else " ".join(PODIUM)))
    alloc = wait_until(
        lambda: (a := dev.alloc("reader")) and a["client_status"] == "running" and a,
        timeout=60,
        what="the reader task to run",
    )
    task_dir = dev.task_dir(alloc["id"])
    wait_until(lambda: (task_dir / "other.rc").exists(), timeout=60, what="the task's CLI calls")

    # the template rendered its own job's variable, with the task's token
    assert (task_dir / "local" / "cfg.txt").read_text() == "cfg=mine"
    # the environment and the file hold the same token; the task's CLI read with it
    assert (task_dir / "same.txt").exists()
    assert (task_dir / "addr.txt").read_text().strip() == dev.addr
    if dev.mode == "secure":  # the task verified the server with the CA it was given
        cacert = task_dir / "secrets" / "ca.crt"
        assert (task_dir / "cacert.txt").read_text().strip() == str(cacert)
        assert cacert.read_bytes() == (dev.tmp / "data/server/tls/ca.crt").read_bytes()
    assert (task_dir / "own.rc").read_text().strip() == "0", (task_dir / "own.err").read_text()
    assert (task_dir / "own.out").read_text().strip() == "mine"
    assert (task_dir / "other.rc").read_text().strip() != "0"
    err = (task_dir / "other.err").read_text()
    assert "workload token of task t" in err and "jobs/default/other/cfg" in err, err

    # the token file is renewed while the task runs (6 s tokens: every 4 s), no restart
    token_path = task_dir / "secrets" / "podium_token"
    seen = [token_path.read_text()]

    def renewed() -> bool:
        now = token_path.read_text()
        if now != seen[-1]:
            seen.append(now)
        return len(seen) >= 3

    wait_until(renewed, timeout=60, interval=0.2, what="two renewals of the token file")
    r = dev.api("GET", "/v1/var/jobs/default/reader/cfg", token=seen[-1])
    assert r.status_code == 200, r.text
    state = dev.api("GET", f"/v1/allocation/{alloc['id']}").json()
    assert state["client_status"] == "running"
    assert state["task_states"]["t"]["restarts"] == 0

    # stopped: the token stops working
    assert dev.api("DELETE", "/v1/job/reader").status_code == 200
    wait_until(
        lambda: (
            dev.api("GET", "/v1/var/jobs/default/reader/cfg", token=seen[-1]).status_code == 401
        ),
        what="the stopped allocation's token to be refused",
    )


def test_a_template_reaching_for_another_jobs_variable_fails_the_start(dev: Dev) -> None:
    r = dev.api("PUT", "/v1/var/jobs/default/reader/cfg", json={"items": {"v": "mine"}})
    assert r.status_code == 200
    dev.run(NOSY)

    def failed() -> str:
        a = dev.alloc("nosy")
        events = (a.get("task_states") or {}).get("t", {}).get("events") or []
        return " ".join(str(e.get("message", "")) for e in events) if a else ""

    text = wait_until(
        lambda: "jobs/default/reader/cfg" in failed() and failed(),
        timeout=60,
        what="the nosy task's start to fail",
    )
    assert "workload token of task t" in text and "may not" in text, text
