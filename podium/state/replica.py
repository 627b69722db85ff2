"""A follower's replica: the etcd log applied to this server's in-memory store as it grows.

Every server of an HA cluster serves reads and blocking queries from its own
:class:`~podium.state.store.StateStore`; only the leader commits.  A follower keeps its
store current by tailing the etcd log (:meth:`EtcdBackend.tail`, a blocking iterator: run
on a thread of its own here) and applying each commit on the event loop through
:meth:`StateStore.apply_committed`, the same code the leader's own commit runs after its
backend call: the same tables, derived indexes, per-node change logs, and the same
blocking queries woken.  The rows are parsed into models on the tail's thread, so the
loop only applies them.

What it survives (docs/ha.md, "Followers"):

- an etcd member down: the tail reopens its watch on another member and re-reads the
  log past the last index it yielded; while no member answers it waits and retries, and
  the store keeps serving what it has;
- a compaction past it: the tail raises :class:`IndexConflict`; the replica loads the
  snapshot plus the log (on its thread), and the store is reset to it on the loop (every
  blocking query wakes), then the tail goes on from there.

Staleness, for the staleness header of reads: a probe reads etcd's ``head`` (a quorum
read, on any member that answers) every ``probe_interval`` seconds.  ``last_contact()``
is the time since etcd last answered (a probe, or a commit from the watch);
``staleness()`` the time since the store was last known to hold every commit etcd had,
that is since the start of the latest probe whose head the store had applied.  When the
probe sees the store behind and not moving for ``stall_after`` seconds (a watch on a
member cut off from the others stays open and says nothing), the tail is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from podium.state.errors import StoreError
from podium.state.etcd import EtcdBackend, IndexConflict, Tail
from podium.state.etcd_client import EtcdUnavailable
from podium.state.store import StateStore, Txn, parse_rows, txn_of

log = logging.getLogger("podium.state")

PROBE_INTERVAL = 1.0
"""Seconds between reads of etcd's head (what staleness is measured by)."""
STALL_AFTER = 10.0
"""Seconds the store may stay behind etcd's head without applying anything before the
tail is restarted (on another member if its own stopped answering)."""
RETRY_INTERVAL = 0.5
"""Seconds to wait before trying again after an error reading etcd."""


