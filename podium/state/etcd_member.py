"""Local etcd members on loopback: the real etcd processes the store's tests and benches
run against (and, later, a development cluster), started from Debian's ``/usr/bin/etcd``.

``EtcdCluster.start(n, root)`` starts ``n`` members with their data dirs under ``root``,
on free loopback ports, and waits until the cluster answers a write; ``stop(i)`` kills
one member (SIGKILL: what a crash does), ``restart(i)`` starts it again on its data dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ETCD = os.environ.get("PODIUM_ETCD", "etcd")


def etcd_binary() -> str | None:
    """The etcd executable, or None where it is not installed."""
    return shutil.which(ETCD) or (ETCD if os.path.isfile(ETCD) else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Member:
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    members: list[Member] = field(default_factory=list)
    initial_cluster: str = ""
    token: str = ""

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    @classmethod
    def start(cls, n: int, root: Path, *, timeout: float = 30.0) -> EtcdCluster:
        root.mkdir(parents=True, exist_ok=True)
        members = [
            Member(
                name=f"m{i}",
                data_dir=root / f"m{i}",
                client_port=free_port(),
                peer_port=free_port(),
                log_path=root / f"m{i}.log",
            )
            for i in range(n)
        ]
        cluster = cls(
            members,
            ",".join(f"{m.name}={m.peer_url}" for m in members),
            f"podium-{os.getpid()}-{members[0].client_port}",
        )
        try:
            for i in range(n):
                cluster._spawn(i)
            cluster.wait_ready(timeout)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _spawn(self, i: int) -> None:
        m = self.members[i]
        binary = etcd_binary()
        if binary is None:
            raise FileNotFoundError(
                f"{ETCD} is not installed (Debian: apt-get install etcd-server)"
            )
        args = [
            binary,
            "--name",
            m.name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            m.url,
            "--advertise-client-urls",
            m.url,
            "--listen-peer-urls",
            m.peer_url,
            "--initial-advertise-peer-urls",
            m.peer_url,
            "--initial-cluster",
            self.initial_cluster,
            "--initial-cluster-token",
            self.token,
            "--initial-cluster-state",
            "new",
            # a busy 2-core machine: a longer election timeout than the 1 s default keeps
            # members from deposing a leader whose heartbeat was merely late
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "2000",
        ]
        log = open(m.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        try:
            m.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def wait_ready(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        """Until every member named (all by default) answers a linearizable read."""
        deadline = time.monotonic() + timeout
        pending = list(range(len(self.members))) if members is None else list(members)
        last = ""
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while pending:
                m = self.members[pending[0]]
                try:
                    r = http.post(f"{m.url}/v3/kv/range", json={"key": "eA=="})
                    if r.status_code == 200 and "error" not in r.json():
                        pending.pop(0)
                        continue
                    last = r.text
                except httpx.HTTPError as exc:
                    last = str(exc)
                if m.proc is not None and m.proc.poll() is not None:
                    tail = m.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"etcd member {m.name} exited:\n{tail}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd member {m.name} not ready in {timeout}s: {last}")
                time.sleep(0.05)

    def stop(self, i: int) -> None:
        """Kill member ``i`` (SIGKILL) and reap it."""
        proc = self.members[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart(self, i: int) -> None:
        self.stop(i)
        self._spawn(i)

    def close(self) -> None:
        for i in range(len(self.members)):
            with contextlib.suppress(OSError):
                self.stop(i)
