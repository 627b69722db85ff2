"""One server of several on an etcd cluster: it leads or it follows, and it says so.

Every server keeps the whole state in memory and serves reads and blocking queries from
it; exactly one, the holder of the election's lease (podium.state.election), runs the
leader's duties (podium.server.leader) and commits.  This module switches between the
two on the event loop (docs/ha.md, "Servers on etcd"):

- **Following**: the :class:`~podium.state.replica.Replica` tails etcd's log into the
  store.  It runs on the leader too: a commit of the leader's own is skipped when seen
  again, and a commit whose answer was lost but which etcd applied after all is applied
  from the log rather than lost.  The store's backend is fenced by the election
  (``EtcdBackend.fence = election.fence``): a follower, or a deposed leader that does not
  know it yet, cannot commit; etcd refuses it atomically with the write.
- **Taking the lead** (the election's ``on_elected``): first the barrier, as Nomad's
  leader does before acting: read etcd's head (a quorum read, after winning, so every
  commit of a previous term is in it: their fence was the key this server's term
  replaced) and wait for the replica to apply through it; only then start the duties.
  The broker is rebuilt from the store's evaluations and every node gets a fresh
  heartbeat TTL (``LeaderDuties.start``), so the new leader acts on nothing it did not see.
- **Losing it** (``on_deposed``: the lease could not be renewed in time, its key went,
  or the server stops): the duties stop; the store keeps following.
- **Compaction**: the leader folds the log into a snapshot every ``compact_every``
  commits (or ``compact_interval`` seconds with any commit), on a thread.
- **Members**: each server writes ``/podium/<cluster>/members/<id>`` under a lease of
  its own every few seconds (its URL, name, applied index, last contact with etcd, etcd's
  revision); ``podium server members`` and ``/v1/status/peers`` read them.  A server that
  dies drops out within the lease's TTL.

The election's callbacks run on its thread; they only post to a queue the loop drains,
in order, so transitions never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium import __version__
from podium.models.api import MemberInfo
from podium.server.keyring import Keyring, KeyringError
from podium.state.election import LEADER_TTL, LeaderElection
from podium.state.errors import StoreError
from podium.state.etcd import EtcdBackend, Guard
from podium.state.etcd_client import EtcdClient, compare, get, prefix_end, put
from podium.state.replica import Replica

if TYPE_CHECKING:
    from podium.server.core import Server

log = logging.getLogger("podium.server")

COMPACT_EVERY = 10_000
"""Commits between two compactions of etcd's log into a snapshot."""
COMPACT_INTERVAL = 600.0
"""Seconds after which any commit since the last compaction is folded anyway."""
MEMBER_TTL = 10
"""Seconds of a member record's lease: a dead server leaves the list within this."""
ANNOUNCE_EVERY = 3.0
"""Seconds between two writes of this server's member record."""
RETRY = 0.5


