"""Nodes: registration, heartbeats and their expiry, eligibility, and drains.

Two kinds of work live here, and issue 15 separates them by who runs them:

- calls from the API (``register``, ``heartbeat``, ``set_eligibility``, ``drain``):
  writes any server accepts;
- the leader's periodic passes (``check_heartbeats``: nodes silent for TTL + grace go
  down; ``drain_tick``: the drainer moves allocations off draining nodes), run by
  :class:`podium.server.leader.LeaderDuties` only while it runs.

The time each node was last heard from is kept in memory (``last_heard``), never in
the store: a server that takes the leader's duties gives every node a fresh TTL
(:meth:`Nodes.refresh_heartbeats`) instead of trusting another server's clock.

Heartbeats are also heard off the event loop, by the heartbeat lane's thread
(:mod:`podium.server.lane`, :meth:`Nodes.hear`): what they touch (``last_heard`` and the
:class:`Hearing`) is guarded by ``heard_lock``, and every other heartbeat (a node that is
down, unknown, or on a server that does not lead) is the event loop's, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from podium.errors import NotFound
from podium.models import (
    Allocation,
    ClientStatus,
    DesiredStatus,
    DrainStrategy,
    Eligibility,
    Evaluation,
    Job,
    Node,
    NodeStatus,
    TriggeredBy,
)
from podium.models.acl import NodeSecret
from podium.server import catalog, evals
from podium.server.broker import EvalBroker
from podium.server.config import ServerConfig
from podium.server.hearing import Hearing
from podium.state import StateStore, Txn
from podium.state.store import NODE_SECRETS

log = logging.getLogger("podium.server")


class Nodes:
    def __init__(
        self,
        store: StateStore,
        broker: EvalBroker,
        config: ServerConfig,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.broker = broker
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        """The process' own time, for :meth:`Hearing.stall` (how long this server did not
        run), apart from ``clock``, the cluster's time that deadlines are counted in."""
        self.last_heard: dict[str, float] = {}
        """node id -> when its agent last registered or sent a heartbeat (this server's
        clock)."""
        self._pending_enqueue: list[Evaluation] = []
        self.missed_heartbeats = 0
        """Nodes this server marked down for missing their heartbeats (a counter, read by
        podium.server.metrics)."""
        self.hearing = Hearing(config.heartbeat_ttl)
        """Whether a silence is the nodes' or this server's own (:mod:`podium.server.hearing`)."""
        self.held_heartbeats = 0
        """Expiries held back because the silence looked like this server's own (a counter)."""
        self.heard_lock = threading.Lock()
        """Guards ``last_heard`` and ``hearing``: the heartbeat lane's thread writes them
        (:meth:`hear`) while the event loop reads them."""

    # ------------------------------------------------------------------ from the API
    def register(self, node: Node, secret: NodeSecret | None = None) -> int:
        """Write the node as its agent describes it; ``secret``: a new node's secret
        (hashed), stored in the same transaction so the node never exists without it."""
        store = self.store
        now = self.clock()
        existing = store.node(node.id)
        txn = store.txn()
        update: dict[str, object] = {
            "status": NodeStatus.READY,
            "status_description": "registered",
            "modify_index": txn.index,
            "status_updated_at": now,
            "last_heartbeat": now,
        }
        if existing is None:
            update["create_index"] = txn.index
        else:
            # What operators set on the server side survives an agent's re-registration.
            update["create_index"] = existing.create_index
            update["eligibility"] = existing.eligibility
            update["drain"] = existing.drain
        stored = node.model_copy(update=update)
        txn.put_node(stored)
        if secret is not None:
            txn.put_acl(NODE_SECRETS, secret.model_copy(update={"modify_index": txn.index}))
        was_down = existing is None or existing.status != NodeStatus.READY
        if was_down:
            self._node_evals(stored, txn, now, system=True)
        index = store.commit(txn)
        with self.heard_lock:
            self.last_heard[node.id] = now
            self.hearing.forget(node.id)
        if was_down:
            self._after_node_change()
        return index

    def hear(self, node_id: str) -> int | None:
        """A heartbeat heard off the event loop (the lane's thread): the store's index when
        it is heard (a known node that is not down: nothing to write), None when it must go
        to :meth:`heartbeat` on the loop.  Reads only what the store holds in memory."""
        node = self.store.node(node_id)
        if node is None or node.status == NodeStatus.DOWN:
            return None
        self._heard(node_id)
        return self.store.index

    def _heard(self, node_id: str) -> float:
        now = self.clock()
        with self.heard_lock:
            self.hearing.heard(node_id, now, self.last_heard.get(node_id))
            self.last_heard[node_id] = now
        return now

    def heartbeat(self, node_id: str) -> int:
        node = self.store.node(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} is not registered")
        now = self._heard(node_id)
        if node.status == NodeStatus.DOWN:
            # It reconnected: bring it back and let the scheduler look at its jobs
            # (their lost allocations were replaced; the agent will stop its copies).
            txn = self.store.txn()
            up = node.model_copy(
                update={
                    "status": NodeStatus.READY,
                    "status_description": "heartbeat resumed",
                    "status_updated_at": now,
                    "modify_index": txn.index,
                }
            )
            txn.put_node(up)
            self._node_evals(up, txn, now, system=True)
            catalog.sync_node(self.store, txn, node_id)  # what still runs there is back
            index = self.store.commit(txn)
            self._after_node_change()
            return index
        return self.store.index

    def set_eligibility(self, node_id: str, eligible: bool) -> int:
        node = self.store.node(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} not found")
        txn = self.store.txn()
        txn.put_node(
            node.model_copy(
                update={
                    "eligibility": Eligibility.ELIGIBLE if eligible else Eligibility.INELIGIBLE,
                    "modify_index": txn.index,
                }
            )
        )
        if eligible and node.eligibility != Eligibility.ELIGIBLE:
            self._node_evals(node, txn, self.clock(), system=True)
        index = self.store.commit(txn)
        if eligible:
            self._after_node_change()
        return index

    def drain(
        self,
        node_id: str,
        *,
        enable: bool = True,
        deadline: float = 3600.0,
        ignore_system: bool = False,
    ) -> int:
        """Start (or cancel) draining a node: it becomes ineligible, and the drainer
        moves its allocations off (see :meth:`drain_tick`)."""
        node = self.store.node(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} not found")
        if deadline < 0:
            raise ValueError("a drain deadline cannot be negative")
        now = self.clock()
        txn = self.store.txn()
        if enable:
            update: dict[str, object] = {
                "drain": True,
                "eligibility": Eligibility.INELIGIBLE,
                "drain_strategy": DrainStrategy(
                    deadline=deadline,
                    deadline_at=now + deadline if deadline > 0 else 0.0,
                    ignore_system=ignore_system,
                    started_at=now,
                ),
            }
        else:
            update = {"drain": False, "drain_strategy": None, "eligibility": Eligibility.ELIGIBLE}
        txn.put_node(node.model_copy(update={**update, "modify_index": txn.index}))
        if not enable:
            self._node_evals(node, txn, now, system=True)
        index = self.store.commit(txn)
        if enable:
            self.drain_tick()
        else:
            self._after_node_change()
        return index

    def unblock_evals(self) -> None:
        """Capacity may have changed: blocked evaluations become pending again."""
        evals.unblock(self.store, self.broker, self.clock)

    # ------------------------------------------------------------------ the leader's
    def refresh_heartbeats(self) -> None:
        """Give every node that is not down a fresh TTL from now (as Nomad's new leader
        does), so no node is declared down for the time this server did not watch."""
        now = self.clock()
        with self.heard_lock:
            self.hearing.restart(self.monotonic())
            for node in self.store.nodes():
                if node.status != NodeStatus.DOWN:
                    self.last_heard[node.id] = now

    def check_heartbeats(self) -> list[str]:
        """Mark nodes whose heartbeat is older than TTL + grace as down, unless the
        silence is this server's own (:mod:`podium.server.hearing`): a check that runs late
        counts every node's silence shorter by its lateness, and a mass of nodes silent at
        once while the others are heard late is held back by a TTL (logged, with why)."""
        with self.heard_lock:  # decided while no heartbeat is heard, committed after
            expired, now, limit = self._expiring()
        return self._expire(expired, now, limit)

    def _expiring(self) -> tuple[list[Node], float, float]:
        """The nodes to declare down now, with the clock's time and the limit (called with
        ``heard_lock`` held).  A heartbeat heard on the lane between this decision and its
        commit is answered, and its node's next heartbeat brings it back (as one heard
        just after the check would)."""
        now = self.clock()
        ttl = self.hearing.ttl = self.config.heartbeat_ttl
        limit = ttl + self.config.heartbeat_grace
        ready = [n for n in self.store.nodes() if n.status == NodeStatus.READY]
        shift, why = self.hearing.stall(self.monotonic())
        if shift:
            log.warning("heartbeats: %s", why)
            for n in ready:
                if n.id in self.last_heard:
                    self.last_heard[n.id] = min(now, self.last_heard[n.id] + shift)
        expired = [n for n in ready if now - self.last_heard.get(n.id, now) > limit]
        if not expired:
            return [], now, limit
        held, why = self.hearing.hold(now, [n.id for n in expired], len(ready))
        if held:
            log.warning("heartbeats: %s", why)
            self.held_heartbeats += len(held)
            for node_id in held:
                self.last_heard[node_id] = now - limit + ttl  # expires again a TTL from now
            expired = [n for n in expired if n.id not in held]
        return expired, now, limit

    def _expire(self, expired: list[Node], now: float, limit: float) -> list[str]:
        """Declare ``expired`` down (one commit) and queue their jobs' evaluations."""
        if not expired:
            return []
        txn = self.store.txn()
        for node in expired:
            down = node.model_copy(
                update={
                    "status": NodeStatus.DOWN,
                    "status_description": f"missed heartbeats for {limit:g}s",
                    "status_updated_at": now,
                    "modify_index": txn.index,
                }
            )
            txn.put_node(down)
            self._node_evals(down, txn, now)
            catalog.deregister_node(self.store, txn, node.id)
            # Allocations already told to stop whose agent never said they did: nobody
            # will, now.  They are lost (and free), or they would count as running forever.
            for alloc in self.store.allocs_by_node(node.id):
                if alloc.desired_status == DesiredStatus.STOP and not alloc.client_status.terminal:
                    txn.put_alloc(
                        alloc.model_copy(
                            update={
                                "client_status": ClientStatus.LOST,
                                "client_description": "node down before the allocation stopped",
                                "modify_index": txn.index,
                                "modify_time": now,
                            }
                        )
                    )
            log.warning("node %s (%s) is down: no heartbeat for %.0fs", node.name, node.id, limit)
        self.store.commit(txn)
        self.missed_heartbeats += len(expired)
        pending, self._pending_enqueue = self._pending_enqueue, []
        for ev in pending:
            self.broker.enqueue(ev)
        return [n.id for n in expired]

    def drain_tick(self) -> None:
        """One pass of the drainer over every draining node.

        Service allocations leave a few at a time: per group, at most its
        ``migrate.max_parallel`` may be migrating (stopped here, replacement not
        yet running).  Batch allocations may finish until the deadline.  System
        allocations go last, once nothing else is left (never, with
        ``ignore_system``).  At the deadline everything left is stopped.  When
        the node is empty, the drain is done and the node stays ineligible.
        """
        now = self.clock()
        store = self.store
        for node in store.nodes():
            if not node.drain or node.drain_strategy is None:
                continue
            strat = node.drain_strategy
            forced = bool(strat.deadline_at) and now >= strat.deadline_at
            on_node = store.allocs_by_node(node.id)
            live = [a for a in on_node if not a.terminal()]
            # what still runs on the node, told to stop or not: the node is not empty
            # (and system allocations must wait) until its tasks have exited
            present = [a for a in on_node if not a.client_status.terminal]
            kinds: dict[str, str] = {}
            for a in present:
                job = store.job(a.job_id, a.namespace)
                kinds[a.id] = job.type if job is not None else "service"
            stop: list[Allocation] = []
            if forced:
                stop = [a for a in live if not (strat.ignore_system and kinds[a.id] == "system")]
            else:
                groups: dict[tuple[str, str, str], list[Allocation]] = {}
                for a in live:
                    if kinds[a.id] == "service":
                        groups.setdefault((a.namespace, a.job_id, a.group), []).append(a)
                for (ns, job_id, group), allocs in groups.items():
                    job = store.job(job_id, ns)
                    spec_group = job.spec.groups.get(group) if job is not None else None
                    max_parallel = spec_group.migrate.max_parallel if spec_group else 1
                    migrating = sum(
                        1
                        for a in on_node
                        if a.job_id == job_id
                        and a.group == group
                        and a.desired_status == DesiredStatus.STOP
                        and a.desired_description.startswith("node drain")
                        and a.modify_time >= strat.started_at
                        and not self._replacement_running(a)
                    )
                    room = max(0, max_parallel - migrating)
                    stop += sorted(allocs, key=lambda a: a.index)[:room]
                others = [a for a in present if kinds[a.id] != "system"]
                if not others and not strat.ignore_system:
                    stop += [a for a in live if kinds[a.id] == "system"]
            if stop:
                self._drain_stop(node, stop, now, forced)
                continue
            remaining = [
                a for a in present if not (strat.ignore_system and kinds[a.id] == "system")
            ]
            if not remaining:
                txn = store.txn()
                txn.put_node(
                    node.model_copy(
                        update={
                            "drain": False,
                            "drain_strategy": None,
                            "modify_index": txn.index,
                            "status_description": "drain complete",
                        }
                    )
                )
                store.commit(txn)
                log.info("node %s drained", node.name)

    # ------------------------------------------------------------------ internals
    def _replacement_running(self, alloc: Allocation) -> bool:
        """Whether a migrating allocation is done moving: it has exited, and its
        replacement (when the scheduler linked one) is up."""
        if not alloc.client_status.terminal:
            return False
        if not alloc.next_allocation:
            return True
        nxt = self.store.alloc(alloc.next_allocation)
        return nxt is None or nxt.client_status in (ClientStatus.RUNNING, ClientStatus.COMPLETE)

    def _drain_stop(self, node: Node, allocs: list[Allocation], now: float, forced: bool) -> None:
        txn = self.store.txn()
        why = "node drain: deadline reached" if forced else "node drain"
        jobs: dict[tuple[str, str], Job] = {}
        for a in allocs:
            txn.put_alloc(
                a.model_copy(
                    update={
                        "desired_status": DesiredStatus.STOP,
                        "desired_description": why,
                        "modify_index": txn.index,
                        "modify_time": now,
                    }
                )
            )
            job = self.store.job(a.job_id, a.namespace)
            if job is not None:
                jobs[(job.namespace, job.id)] = job
        evs = []
        for job in jobs.values():
            ev = evals.new_eval(job, TriggeredBy.NODE_DRAIN, txn.index, now, node_id=node.id)
            txn.put_eval(ev)
            evs.append(ev)
        catalog.sync_txn(self.store, txn)
        self.store.commit(txn)
        for ev in evs:
            self.broker.enqueue(ev)

    def _node_evals(
        self, node: Node, txn: Txn, now: float, *, system: bool = False
    ) -> list[Evaluation]:
        """An evaluation for every job with allocations on ``node`` (enqueued after commit),
        and with ``system``, for every system job too: the node may now need one."""
        seen: set[tuple[str, str]] = set()
        evs: list[Evaluation] = []
        if system:
            for system_job in self.store.jobs():
                if system_job.type == "system" and not system_job.stop:
                    seen.add((system_job.namespace, system_job.id))
                    ev = evals.new_eval(
                        system_job, TriggeredBy.NODE_UPDATE, txn.index, now, node_id=node.id
                    )
                    txn.put_eval(ev)
                    evs.append(ev)
        for alloc in self.store.allocs_by_node(node.id):
            key = (alloc.namespace, alloc.job_id)
            if key in seen or alloc.terminal():
                continue
            seen.add(key)
            job = self.store.job(alloc.job_id, alloc.namespace)
            if job is None:
                continue
            ev = evals.new_eval(job, TriggeredBy.NODE_UPDATE, txn.index, now, node_id=node.id)
            txn.put_eval(ev)
            evs.append(ev)
        self._pending_enqueue.extend(evs)
        return evs

    def _after_node_change(self) -> None:
        """Enqueue node evaluations and wake blocked ones: capacity may have changed."""
        pending, self._pending_enqueue = self._pending_enqueue, []
        for ev in pending:
            self.broker.enqueue(ev)
        self.unblock_evals()
