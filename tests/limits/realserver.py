"""A real ``podium server`` process for the limits tests, and what they measure it by."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from podium.scheduler.harness import make_node
from tests.e2e.conftest import PODIUM, free_port, stop_process, wait_until


class RealServer:
    def __init__(self, tmp: Path, args: list[str]) -> None:
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.log = tmp / "server.log"
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(
                [
                    *PODIUM,
                    "server",
                    "--data-dir",
                    str(tmp / "data"),
                    "--http-addr",
                    f"127.0.0.1:{self.port}",
                    "--dns-addr",
                    "off",
                    "--audit-log",
                    "off",
                    *args,
                ],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(self._up, timeout=30, what="the server to answer")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited {self.proc.returncode}:\n{self.logs()}")
        return httpx.get(f"{self.addr}/v1/status", timeout=2).status_code < 500

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def rss_mb(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def fds(self) -> int:
        return psutil.Process(self.proc.pid).num_fds()

    def connections(self) -> int:
        """Established TCP connections the server holds on its API port (a count of fds
        would also move with files and with a client's connection closing late)."""
        return sum(
            1
            for c in psutil.Process(self.proc.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
        )

    def stop(self) -> None:
        stop_process(self.proc)

    def add_nodes(self, n: int, **kwargs: Any) -> list[str]:
        ids = []
        with httpx.Client(base_url=self.addr, timeout=10) as c:
            for i in range(n):
                node = make_node(f"sim{i}", **kwargs)
                r = c.put("/v1/node/register", json=node.model_dump(mode="json"))
                assert r.status_code == 200, r.text
                ids.append(node.id)
        return ids


@contextmanager
def real_server(tmp: Path, *args: str) -> Iterator[RealServer]:
    server = RealServer(tmp, list(args))
    try:
        yield server
    finally:
        server.stop()


def job(count: Any, name: str = "big", **group: Any) -> dict[str, Any]:
    return {
        "job": {
            "job": name,
            "groups": {
                "web": {
                    "count": count,
                    "tasks": {"t": {"driver": "mock", "resources": {"cpu": 1, "memory": 1}}},
                    **group,
                }
            },
        }
    }


def latency(url: str, timeout: float = 30.0) -> float:
    started = time.perf_counter()
    httpx.get(url, timeout=timeout).raise_for_status()
    return time.perf_counter() - started