class HighAvailability:
    """Leading or following for ``server`` (whose store is on ``backend``)."""

    replicated = True

    def __init__(
        self,
        server: Server,
        backend: EtcdBackend,
        endpoints: Sequence[str],
        *,
        cluster: str = "default",
        ttl: int = LEADER_TTL,
        compact_every: int = COMPACT_EVERY,
        compact_interval: float = COMPACT_INTERVAL,
        announce_every: float = ANNOUNCE_EVERY,
        member_ttl: int = MEMBER_TTL,
    ) -> None:
        url = server.config.advertise_url
        if not url:
            raise ValueError("a server on etcd needs the URL it is reached at (advertise_url)")
        self.server = server
        self.backend = backend
        self.url = url
        self.cluster = cluster
        self.compact_every = compact_every
        self.compact_interval = compact_interval
        self.announce_every = announce_every
        self.member_ttl = member_ttl
        self.election = LeaderElection(
            endpoints,
            url=url,
            cluster=cluster,
            ttl=ttl,
            on_elected=self._on_elected,
            on_deposed=self._on_deposed,
        )
        backend.fence = self.election.fence
        backend.time_left = self.election.time_left
        self.replica = Replica(server.store, backend)
        self._client = EtcdClient(endpoints, timeout=float(ttl))
        """Member records and the barrier's head read: apart from the store's client, so
        a slow commit never delays them."""
        self._members_prefix = f"/podium/{cluster}/members/"
        self._member_key = self._members_prefix + hashlib.sha256(url.encode()).hexdigest()[:16]
        self._member_lease = 0
        self.started = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[Guard | None] = asyncio.Queue()
        self._leading = asyncio.Event()
        self._barrier = False
        """True between winning the election and the duties' start (the catch-up)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._lead_tasks: list[asyncio.Task[None]] = []
        self.terms = 0
        """How many times this server took the lead."""

    # ------------------------------------------------------------------ ClusterView
    def is_leader(self) -> bool:
        return self._leading.is_set() and self.election.is_leader

    def leader_url(self) -> str:
        """The leader as this server knows it, "" when it cannot know: a follower that
        has not heard from etcd for a lease's TTL cannot tell whether that leader's lease
        still lives (etcd lost its quorum, or this server is cut off)."""
        if self.is_leader():
            return self.url
        url = self.election.leader_url()
        contact = self.replica.last_contact()
        if not url or contact is None or contact > self.election.ttl:
            return ""
        return url

    def staleness(self) -> float | None:
        if self.is_leader():
            return 0.0
        return self.replica.staleness()

    async def wait_leading(self, timeout: float) -> bool:
        if self._barrier and not self._leading.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._leading.wait()
        return self.is_leader()

    async def members(self) -> list[MemberInfo]:
        _, found, _ = await asyncio.to_thread(
            self._client.range, self._members_prefix, prefix_end(self._members_prefix)
        )
        leader = self.leader_url()
        now = time.time()
        out = []
        for kv in found:
            try:
                doc = json.loads(kv.value)
                out.append(
                    MemberInfo(
                        url=doc["url"],
                        name=doc.get("name") or doc["url"],
                        leader=doc["url"] == leader,
                        version=doc.get("version", ""),
                        applied_index=int(doc.get("applied_index", 0)),
                        last_contact=doc.get("last_contact"),
                        etcd_revision=int(doc.get("etcd_revision", 0)),
                        reported_ago=max(0.0, now - float(doc.get("time", now))),
                        started=float(doc.get("started", 0.0)),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("member record %s is not one: %s", kv.key, exc)
        return sorted(out, key=lambda m: m.url)

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        """Follow etcd's log, announce this server, and campaign."""
        self._loop = asyncio.get_running_loop()
        await self.replica.start()
        self._tasks = [
            asyncio.create_task(self._transitions(), name="ha-transitions"),
            asyncio.create_task(self._announce(), name="ha-members"),
        ]
        self.election.start()

    async def stop(self) -> None:
        """Resign (a successor wins without waiting for the lease to expire), stop the
        duties, stop following, and take this server's member record away."""
        await asyncio.to_thread(self.election.stop, resign=True, timeout=10.0)
        await self._halt(revoke_member=True)

    async def crash(self) -> None:
        """Stop as a server killed with -9 would, in this process (the simulation's
        failover, tests): no resignation, so the leader's key stays until its lease runs
        out on its own and a successor wins only then; the member record is left to
        expire too.  The duties stop and the store stops following."""
        await asyncio.to_thread(self.election.stop, resign=False, timeout=10.0)
        await self._halt(revoke_member=False)

    async def _halt(self, *, revoke_member: bool) -> None:
        await self._step_down()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.replica.stop()
        if self._member_lease and revoke_member:
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self._client.lease_revoke, self._member_lease, timeout=2.0)
        self._client.close()

    # ------------------------------------------------------------------ transitions
    def _on_elected(self, guard: Guard) -> None:
        self._post(guard)

    def _on_deposed(self) -> None:
        self._post(None)

    def _post(self, event: Guard | None) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to lead
            loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def _transitions(self) -> None:
        while True:
            event = await self._events.get()
            try:
                if event is None:
                    await self._step_down()
                else:
                    await self._take_lead(event)
            except Exception:
                log.exception("changing the lead failed")

    async def _take_lead(self, guard: Guard) -> None:
        """The barrier, then the duties (unless the term ended meanwhile)."""
        self._barrier = True
        try:
            head = await self._caught_up(guard)
            if head is None:
                return
            self.server.leader.start()
            self._lead_tasks = [
                asyncio.create_task(self._compactions(), name="ha-compaction"),
            ]
            self._leading.set()
            self.terms += 1
            log.info("%s leads (term %d) from index %d", self.url, guard.create_revision or 0, head)
        finally:
            self._barrier = False

    async def _caught_up(self, guard: Guard) -> int | None:
        """etcd's head once the store has applied it; None when the term ended first."""
        while self._events.empty():
            try:
                if self.election.guard() != guard:
                    return None
            except StoreError:
                return None
            try:
                _, found, _ = await asyncio.to_thread(
                    self._client.range, self.backend.prefix + "head"
                )
            except StoreError as exc:
                log.warning("the new leader cannot read etcd's head yet: %s", exc)
                await asyncio.sleep(RETRY)
                continue
            head = int(found[0].value) if found else 0
            store = self.server.store
            while store.index < head and self._events.empty():
                await store.wait_for(store.index, RETRY)
            if store.index >= head:
                return head
        return None

    async def _step_down(self) -> None:
        was = self._leading.is_set()
        self._leading.clear()
        tasks, self._lead_tasks = self._lead_tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.server.leader.stop()
        if was:
            log.warning("%s no longer leads; it follows", self.url)

    # ------------------------------------------------------------------ the leader's upkeep
    async def _compactions(self) -> None:
        store = self.server.store
        last_index, last_time = store.index, time.monotonic()
        while True:
            await asyncio.sleep(min(30.0, self.compact_interval))
            due = store.index - last_index >= self.compact_every or (
                store.index > last_index and time.monotonic() - last_time >= self.compact_interval
            )
            if not due:
                continue
            try:
                index = await asyncio.to_thread(self.backend.compact)
            except StoreError as exc:
                log.warning("compacting etcd's log failed: %s", exc)
                continue
            last_index, last_time = index, time.monotonic()
            log.info("etcd's log compacted into a snapshot at index %d", index)

    # ------------------------------------------------------------------ members
    def _record(self) -> dict[str, Any]:
        replica = self.replica
        return {
            "url": self.url,
            "name": self.server.config.name or self.url,
            "version": __version__,
            "applied_index": self.server.store.index,
            "last_contact": replica.last_contact(),
            "etcd_revision": replica.revision,
            "time": time.time(),
            "started": self.started,
        }

    async def _announce(self) -> None:
        """Write this server's member record now and every ``announce_every`` seconds,
        under a lease of its own (granted again when etcd forgot it)."""
        while True:
            try:
                await asyncio.to_thread(self._announce_once)
            except StoreError as exc:
                log.debug("writing the member record failed: %s", exc)
            await asyncio.sleep(self.announce_every)

    def _announce_once(self) -> None:
        if self._member_lease and self._client.lease_keepalive(self._member_lease) <= 0:
            self._member_lease = 0
        if not self._member_lease:
            self._member_lease, _ = self._client.lease_grant(self.member_ttl)
        value = json.dumps(self._record())
        self._client.txn([], [put(self._member_key, value, lease=self._member_lease)])


