"""A real secure cluster on this machine: `podium server --secure` and agents that join it
with a join token, each its own process, every call over TLS.

``secure_cluster(cert_ttl=None)`` → a started :class:`SecureCluster` (server only; add
agents with :meth:`SecureCluster.start_agent`).  Cleanup always runs: jobs purged, agents
and server stopped, every recorded task killed.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PODIUM, free_port, kill_recorded_tasks, stop_process, wait_until


class SecureCluster:
    def __init__(self, tmp: Path, cert_ttl: str | None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.addr = f"https://127.0.0.1:{self.port}"
        self.cert_ttl = cert_ttl
        self.server: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.management = ""
        """The management token (--secure turns ACLs on; bootstrapped at start)."""

    @property
    def ca(self) -> Path:
        return self.tmp / "server" / "server" / "tls" / "ca.crt"

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            return subprocess.Popen(
                [*PODIUM, *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start_server(self) -> None:
        ttl = ["--cert-ttl", self.cert_ttl] if self.cert_ttl else []
        self.server = self._spawn(
            [
                "server",
                "--secure",
                "--data-dir",
                str(self.tmp / "server"),
                "--http-addr",
                f"127.0.0.1:{self.port}",
                "--dns-addr",
                "off",
                *ttl,
            ],
            self.tmp / "server.log",
        )
        server = self.server

        def up() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log('server')}")
            return self.ca.exists() and self.get("/v1/agent/ca") is not None

        wait_until(up, timeout=30, what="the secure server")
        self.bootstrap_acl()

    def bootstrap_acl(self) -> None:
        """--secure turns access control on: the management token for what follows."""
        with self.http() as c:
            anonymous = c.get("/v1/jobs")
            assert anonymous.status_code == 401, "--secure turns ACLs on"
            boot = c.post("/v1/acl/bootstrap")
            boot.raise_for_status()
            self.management = boot.json()["secret_id"]

    def http(self, cert: tuple[str, str] | None = None) -> httpx.Client:
        """An HTTP client that trusts the cluster CA (presenting ``cert``, key when given)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        headers = {"X-Podium-Token": self.management} if self.management else {}
        return httpx.Client(base_url=self.addr, verify=ctx, timeout=10, headers=headers)

    def get(self, path: str) -> Any:
        with self.http() as c:
            r = c.get(path)
            r.raise_for_status()
            return r.json()

    def cli(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PODIUM_ADDR": self.addr,
            "PODIUM_CACERT": str(self.ca),
            "PODIUM_TOKEN": self.management,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        result = subprocess.run(
            [*PODIUM, *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podium {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                f"server log:\n{self.log('server')}"
            )
        return result

    def token(self) -> str:
        return self.cli("join-token", "agent", "-q", check=True).stdout.strip()

    def agent_dir(self, name: str) -> Path:
        return self.tmp / name

    def spawn_agent(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            [
                "agent",
                "--servers",
                self.addr,
                "--data-dir",
                str(self.agent_dir(name)),
                "--name",
                name,
                "--raw-exec",
                "--agent-http-addr",
                "127.0.0.1:0",
                *extra,
            ],
            self.tmp / f"{name}.log",
        )
        self.agents[name] = proc
        return proc

    def start_agent(self, name: str, *extra: str) -> None:
        """Start an agent; returns once its node is ready (registered over TLS)."""
        before = self.log_count(name, "registered node")
        proc = self.spawn_agent(name, *extra)

        def registered() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"agent {name} exited:\n{self.log(name)}")
            return self.log_count(name, "registered node") > before

        wait_until(registered, timeout=30, what=f"agent {name} to register")

    def failed_agent(self, name: str, *extra: str) -> str:
        """Start an agent that must exit with an error; answers its log."""
        proc = self.spawn_agent(name, *extra)
        proc.wait(60)
        assert proc.returncode != 0, self.log(name)
        return self.log(name)

    def stop_agent(self, name: str) -> None:
        stop_process(self.agents[name])

    def log_count(self, name: str, text: str) -> int:
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace").count(text)
        except OSError:
            return 0

    def log(self, name: str) -> str:
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def running(self, job: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.get(f"/v1/job/{job}/allocations")
            if a["client_status"] == "running" and a["desired_status"] == "run"
        ]

    def cleanup(self) -> None:
        if self.server is not None and self.server.poll() is None:
            with contextlib.suppress(Exception), self.http() as c:
                for job in c.get("/v1/jobs").json():
                    c.delete(f"/v1/job/{job['id']}", params={"purge": "true"})
                wait_until(
                    lambda: all(
                        a["client_status"] not in ("running", "pending")
                        for a in self.get("/v1/allocations")
                    ),
                    timeout=20,
                    what="every allocation to stop",
                )
        for name in list(self.agents):
            self.stop_agent(name)
            kill_recorded_tasks(self.agent_dir(name))
        if self.server is not None:
            stop_process(self.server)


@pytest.fixture
def secure_cluster(tmp_path: Path) -> Iterator[Callable[..., SecureCluster]]:
    made: list[SecureCluster] = []

    def make(cert_ttl: str | None = None) -> SecureCluster:
        cluster = SecureCluster(tmp_path, cert_ttl)
        made.append(cluster)
        cluster.start_server()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.cleanup()
