"""The simulation's store on etcd (``podium sim --store etcd``).

Without endpoints the run starts etcd members of its own (:class:`EtcdCluster`, data
under the run's directory) and stops them at the end; with endpoints (``--etcd``) it
writes under a fresh cluster name (``sim-<random>``) of that etcd and deletes its keys at
the end.  Either way, :meth:`SimEtcd.put_floor` measures etcd's own write latency (single
small puts through the same :class:`EtcdClient` as the store), so the run can print
Podium's commit latency beside the floor measured on the same machine at the same time.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from podium.state.errors import StoreError
from podium.state.etcd import EtcdBackend
from podium.state.etcd_client import EtcdClient, b64, delete_range, prefix_end
from podium.state.etcd_member import EtcdCluster, etcd_binary

FLOOR_PUTS = 300
"""Single-key puts timed for etcd's floor (~0.3-0.5 s on loopback)."""


@dataclass
class SimEtcd:
    """Where the simulation's store lives in etcd: the endpoints, the cluster name."""

    endpoints: list[str]
    cluster: str
    members: int | None = None
    """Members this run started (None: an etcd cluster given by the caller)."""
    _own: EtcdCluster | None = field(default=None, repr=False)

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, urls: Sequence[str] | None, members: int, root: Path, *, keep: bool = False
    ) -> Iterator[SimEtcd]:
        """etcd for one run: ``urls``' cluster, or ``members`` started under ``root``;
        cleaned up when the block exits, however it exits (an error, Ctrl-C): the members
        stopped and ``root`` removed (unless ``keep``), or the run's keys deleted."""
        own: EtcdCluster | None = None
        if urls:
            endpoints = [u.rstrip("/") for u in urls]
        else:
            if etcd_binary() is None:
                raise StoreError(
                    "--store etcd starts an etcd member of its own and etcd is not installed "
                    "(Debian: apt-get install etcd-server), or give --etcd URLS"
                )
            own = EtcdCluster.start(members, root)
            endpoints = own.endpoints
        sim = cls(
            endpoints,
            f"sim-{secrets.token_hex(4)}",
            members if own is not None else None,
            own,
        )
        try:
            yield sim
        finally:
            if own is not None:
                own.close()
                if not keep:
                    shutil.rmtree(root, ignore_errors=True)
            else:
                with contextlib.suppress(StoreError):  # etcd gone: nothing to delete
                    sim.drop()

    @property
    def prefix(self) -> str:
        return f"/podium/{self.cluster}/"

    def backend(self) -> EtcdBackend:
        """A backend on the run's cluster name (a fresh one each call: its own client)."""
        return EtcdBackend(self.endpoints, cluster=self.cluster)

    def put_floor(self, n: int = FLOOR_PUTS) -> list[float]:
        """Milliseconds of ``n`` single-key puts of 100 bytes (etcd's own write floor:
        one round trip, one raft entry, one fsync), through the store's client; the keys
        are deleted afterwards."""
        prefix = f"{self.prefix}sim-floor/"
        value = b64(b"x" * 100)
        out = []
        client = EtcdClient(self.endpoints)
        try:
            for i in range(n):
                body = {"key": b64(f"{prefix}{i:06d}"), "value": value}
                start = time.perf_counter()
                client.call("kv/put", body)
                out.append((time.perf_counter() - start) * 1000.0)
            client.txn([], [delete_range(prefix, prefix_end(prefix))])
        finally:
            client.close()
        return out

    def cpu_seconds(self) -> float | None:
        """CPU seconds (user and system) the members this run started have used so far
        (None for a cluster given by the caller: its members are not ours to watch)."""
        if self._own is None:
            return None
        total = 0.0
        for member in self._own.members:
            if member.proc is None:
                continue
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(member.proc.pid).cpu_times()
                total += t.user + t.system
        return total

    def drop(self) -> None:
        """Delete every key of the run's cluster name."""
        client = EtcdClient(self.endpoints)
        try:
            client.txn([], [delete_range(self.prefix, prefix_end(self.prefix))])
        finally:
            client.close()
