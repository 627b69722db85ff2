"""A secure cluster across machines: `podium server --secure` on the control machine (the
root network namespace, as in conftest.py), agents on other hosts (each its own network
namespace) joining with the command `podium join-token agent`
prints, a job on both, logs through the TLS relay; a host without the token, or with a
token that pins another CA, cannot join.  And the soak: 60 s certificates renewed over
and over under a running job, with no task restart and no failed sync.

The commands are the ones docs/tls.md ("A secure three-machine cluster") gives, as a user
types them; only the data dirs differ (every host shares this machine's file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.tls.ca import CertificateAuthority
from podium.tls.token import parse_token
from tests.cluster import netns
from tests.e2e.conftest import (
    PODIUM,
    free_port,
    kill_recorded_tasks,
    stop_process,
    wait_until,
    write_job,
)

FAILURES = (
    "allocation sync failed",
    "cannot reach server",
    "cannot report allocation states",
    "cannot renew",
    "cannot fetch the CAs",
)

SYSTEM_JOB = """
job: {name}
type: system
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {{command: /bin/sh, args: ["-c", "echo hello from $PODIUM_NODE_NAME; while true; do sleep 0.2; done"]}}
        resources: {{cpu: 50, memory: 32}}
"""

SOAK_SECONDS = float(os.environ.get("PODIUM_TLS_SOAK_SECONDS", "300"))
"""How long the 60 s certificates are renewed under a running job (the issue: 5 minutes)."""
SOAK_GROUP = "tls-soak"
"""Its own xdist_group: the soak runs on a worker of its own, beside the rest of the suite
(tests/conftest.py schedules it first)."""


class SecureHosts:
    """Hosts (network namespaces) and the processes started on them; the server on the
    control machine (the root namespace, on the hosts' bridge)."""

    def __init__(self, tmp: Path, count: int) -> None:
        self.tmp = tmp
        self.net = netns.Network()
        self.port = free_port()  # this machine's ports are shared with other tests
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.token = ""
        """The management token: --secure turns access control on (`podium acl bootstrap`)."""
        try:
            self.net.create(count)
        except BaseException:
            self.net.destroy()
            raise

    @property
    def addr(self) -> str:
        return f"https://{self.net.gateway}:{self.port}"

    @property
    def ca(self) -> Path:
        return self.tmp / "server" / "server" / "tls" / "ca.crt"

    def spawn(self, host: str | None, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start ``podium ARGS`` on ``host`` (None: the control machine)."""
        prefix = self.net.hosts[host].exec_prefix() if host else []
        with open(self.tmp / f"{name}.log", "ab") as f:
            proc = subprocess.Popen(
                [*prefix, *PODIUM, *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_server(self, *extra: str) -> None:
        # podium server --data-dir /var/lib/podium --http-addr 10.0.0.1:7634 --secure
        proc = self.spawn(
            None,
            "server",
            [
                "server",
                "--data-dir",
                str(self.tmp / "server"),
                "--http-addr",
                f"{self.net.gateway}:{self.port}",
                "--secure",
                *extra,
            ],
        )

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log('server')}")
            return self.ca.exists() and self.get("/v1/agent/ca") is not None

        wait_until(up, timeout=30, what="the secure server")
        # podium acl bootstrap; export PODIUM_TOKEN=<its Secret ID>
        boot = json.loads(self.cli("acl", "bootstrap", "-o", "json").stdout)
        self.token = boot["secret_id"]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command on the server's machine (or one that reaches it and holds its CA file),
        as docs/tls.md has it: ``export PODIUM_ADDR=https://… PODIUM_CACERT=…``."""
        result = subprocess.run(
            [*PODIUM, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "PODIUM_ADDR": self.addr,
                "PODIUM_CACERT": str(self.ca),
                "PODIUM_TOKEN": self.token,
            },
        )
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    def get(self, path: str) -> Any:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{self.addr}{path}", verify=_ctx(self.ca), timeout=5, headers=self.auth)
            r.raise_for_status()
            return r.json()
        return None

    @property
    def auth(self) -> dict[str, str]:
        return {"X-Podium-Token": self.token} if self.token else {}

    def join_command(self) -> list[str]:
        """The agent command `podium join-token agent` prints, split as a shell would."""
        shown = self.cli("join-token", "agent").stdout
        lines = [ln.strip() for ln in shown.splitlines() if ln.strip().startswith("podium agent")]
        assert len(lines) == 1, shown
        return shlex.split(lines[0])

    def join(self, host: str, command: list[str], *extra: str) -> subprocess.Popen[bytes]:
        """Run the printed command on ``host`` as printed but for the data dir (and
        ``extra`` flags after it)."""
        args = list(command[1:])  # without the leading "podium"
        args[args.index("--data-dir") + 1] = str(self.tmp / host)
        return self.spawn(host, host, [*args, *extra])

    def registered(self, host: str) -> None:
        proc = self.procs[host]

        def done() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"agent {host} exited:\n{self.log(host)}")
            return "registered node" in self.log(host, whole=True)

        wait_until(done, timeout=60, what=f"agent {host} to register")

    def log(self, name: str, whole: bool = False) -> str:
        try:
            text = (self.tmp / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return text if whole else text[-6000:]

    def count(self, name: str, text: str) -> int:
        return self.log(name, whole=True).count(text)

    def running(self, job: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.get(f"/v1/job/{job}/allocations") or []
            if a["client_status"] == "running" and a["desired_status"] == "run"
        ]

    def cleanup(self) -> None:
        server = self.procs.get("server")
        if server is not None and server.poll() is None:
            with contextlib.suppress(Exception):
                for job in self.get("/v1/jobs") or []:
                    httpx.delete(
                        f"{self.addr}/v1/job/{job['id']}",
                        params={"purge": "true"},
                        verify=_ctx(self.ca),
                        timeout=5,
                        headers=self.auth,
                    )
        for name, proc in self.procs.items():
            if name != "server" and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            if name != "server":
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        kill_recorded_tasks(self.tmp)
        if server is not None:
            stop_process(server, grace=15)
        self.net.destroy()


def _ctx(ca: Path) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Any]:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    netns.clean_stale()
    made: list[SecureHosts] = []

    def make(count: int) -> SecureHosts:
        made.append(SecureHosts(tmp_path, count))
        return made[-1]

    try:
        yield make
    finally:
        for h in made:
            h.cleanup()


def test_agents_on_two_hosts_join_with_the_printed_command_and_a_third_cannot(
    hosts: Any, tmp_path: Path
) -> None:
    h: SecureHosts = hosts(3)
    h.start_server()
    command = h.join_command()
    assert command[:2] == ["podium", "agent"]
    assert command[command.index("--servers") + 1] == h.addr  # the server's own address
    token = command[command.index("--join-token") + 1]

    for host in ("host1", "host2"):
        h.join(host, command, "--name", host, "--raw-exec")
    for host in ("host1", "host2"):
        h.registered(host)
    assert "host2" in h.cli("node", "status").stdout
    nodes = {n["name"]: n for n in h.get("/v1/nodes")}
    assert set(nodes) == {"host1", "host2"}
    for host, node in nodes.items():
        assert node["status"] == "ready"
        assert node["http_addr"].startswith(f"https://{h.net.hosts[host].ip}:")

    # a job on both hosts, its logs through the server's TLS relay to each agent
    h.cli("job", "run", write_job(tmp_path, SYSTEM_JOB.format(name="web"), "web.yaml"))
    allocs = wait_until(
        lambda: len(r := h.running("web")) == 2 and r, timeout=60, what="web on both hosts"
    )
    assert {nodes_by_id(nodes)[a["node_id"]] for a in allocs} == {"host1", "host2"}
    for alloc in allocs:
        name = nodes_by_id(nodes)[alloc["node_id"]]
        short = str(alloc["id"])[:8]
        wait_until(partial(logged, h, short), timeout=30, what="the task's log")
        assert f"hello from {name}" in h.cli("alloc", "logs", short).stdout

    # host3: no token; a token whose fingerprint pins another CA; neither joins
    no_token = [a for a in command[1:] if a != token and a != "--join-token"]
    proc = h.join("host3", ["podium", *no_token], "--name", "host3")
    proc.wait(60)
    assert proc.returncode != 0
    assert "this agent has no certificate yet: join with --join-token" in h.log("host3")
    forged = f"PDM-1-{CertificateAuthority.create().fingerprint}-{parse_token(token).secret}"
    wrong = [forged if a == token else a for a in command]
    proc = h.join("host3", wrong, "--name", "host3")
    proc.wait(60)
    assert proc.returncode != 0
    assert "is not the one the join token pins" in h.log("host3")
    assert not (tmp_path / "host3" / "agent" / "tls" / "agent.crt").exists()
    assert {n["name"] for n in h.get("/v1/nodes")} == {"host1", "host2"}
    for host in ("host1", "host2"):
        for text in FAILURES:
            assert h.count(host, text) == 0, f"{text!r} in {host}'s log:\n{h.log(host)}"


def logged(h: SecureHosts, alloc: str) -> bool:
    return "hello from" in h.cli("alloc", "logs", alloc).stdout


def nodes_by_id(nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {n["id"]: name for name, n in nodes.items()}


@pytest.mark.xdist_group(SOAK_GROUP)
@pytest.mark.timeout(int(SOAK_SECONDS * 1.5) + 240)
def test_60s_certificates_renew_for_the_soak_under_a_running_job(
    hosts: Any, tmp_path: Path
) -> None:
    h: SecureHosts = hosts(1)
    h.start_server("--cert-ttl", "60s")
    h_host = "host1"
    h.join(h_host, h.join_command(), "--name", h_host, "--raw-exec")
    h.registered(h_host)
    h.cli("job", "run", write_job(tmp_path, SYSTEM_JOB.format(name="steady"), "s.yaml"))
    (alloc,) = wait_until(lambda: h.running("steady"), timeout=60, what="steady running")
    pid = alloc["task_states"]["t"]["pid"]
    start = time.monotonic()
    want = int(SOAK_SECONDS / 40)

    def soaked() -> bool:
        (now,) = h.running("steady")  # the same allocation, still running, never restarted
        assert now["id"] == alloc["id"] and now["task_states"]["t"]["pid"] == pid
        assert now["task_states"]["t"]["restarts"] == 0
        for text in FAILURES:
            assert h.count(h_host, text) == 0, f"{text!r} in the agent's log:\n{h.log(h_host)}"
        info = h.get("/v1/operator/tls")
        agent = h.count(h_host, "renewed this agent's certificate")
        return (
            time.monotonic() - start >= SOAK_SECONDS
            and agent >= want
            and info is not None
            and int(info["server_renewals"]) >= want
        )

    wait_until(
        soaked,
        timeout=SOAK_SECONDS * 1.5 + 120,
        interval=2,
        what=f"{SOAK_SECONDS:g}s with at least {want} renewals of each certificate",
    )
    # the renewed certificates still serve both ways: the relay reaches the agent
    assert "hello from" in h.cli("alloc", "logs", alloc["id"][:8]).stdout