class Replica:
    """Keeps ``store`` current with the log of ``backend`` (an :class:`EtcdBackend`: the
    store's own, or another on the same cluster).  ``await start()`` on the event loop
    that owns the store, ``await stop()`` to end it."""

    def __init__(
        self,
        store: StateStore,
        backend: EtcdBackend,
        *,
        probe_interval: float = PROBE_INTERVAL,
        stall_after: float = STALL_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.backend = backend
        self.probe_interval = probe_interval
        self.stall_after = stall_after
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._probe: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._tail: Tail | None = None
        self._last_contact: float | None = None
        self._fresh_at: float | None = None
        """When the store was last known to hold every commit etcd had."""
        self._behind: tuple[float, int] | None = None
        """(probe start, etcd's head) of a probe that found the store behind."""
        self._stuck_since: float | None = None
        self._probed_index = -1
        self._restart_from: int | None = None
        """Set on the loop when the tail must start again from the store's index."""
        self.head = 0
        """etcd's head as the last probe read it."""
        self.revision = 0
        """etcd's revision when the last probe read the head."""
        self.resets = 0
        """How many times the store was reloaded from the snapshot."""
        self.restarts = 0
        """How many times a stalled tail was restarted."""
        self.probe_failures = 0
        """How many probes etcd did not answer."""
        self.error: BaseException | None = None
        """What stopped the replica, if something it could not recover from did."""

    # -- what reads report
    @property
    def applied_index(self) -> int:
        """The index of the last commit applied to the store."""
        return self.store.index

    def last_contact(self) -> float | None:
        """Seconds since etcd last answered this replica (None: never yet)."""
        if self._last_contact is None:
            return None
        return max(0.0, self._clock() - self._last_contact)

    def staleness(self) -> float | None:
        """Seconds since the store was last known to hold every commit etcd had (None:
        not yet known)."""
        if self._fresh_at is None:
            return None
        return max(0.0, self._clock() - self._fresh_at)

    # -- running
    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the replica is already running")
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._follow, args=(self.store.index,), name="podium-replica", daemon=True
        )
        self._thread.start()
        self._probe = asyncio.create_task(self._probe_loop(), name="podium-replica-probe")

    async def stop(self) -> None:
        self._stopping.set()
        tail = self._tail
        if tail is not None:
            tail.close()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)

    # -- the tail's thread
    def _follow(self, index: int) -> None:
        backend = self.backend
        while not self._stopping.is_set():
            restart_from, self._restart_from = self._restart_from, None
            if restart_from is not None:
                index = min(index, restart_from)
            tail = backend.tail(index)
            self._tail = tail
            if self._stopping.is_set():  # stop() ran before the tail was there to close
                tail.close()
                return
            try:
                for commit in tail:
                    self._last_contact = self._clock()
                    index = commit.index
                    if index <= self.store.index:
                        # already applied: the leader's own commit, seen again (the index
                        # only grows, so reading it from this thread cannot skip one due)
                        self._post(self._caught_up)
                        continue
                    txn = txn_of(commit.index, commit.puts, commit.deletes)
                    self._post(self._apply, txn)
            except IndexConflict as exc:  # compacted past this store: reload
                log.info("replica at index %d reloads from the snapshot: %s", index, exc)
                loaded = self._reload()
                if loaded is None:
                    return
                index, objs = loaded
                self._post(self._reset, index, objs)
            except StoreError as exc:  # a damaged record, say: say so, try again
                log.warning("replica at index %d: %s; trying again", index, exc)
                self._stopping.wait(RETRY_INTERVAL)
            except BaseException as exc:
                log.exception("replica stopped at index %d", index)
                self.error = exc
                return
            finally:
                tail.close()
                self._tail = None

    def _reload(self) -> tuple[int, list[tuple[str, Any]]] | None:
        """The snapshot plus the log, parsed (None when stopped meanwhile)."""
        while not self._stopping.is_set():
            try:
                index, rows = self.backend.load()
                return index, parse_rows(rows)
            except StoreError as exc:
                log.warning("replica cannot reload from etcd yet: %s", exc)
                self._stopping.wait(RETRY_INTERVAL)
        return None

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the loop, after what was posted before (in order)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing to apply to
            self._loop.call_soon_threadsafe(fn, *args)

    # -- on the loop
    def _apply(self, txn: Txn) -> None:
        if self._stopping.is_set():
            return
        try:
            self.store.apply_committed(txn)
        except StoreError as exc:  # not the next commit: never seen, but not fatal
            self._restart(str(exc))
            return
        self._caught_up()

    def _reset(self, index: int, objs: list[tuple[str, Any]]) -> None:
        if self._stopping.is_set() or index <= self.store.index:
            return
        self.store.reset(index, objs)
        self.resets += 1
        self._caught_up()

    def _caught_up(self) -> None:
        behind = self._behind
        if behind is not None and self.store.index >= behind[1]:
            self._fresh_at = behind[0]
            self._behind = None

    async def _probe_loop(self) -> None:
        head_key = self.backend.prefix + "head"
        client = self.backend.client
        while True:
            started = self._clock()
            try:
                revision, found, _ = await asyncio.to_thread(client.range, head_key)
            except (EtcdUnavailable, StoreError) as exc:
                self.probe_failures += 1
                log.debug("replica probe: %s", exc)
            else:
                self._last_contact = max(self._last_contact or started, started)
                self.head = int(found[0].value) if found else 0
                self.revision = revision
                self._probed(started, self.head)
            await asyncio.sleep(self.probe_interval)

    def _probed(self, started: float, head: int) -> None:
        applied = self.store.index
        if applied >= head:
            self._fresh_at = started
            self._behind = None
            self._stuck_since = None
        else:
            if self._behind is None:
                self._behind = (started, head)
            if applied != self._probed_index or self._stuck_since is None:
                self._stuck_since = started
            elif started - self._stuck_since >= self.stall_after:
                self._stuck_since = started
                self._restart(f"etcd is at {head}, nothing applied for {self.stall_after:g}s")
        self._probed_index = applied

    def _restart(self, why: str) -> None:
        """Start the tail again from the store's index (on the loop)."""
        log.warning("replica at index %d restarts its tail: %s", self.store.index, why)
        self.restarts += 1
        self._restart_from = self.store.index
        tail = self._tail
        if tail is not None:
            tail.close()