def cluster_keyring(backend: EtcdBackend, keyring_file: str | None, directory: Path) -> Keyring:
    """This server's keyring, checked against the cluster's: every server on etcd must
    seal and open variables (and sign workload tokens) with the same key, so the first
    server records its key's id (not the key) in etcd, ``/podium/<cluster>/keyring_id``,
    and the others must be given that key (as Kubernetes' API servers share one
    encryption config): ``--keyring-file``, a copy of the first server's key file.  The
    key never goes into etcd: whoever reads etcd's data must not also hold the key."""
    key = backend.prefix + "keyring_id"
    _, found, _ = backend.client.range(key)
    cluster_key = found[0].value.decode() if found else None
    path = Path(keyring_file) if keyring_file else None
    have_keys = path.exists() if path is not None else any(directory.glob("*.key"))
    if cluster_key is not None and not have_keys:
        raise KeyringError(_copy_key(cluster_key, "this server has no keyring yet"))
    keyring = Keyring.from_file(path) if path is not None else Keyring.load_or_create(directory)
    if cluster_key is None:
        result = backend.client.txn(
            [compare(key, "CREATE", 0)], [put(key, keyring.active.id)], [get(key)]
        )
        if result.succeeded:
            return keyring
        cluster_key = result.kvs(0)[0].value.decode()
    if keyring.active.id != cluster_key:
        raise KeyringError(
            _copy_key(
                cluster_key,
                f"this server's keyring ({keyring.where}) seals with key {keyring.active.id}",
            )
        )
    return keyring


def _copy_key(cluster_key: str, why: str) -> str:
    return (
        f"the cluster's variables and workload tokens are sealed with keyring key "
        f"{cluster_key}, and {why}: copy that key's file from a server of the cluster "
        f"(<its data dir>/server/keyring/{cluster_key}.key, or its --keyring-file) to this "
        "machine and start this server with --keyring-file PATH"
    )
