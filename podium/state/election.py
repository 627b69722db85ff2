"""Leader election through an etcd lease: which server runs the leader's duties, and the
fence its commits carry (docs/ha.md, "Leader election").

Why here, in ``state`` and not in ``server``: it speaks etcd only (leases, a txn, a
watch, through :mod:`podium.state.etcd_client`) and is the other half of the store's
fence: it hands out the :class:`~podium.state.etcd.Guard` that
:class:`~podium.state.etcd.EtcdBackend` compares inside every commit, and raises its
:class:`~podium.state.etcd.FenceLost`.  The server sees two callbacks and a URL.

The protocol, one key per Podium cluster::

    /podium/<cluster>/leader = <the leader's advertise URL>, attached to its lease

- **Campaign**: grant a lease (TTL a few seconds), then one txn "create the key if it is
  absent" with that lease.  The winner's term is named by the key's create revision (a
  new term always creates the key anew, so a new revision) and its lease: that is the
  guard.  A loser revokes its unused lease and waits for the key to go.
- **Keep**: renew the lease every TTL/3.  A renewal sent at ``t0`` that succeeds proves
  the lease lives at least until ``t0 + TTL`` by etcd's clock (etcd started the TTL when
  the request arrived, after ``t0``; a new etcd leader only extends leases).
- **Step down on its own**: the term's deadline is ``t0 + TTL - margin`` of the last
  renewal that succeeded.  From that instant :meth:`LeaderElection.fence` refuses
  (:class:`FenceLost`) and ``on_deposed`` is called, *before* etcd could expire the lease
  and let another candidate create the key.  Also when a renewal says the lease is gone,
  or the watch sees the key deleted or recreated by another.  Whatever the local clocks
  do, the commit's guard is compared by etcd atomically with the write: a deposed leader
  that still believed it leads cannot commit after another was elected.
- **Resign** (a clean :meth:`LeaderElection.stop`): ``on_deposed`` first, then revoke the
  lease: the key goes at once and a successor wins without waiting for the TTL.
- **Observe**: a watch on the key keeps :meth:`LeaderElection.leader_url` current on every
  candidate; a range read every TTL covers a watch that went quiet.

Threads, not asyncio: the etcd client is blocking (as the Backend seam is), and the
deadline must be kept even while a renewal hangs on a dead member, so a supervisor thread
waits for the deadline while a keeper thread renews.  The callbacks run on the
supervisor thread, one at a time, alternating (elected, deposed, elected ...): a server
hands them to its event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from podium.state.errors import StoreError
from podium.state.etcd import FenceLost, Guard
from podium.state.etcd_client import (
    KV,
    EtcdClient,
    Watch,
    compare,
    get,
    put,
)

log = logging.getLogger("podium.election")

LEADER_TTL = 5
"""Seconds of the leader's lease: a leader killed outright is replaced within about this."""
RETRY = 0.5
"""Seconds between attempts while etcd does not answer (a follower, or a campaign)."""


@dataclass
class Term:
    """One tenure of this candidate: the key it created and the lease it holds."""

    lease: int
    ttl: int
    guard: Guard
    deadline: float
    """This server's clock: the instant it can no longer prove its lease alive."""
    over: bool = False
    lost: str = ""
    """Why the term must end now (the lease is gone, the key was replaced)."""


