"""Real Podium servers on a real etcd cluster, for the high-availability tests.

- :class:`EtcdCluster` (podium.state.etcd_member): real etcd members on loopback.
- :class:`Blackhole`: a TCP relay between one server and one etcd member that can be
  cut (bytes stop flowing both ways, connections stay open and silent: what a dropped
  network does, not a refused one) and healed (the silent connections are reset, new
  ones flow).  A server given only its relay's address is cut off from etcd while the
  rest of the cluster is not: "iptables on its own port only", without a firewall.
- :class:`HACluster`: ``podium server --etcd`` processes sharing one keyring file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from podium.state.etcd_member import EtcdCluster, etcd_binary
from tests.e2e.conftest import PODIUM, free_port, stop_process, wait_until

__all__ = ["Blackhole", "EtcdCluster", "HACluster", "HAServer", "etcd_binary"]


class Blackhole:
    """A TCP relay from a loopback port to ``upstream`` (``host:port``), cut on demand."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host.replace("http://", ""), int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="blackhole", daemon=True).start()

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        """Reset every connection of the cut (their streams lost bytes), let new ones flow."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                s.close()
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.heal()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = None
        if not self._cut.is_set():
            with contextlib.suppress(OSError):
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
        if upstream is None:  # cut: hold the connection, say nothing
            self._drain(client)
            return
        with self._lock:
            self._conns.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if self._cut.is_set():
                continue  # dropped on the floor
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _drain(s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while s.recv(65536):
                pass


@dataclass
class HAServer:
    index: int
    url: str
    data_dir: Path
    log_path: Path
    etcd: list[str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=kwargs.pop("timeout", 5), **kwargs)

    def leader(self, timeout: float = 5.0) -> str:
        return str(self.get("/v1/status/leader", timeout=timeout).json()["leader"])

    def index_now(self) -> int:
        return int(self.get("/v1/status").json()["index"])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


class HACluster:
    """``n`` servers on ``etcd`` (one keyring file among them, as docs/ha.md says)."""

    def __init__(self, root: Path, etcd: EtcdCluster, n: int = 3, args: list[str] | None = None):
        self.root = root
        self.etcd = etcd
        self.keyring = root / "keyring.key"
        self.servers: list[HAServer] = []
        for i in range(n):
            port = free_port()
            self.servers.append(
                HAServer(
                    index=i,
                    url=f"http://127.0.0.1:{port}",
                    data_dir=root / f"s{i}",
                    log_path=root / f"s{i}.log",
                    etcd=list(etcd.endpoints),
                    args=list(args or []),
                )
            )

    def start(self, i: int, *, etcd: list[str] | None = None, wait: bool = True) -> HAServer:
        s = self.servers[i]
        if etcd is not None:
            s.etcd = etcd
        port = s.url.rsplit(":", 1)[1]
        with open(s.log_path, "ab") as log:
            s.proc = subprocess.Popen(
                [
                    *PODIUM,
                    *("server", "--data-dir", str(s.data_dir)),
                    *("--http-addr", f"127.0.0.1:{port}", "--dns-addr", "off"),
                    *("--etcd", ",".join(s.etcd), "--name", f"s{i}"),
                    *("--keyring-file", str(self.keyring), "--log-level", "debug"),
                    *s.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if wait:
            wait_until(lambda: self._up(s), timeout=60, what=f"server s{i} to answer")
        return s

    def start_all(self) -> None:
        self.start(0)  # the first creates the keyring file the others are given
        for i in range(1, len(self.servers)):
            self.start(i, wait=False)
        for s in self.servers[1:]:
            wait_until(lambda s=s: self._up(s), timeout=60, what=f"server s{s.index} to answer")
        self.wait_leader()

    @staticmethod
    def _up(s: HAServer) -> bool:
        if s.proc is not None and s.proc.poll() is not None:
            raise AssertionError(f"server s{s.index} exited {s.proc.returncode}:\n{s.logs()}")
        return s.get("/v1/status/leader", timeout=2).status_code == 200

    def kill(self, i: int) -> None:
        s = self.servers[i]
        if s.proc is not None and s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGKILL)
            s.proc.wait(10)

    def stop(self, i: int) -> None:
        s = self.servers[i]
        if s.proc is not None:
            stop_process(s.proc)

    def running(self) -> list[HAServer]:
        return [s for s in self.servers if s.alive()]

    def leader(self, among: list[HAServer] | None = None) -> HAServer | None:
        """The server that every running server (of ``among``) names as leader, if they
        agree."""
        named = set()
        asked = self.running() if among is None else [s for s in among if s.alive()]
        for s in asked:
            try:
                named.add(s.leader())
            except (httpx.HTTPError, ValueError, KeyError):
                return None
        if len(named) != 1 or "" in named:
            return None
        url = named.pop()
        return next((s for s in self.running() if s.url == url), None)

    def wait_leader(
        self, timeout: float = 60.0, other_than: str = "", among: list[HAServer] | None = None
    ) -> HAServer:
        def found() -> HAServer | None:
            leader = self.leader(among)
            return leader if leader is not None and leader.url != other_than else None

        leader: HAServer = wait_until(found, timeout=timeout, interval=0.05, what="a leader")
        return leader

    def close(self) -> None:
        for i in range(len(self.servers)):
            with contextlib.suppress(Exception):
                self.stop(i)
        for i in range(len(self.servers)):
            with contextlib.suppress(Exception):
                self.kill(i)
