"""``podium agent --servers A,B``: an agent given several servers of its cluster works
through the ones that answer (issue 15's agents; the servers here are one real server
and an address where nothing listens)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from tests.e2e.conftest import PODIUM, free_port, kill_recorded_tasks, stop_process, wait_until
from tests.limits.realserver import real_server

JOB = {
    "job": {
        "job": "web",
        "groups": {
            "g": {
                "count": 2,
                "tasks": {
                    "t": {
                        "driver": "raw_exec",
                        "config": {"command": "/bin/sleep", "args": ["300"]},
                        "resources": {"cpu": 10, "memory": 10},
                    }
                },
            }
        },
    }
}


def test_an_agent_works_through_the_server_that_answers(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    data = tmp_path / "agent"
    with real_server(tmp_path) as server:
        with open(tmp_path / "agent.log", "ab") as log:
            agent = subprocess.Popen(
                [
                    *PODIUM,
                    *("agent", "--data-dir", str(data), "--raw-exec", "--name", "w1"),
                    *("--servers", f"{down},{server.addr}"),
                    *("--http-addr", f"127.0.0.1:{free_port()}"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            with httpx.Client(base_url=server.addr, timeout=10) as c:
                wait_until(
                    lambda: [n for n in c.get("/v1/nodes").json() if n["status"] == "ready"],
                    timeout=30,
                    what="the agent to register through the second server",
                )
                assert c.post("/v1/jobs", json=JOB).status_code == 200
                wait_until(
                    lambda: (
                        len(
                            [
                                a
                                for a in c.get("/v1/job/web/allocations").json()
                                if a["client_status"] == "running"
                            ]
                        )
                        == 2
                    ),
                    timeout=30,
                    what="both allocations running",
                )
        finally:
            stop_process(agent)
            kill_recorded_tasks(data)


def test_the_servers_say_where_they_are_and_agents_learn_it(tmp_path: Path) -> None:
    """``/v1/status/peers`` and ``/leader`` answer without a token, with the address the
    server advertises; an agent adds what it learns there to the servers it was given."""
    data = tmp_path / "agent"
    with real_server(tmp_path, "--advertise", "localhost", "--acl") as server:
        advertised = f"http://localhost:{server.port}"
        with httpx.Client(base_url=server.addr, timeout=10) as c:
            assert c.get("/v1/status").status_code in (401, 403)  # the rest still needs one
            assert c.get("/v1/status/peers").json() == {"servers": [advertised]}
            assert c.get("/v1/status/leader").json() == {
                "leader": advertised,
                "server": advertised,
            }
            token = c.post("/v1/acl/bootstrap").json()["secret_id"]
        with open(tmp_path / "agent.log", "ab") as log:
            agent = subprocess.Popen(
                [
                    *PODIUM,
                    *("agent", "--data-dir", str(data), "--name", "w1", "--log-level", "info"),
                    *("--servers", server.addr, "--token", token),
                    *("--http-addr", f"127.0.0.1:{free_port()}"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: (
                    f"servers of this cluster: {server.addr}, {advertised}"
                    in (tmp_path / "agent.log").read_text(errors="replace")
                ),
                timeout=30,
                what="the agent to learn the advertised address",
            )
        finally:
            stop_process(agent)
            kill_recorded_tasks(data)