class LeaderElection:
    """Campaign for ``/podium/<cluster>/leader`` with this server's ``url``.

    ``on_elected(guard)`` is called when this server wins (the guard names its term),
    ``on_deposed()`` when it stops leading, for whatever reason, including :meth:`stop`.
    :meth:`fence` is what ``EtcdBackend(fence=...)`` takes.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        url: str,
        cluster: str = "default",
        ttl: int = LEADER_TTL,
        margin: float | None = None,
        on_elected: Callable[[Guard], object] = lambda guard: None,
        on_deposed: Callable[[], object] = lambda: None,
        client: EtcdClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if "/" in cluster or not cluster:
            raise ValueError(f"bad cluster name {cluster!r}")
        if ttl < 1:
            raise ValueError("the lease's TTL is a whole number of seconds, at least 1")
        if margin is not None and not 0 <= margin < ttl:
            raise ValueError("the margin is at least 0 and less than the TTL")
        self.client = client or EtcdClient(endpoints, timeout=float(ttl))
        self._own_client = client is None
        self.key = f"/podium/{cluster}/leader"
        self.url = url
        self.ttl = ttl
        self.margin = margin
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.clock = clock
        self._cond = threading.Condition()
        self._term: Term | None = None
        self._observed: KV | None = None
        self._observed_at = 0
        """The etcd revision ``_observed`` is known as of (0: never read)."""
        self._stopped = False
        self._started = False
        self._resign = True
        self._unrevoked: list[int] = []
        """Leases of ended terms a revoke did not reach (retried before each campaign)."""
        self._watch: Watch | None = None
        self._threads: list[threading.Thread] = []

    # -- what the server asks
    @property
    def is_leader(self) -> bool:
        """True while this server holds the key and can prove its lease alive."""
        with self._cond:
            return self._live(self._term)

    def _live(self, term: Term | None) -> bool:
        return term is not None and not term.over and not term.lost and self.clock() < term.deadline

    def guard(self) -> Guard:
        """The current term's guard; :class:`FenceLost` when not leading (or no longer
        sure to be: past the deadline, even before ``on_deposed`` has run)."""
        with self._cond:
            term = self._term
            if term is None or not self._live(term):
                raise FenceLost(
                    f"{self.url} is not the leader (it holds no live lease on {self.key}): "
                    "nothing was written"
                )
            return term.guard

    def time_left(self) -> float:
        """Seconds until this server's term can no longer be proven (0 when not leading)."""
        with self._cond:
            term = self._term
            if term is None or not self._live(term):
                return 0.0
            return max(0.0, term.deadline - self.clock())

    def fence(self) -> list[Guard]:
        """The ``fence`` callback of ``EtcdBackend``: the guard of the current term."""
        return [self.guard()]

    def leader_url(self) -> str:
        """The current leader's URL as this server knows it ("" when there is none)."""
        with self._cond:
            if self._live(self._term):
                return self.url
            observed = self._observed.value.decode() if self._observed is not None else ""
            # its own key, seen before it stepped down, names no leader it knows of
            return "" if observed == self.url else observed

    # -- life
    def start(self) -> None:
        """Campaign and observe, on threads of their own, until :meth:`stop`."""
        if self._started:
            return
        self._started = True
        for target, name in ((self._run, "election"), (self._observe, "election-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, *, resign: bool = True, timeout: float | None = None) -> None:
        """Stop campaigning.  A leader calls ``on_deposed`` and, with ``resign``, revokes
        its lease so a successor wins at once (without, the key stays until the lease
        expires, as after a crash).  Blocks until ``on_deposed`` has returned: call it from
        a thread when that callback needs the caller's event loop."""
        with self._cond:
            self._stopped = True
            self._resign = resign
            watch = self._watch
            self._cond.notify_all()
        if watch is not None:
            watch.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        if self._own_client:
            self.client.close()

    # -- the supervisor: campaign while following, keep the deadline while leading
    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    break
                term = self._term
            if term is None:
                self._follow()
                continue
            with self._cond:
                while not self._stopped and not term.lost and self.clock() < term.deadline:
                    self._cond.wait(max(0.0, term.deadline - self.clock()))
                if self._stopped:
                    break
                why = term.lost or "its lease could not be renewed within its TTL"
            self._end_term(why, revoke=True)
        with self._cond:
            term, resign = self._term, self._resign
        if term is not None:
            self._end_term("stopping", revoke=resign)

    def _follow(self) -> None:
        """Campaign when the key is known to be free; while another holds it, wait for
        the watch to report a change, re-reading the key every TTL in case it went quiet."""
        self._revoke_ended()
        with self._cond:
            at, holder = self._observed_at, self._observed
        if at == 0:
            self._read_key()
            return
        if holder is None:
            if not self._campaign():
                with self._cond:  # lost (the holder is noted) or etcd did not answer
                    if not self._stopped and self._observed is None:
                        self._cond.wait(RETRY)
            return
        with self._cond:
            changed = self._cond.wait_for(
                lambda: self._stopped or self._observed_at != at, timeout=self.ttl
            )
        if not changed:
            self._read_key()

    def _read_key(self) -> None:
        try:
            revision, found, _ = self.client.range(self.key)
        except StoreError as exc:
            log.debug("reading %s failed: %s", self.key, exc)
            with self._cond:
                self._cond.wait(RETRY)
            return
        self._note(found[0] if found else None, revision)

    def _campaign(self) -> bool:
        """One attempt: a new lease, then create the key under it if it is absent."""
        started = self.clock()
        try:
            lease, ttl = self.client.lease_grant(self.ttl)
        except StoreError as exc:
            log.debug("granting a lease failed: %s", exc)
            with self._cond:
                self._cond.wait(RETRY)
            return False
        try:
            result = self.client.txn(
                [compare(self.key, "CREATE", 0)],
                [put(self.key, self.url, lease=lease)],
                [get(self.key)],
            )
        except StoreError as exc:  # perhaps created after all: the lease's end undoes it
            log.debug("campaigning failed: %s", exc)
            self._revoke(lease)
            return False
        if not result.succeeded:
            found = result.kvs(0)
            self._note(found[0] if found else None, result.revision)
            self._revoke(lease)
            return False
        term = Term(
            lease=lease,
            ttl=ttl,
            guard=Guard(self.key, create_revision=result.revision, lease=lease),
            deadline=started + ttl - self._margin(ttl),
        )
        if self.clock() >= term.deadline:  # the campaign took too long to be sure of it
            self._revoke(lease)
            return False
        with self._cond:
            if self._stopped:
                term.over = True
            else:
                self._term = term
                self._observed = KV(self.key, self.url.encode(), result.revision, result.revision)
                self._observed_at = max(self._observed_at, result.revision)
        if term.over:
            self._revoke(lease)
            return False
        keeper = threading.Thread(
            target=self._keep, args=(term,), name="election-keepalive", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [keeper]
        keeper.start()
        log.info("%s is the leader (term %d, lease %x)", self.url, result.revision, lease)
        self._call(lambda: self.on_elected(term.guard), "on_elected")
        return True

    def _end_term(self, why: str, *, revoke: bool) -> None:
        with self._cond:
            term = self._term
            if term is None:
                return
            term.over = True
            self._term = None
            self._cond.notify_all()
        log.warning("%s steps down: %s", self.url, why)
        self._call(self.on_deposed, "on_deposed")
        if revoke:
            self._revoke(term.lease)

    def _margin(self, ttl: int) -> float:
        """How long before the lease's earliest end this server stops leading: the time a
        woken thread may take, and clock rates that differ a little."""
        return self.margin if self.margin is not None else max(0.5, ttl / 5)

    # -- the keeper: renew the lease, push the deadline
    def _keep(self, term: Term) -> None:
        interval = term.ttl / 3
        wait = interval
        while True:
            with self._cond:
                if term.over or self._stopped:
                    return
                self._cond.wait(wait)
                if term.over or self._stopped:
                    return
                left = term.deadline - self.clock()
            sent = self.clock()
            try:
                ttl = self.client.lease_keepalive(term.lease, timeout=max(0.1, min(left, interval)))
            except StoreError as exc:
                log.warning("renewing the leader's lease failed: %s", exc)
                wait = interval / 3  # the deadline nears: try again soon
                continue
            with self._cond:
                if ttl <= 0:
                    term.lost = "etcd says its lease is gone"
                else:
                    term.deadline = max(term.deadline, sent + ttl - self._margin(ttl))
                self._cond.notify_all()
            wait = interval

    # -- the observer: who leads, from a watch on the key
    def _observe(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
            try:
                revision, found, _ = self.client.range(self.key)
                self._note(found[0] if found else None, revision)
                watch = self.client.watch(self.key, (self.key + "\x00").encode(), revision + 1)
                with self._cond:
                    if self._stopped:
                        return
                    self._watch = watch
                try:
                    for at, events in watch:
                        for kind, kv in events:
                            self._note(kv if kind == "PUT" else None, kv.mod_revision or at)
                finally:
                    watch.close()
                    with self._cond:
                        self._watch = None
            except StoreError as exc:
                log.debug("watching %s: %s", self.key, exc)
            with self._cond:
                if not self._stopped:
                    self._cond.wait(RETRY)

    def _note(self, found: KV | None, revision: int) -> None:
        """What the key holds as of ``revision``; a term whose key is gone or another's
        is lost."""
        with self._cond:
            if revision < self._observed_at:
                return  # older news
            self._observed, self._observed_at = found, revision
            term = self._term
            if (
                term is not None
                and not term.over
                and revision >= (term.guard.create_revision or 0)
                and (found is None or found.create_revision != term.guard.create_revision)
            ):
                term.lost = "its leader key was deleted or taken over"
            self._cond.notify_all()

    # -- helpers
    def _revoke(self, lease: int) -> None:
        try:
            self.client.lease_revoke(lease, timeout=RETRY * 2)
        except StoreError as exc:
            log.debug("revoking lease %x failed: %s (it expires on its own)", lease, exc)
            with self._cond:
                self._unrevoked.append(lease)

    def _revoke_ended(self) -> None:
        with self._cond:
            leases, self._unrevoked = self._unrevoked, []
        for lease in leases:  # one that fails again is put back by _revoke
            self._revoke(lease)

    def _call(self, callback: Callable[[], object], name: str) -> None:
        try:
            callback()
        except Exception:
            log.exception("the election's %s callback failed", name)
