"""A real ``podium agent --dev --acl`` (or ``--secure``: TLS too) in a subprocess, for the
tests that need access control on a real agent (the CLI's ACL tests, the web UI's login,
tasks' workload identities)."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import PODIUM, free_port, kill_recorded_tasks, stop_process, wait_until


class AclAgent:
    """``podium agent --dev --acl``, bootstrapped: ``management`` holds the first token."""

    def __init__(self, tmp: Path, mode: str = "acl", extra: Sequence[str] = ()) -> None:
        """``mode``: ``acl``, or ``secure`` (TLS with the CA the server makes, and ACL);
        ``extra``: more of the agent's flags."""
        self.tmp = tmp
        self.mode = mode
        self.extra = list(extra)
        scheme = "https" if mode == "secure" else "http"
        self.addr = f"{scheme}://127.0.0.1:{free_port()}"
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.management = ""

    @property
    def ca(self) -> Path:
        return self.tmp / "data" / "server" / "tls" / "ca.crt"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client checks the API's certificate with (the CA, under ``secure``)."""
        return ssl.create_default_context(cafile=str(self.ca)) if self.mode == "secure" else True

    def start(self, *, bootstrap: bool = True) -> None:
        """Start it and wait for its API; ``bootstrap``: take the first management token."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *PODIUM,
                    "agent",
                    "--dev",
                    f"--{self.mode}",
                    *self.extra,
                    "--data-dir",
                    str(self.tmp / "data"),
                    "--http-addr",
                    self.addr.split("://", 1)[1],
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != "PODIUM_TOKEN"},
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited:\n{self.log.read_text()[-3000:]}")
            if self.mode == "secure" and not self.ca.exists():
                return False
            r = httpx.get(f"{self.addr}/v1/status", timeout=2, verify=self.verify)
            return r.status_code == 401

        wait_until(up, timeout=30, what="the dev agent's API")
        if not bootstrap:
            return
        r = httpx.post(f"{self.addr}/v1/acl/bootstrap", timeout=10, verify=self.verify)
        assert r.status_code == 200, r.text
        self.management = str(r.json()["secret_id"])

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(
            method,
            f"{self.addr}{path}",
            headers={"X-Podium-Token": self.management},
            timeout=10,
            verify=self.verify,
            **kw,
        )
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def token(self, name: str, rules: str) -> str:
        self.admin("PUT", f"/v1/acl/policy/{name}", json={"rules": rules})
        return str(
            self.admin("POST", "/v1/acl/token", json={"name": name, "policies": [name]})[
                "secret_id"
            ]
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        kill_recorded_tasks(self.tmp / "data")
