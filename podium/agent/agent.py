"""The node agent: registers the machine, heartbeats, runs its allocations.

It talks to the servers only through :class:`podium.client.AsyncClient`.  Its
loops:

- **sync**: a blocking query on this node's allocations; new ones get an
  :class:`~podium.agent.runner.AllocRunner`, changed ones an update;
- **report**: task-state changes are batched (every ``report_interval``) into
  one request, retried until the server has them; the changes that follow a sync
  (the runners it started) ride on the next sync instead (one request, not two);
- **heartbeat**: every TTL/2 (less a random fifth), to the server's heartbeat lane
  when it names one (podium.server.lane); a server that forgot the node gets a
  re-register;
- **persist**: runner state is written to the agent's SQLite file in batches,
  so a restarted agent (even after kill -9) re-attaches to its tasks;
- **log rotation**: copy-truncate of oversized task logs.

When it cannot reach a server it keeps its tasks running, as Nomad and the
kubelet do, and catches up when the server answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from podium.agent import secretsdir
from podium.agent.config import AgentSettings
from podium.agent.devices import default_plugins, fingerprint_devices
from podium.agent.fingerprint import fingerprint_attributes, fingerprint_resources
from podium.agent.identity import AgentIdentities
from podium.agent.localstate import LocalState, StoredAlloc
from podium.agent.metrics import AgentMetrics
from podium.agent.runner import AllocRunner
from podium.client import AsyncClient
from podium.client.results import SpecCache
from podium.drivers import builtin_drivers
from podium.drivers.base import Driver
from podium.drivers.logrotate import rotate_if_needed
from podium.drivers.uids import UidPool
from podium.errors import Conflict, DriverError, NotFound
from podium.memtrim import trim_after
from podium.models import (
    AllocatedPort,
    Allocation,
    AllocClientUpdate,
    ClientStatus,
    DesiredStatus,
    JobSpec,
    Network,
    Node,
    NodeResources,
)
from podium.models.compact import compact_alloc
from podium.models.namespace import spec_key

log = logging.getLogger("podium.agent")

DYNAMIC_PORTS = (20000, 32000)
"""The range dynamic ports are chosen from (as Nomad's default min/max_dynamic_port)."""


def _port_free(port: int) -> bool:
    """Nothing on this machine listens on ``port`` (TCP, any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


PEERS_INTERVAL = 60.0
"""How often the agent asks its server for the cluster's servers (``/v1/status/peers``)."""
HAVE_LIMIT = 16_000
"""Characters of ``have`` a sync may carry (httpx refuses queries over 64 KiB)."""

PERSIST_DELAY = 0.05
FIRST_REPORT_WAIT = 1.0
"""At most this long the sync loop waits, after an answer that started allocations, for
their first states (started or failed), so they ride on the next sync: one request per
change of a busy node.  Tasks that take longer to start report on their own."""
START_CONCURRENCY = 32
"""Tasks being started at once.  A burst of 1,000 starts then proceeds in waves,
so the loop keeps serving (and reporting the tasks already running) meanwhile
instead of forking a thousand times before it looks at anything else."""


@dataclass(slots=True)
class _Reports:
    """Reports taken for one request, to give back if it fails."""

    ids: set[str]
    direct: dict[str, AllocClientUpdate]
    updates: list[AllocClientUpdate]
    order: tuple[str, int]


HEARTBEAT_DEADLINE_MAX = 10.0
"""A heartbeat is answered in milliseconds: one unanswered this long is stuck (a dead
connection, a request lost in a backlog) and is sent again on a fresh connection, however
long the TTL (a 5,000-node cluster's is 100 s: twenty tries before its TTL + grace)."""


def heartbeat_interval(ttl: float) -> float:
    """Seconds to the next heartbeat: TTL/2, less up to a fifth at random, so that the
    nodes that registered at once (a cluster starting) do not beat in step forever."""
    return max(0.2, ttl / 2 * random.uniform(0.8, 1.0))


def heartbeat_deadline(ttl: float) -> float:
    """Seconds a heartbeat may wait for its answer before it is sent again: TTL/2 (the
    interval between heartbeats), at least one second, at most HEARTBEAT_DEADLINE_MAX."""
    return max(1.0, min(ttl / 2, HEARTBEAT_DEADLINE_MAX))


class Agent:
    shared_specs: SpecCache | None = None
    """Parsed job specs to take a sync's specs from instead of validating them again:
    none for a real agent (the server sends only the specs it lacks); the simulator's
    agents share one per process (see podium.sim.nodes.SimAgent)."""

    def __init__(
        self,
        settings: AgentSettings,
        client: AsyncClient,
        *,
        drivers: dict[str, Driver] | None = None,
        clock: Callable[[], float] = time.time,
        state: LocalState | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        # Absolute: tasks run in their own directories, and their shims write the
        # state paths they are given (a relative --data-dir left every task unrecorded).
        self.data_dir = Path(settings.data_dir).absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # ``state``: the simulator gives each of its agents an in-memory one
        self.state = state if state is not None else LocalState(self.data_dir / "agent.db")
        self._forgetting: set[str] = set()
        """Allocations being stopped and removed (``_forget``): their uids are still held."""
        self.uid_pool: UidPool | None = None
        """The uids of exec tasks, one per allocation, leased through ``agent.db`` (loaded
        here, before any task starts or is re-attached to); None with drivers given."""
        if drivers is None:
            self.uid_pool = UidPool(
                *settings.exec_uid_range,
                leases=self.state.uid_leases(),
                on_change=self.state.set_uid_lease,
            )
            drivers = builtin_drivers(
                raw_exec_enabled=settings.raw_exec_enabled,
                cgroup_root=settings.cgroup_root,
                docker_policy=settings.docker_policy(),
                exec_options=settings.exec_options(self.uid_pool),
            )
        self.drivers: dict[str, Driver] = drivers
        self.node_id = self._node_id()
        secret = self.state.get("node_secret")
        if secret:
            # the node's proof of identity, from its first registration: a restarted
            # agent speaks for its node again without registering it anew
            client.node_secrets[self.node_id] = secret
        self.node_name = settings.name or socket.gethostname()
        self.http_addr = ""
        self.runners: dict[str, AllocRunner] = {}
        self._dirty: set[str] = set()
        self._direct: dict[str, AllocClientUpdate] = {}
        self._orphans_checked = False
        self._peers_asked = -PEERS_INTERVAL
        self._peers_task: asyncio.Task[None] | None = None
        """Reports for allocations that have no runner (stopped before they started)."""
        self._persist: set[str] = set()
        self._persist_scheduled = False
        self._report_wakeup = asyncio.Event()
        self._report_session = uuid.uuid4().hex[:16]
        self._report_seq = 0
        """This run and its count of report requests: the server refuses a request older
        than one it took (a sync carrying reports and a report may both be in flight)."""
        self._gathering = False
        """The sync loop sends soon and takes the reports along (see FIRST_REPORT_WAIT)."""
        self._first_reports: set[str] = set()
        """The allocations the last sync started whose first state is still awaited."""
        self._first_reported = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.heartbeat_ttl = 10.0
        self.registered = asyncio.Event()
        self.start_slots = asyncio.Semaphore(START_CONCURRENCY)
        self.synced_index = 0
        self._specs: dict[str, JobSpec] = {}
        """Job specs by ``job@version``, shared by the runners (delta syncs omit them)."""
        self._spec_indexes: dict[str, int] = {}
        """Each cached spec's stored-version index: what ``have`` names, so a job purged and
        registered again (its version 0 anew) is sent again, not taken from this cache."""
        self._known: dict[str, int] = {}
        """Allocation id -> the index of the last change of it this agent applied."""
        self._specs_kept = 16
        """Prune ``_specs`` once it grows past this (twice what the last pruning kept)."""
        self.metrics = AgentMetrics()
        """Counters of task starts, restarts and re-attachments; the registry that
        ``/v1/metrics`` serves (podium.agent.metrics)."""
        self.identities = (
            AgentIdentities(self) if settings.alloc_dirs and settings.workload_identity else None
        )
        """Tasks' workload tokens (podium.agent.identity); none without task directories."""

    @property
    def api_address(self) -> str:
        """The server address tasks are given (``PODIUM_ADDR``)."""
        return self.settings.servers[0] if self.settings.servers else ""

    def cluster_ca(self) -> bytes | None:
        """The CA certificates this agent trusts its servers with (``<data_dir>/tls/ca.crt``,
        kept by the TLS layer, a bundle during a CA rotation), for tasks to verify
        ``PODIUM_ADDR`` with; None without TLS."""
        if not self.api_address.startswith("https://"):
            return None
        try:
            return (Path(self.settings.data_dir) / "tls" / "ca.crt").read_bytes()
        except OSError:
            return None

    def driver(self, name: str) -> Driver | None:
        """The enabled driver of that name (part of the runners' host protocol)."""
        return self.drivers.get(name)

    def _node_id(self) -> str:
        existing = self.state.get("node_id")
        if existing:
            return existing
        node_id = str(uuid.uuid4())
        self.state.put("node_id", node_id)
        return node_id

    # ---------------------------------------------------------------- lifecycle
    async def start(self, http_addr: str) -> None:
        """Recover local allocations, then start the loops.  ``http_addr`` serves logs."""
        self.http_addr = http_addr
        await self._recover()
        await self._reap_orphans()
        self._tasks = [
            asyncio.create_task(self._register_and_heartbeat(), name="agent-heartbeat"),
            asyncio.create_task(self._sync_loop(), name="agent-sync"),
            asyncio.create_task(self._report_loop(), name="agent-report"),
            asyncio.create_task(self._rotate_loop(), name="agent-logrotate"),
        ]
        if self.identities is not None:
            self._tasks.append(asyncio.create_task(self.identities.run(), name="agent-identity"))

    async def stop(self) -> None:
        """Stop the agent's loops; tasks keep running (a restarted agent re-attaches)."""
        if self._peers_task is not None:
            self._tasks.append(self._peers_task)
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            # A loop parked in a blocking query may take a moment to notice; don't hang on it.
            await asyncio.wait(self._tasks, timeout=2.0)
        self._flush_persist()
        with contextlib.suppress(Exception):
            await self._send_reports()
        for r in self.runners.values():
            r.close()
        self.state.close()

    async def stop_all_tasks(self, timeout: float | None = None) -> None:
        """Stop every task of this node (used when nobody could re-attach to them later)."""
        from podium.models import DesiredStatus

        longest = 0.0
        for runner in list(self.runners.values()):
            if runner.machine.terminal():
                continue
            group = runner.machine.spec.groups.get(runner.alloc.group)
            if group is not None:
                longest = max(
                    [
                        longest,
                        *(self.settings.kill_timeout(t.kill_timeout) for t in group.tasks.values()),
                    ]
                )
            stopped = runner.alloc.model_copy(
                update={
                    "desired_status": DesiredStatus.STOP,
                    "desired_description": "agent shutting down",
                }
            )
            runner.update(stopped, runner.machine.spec)
        deadline = self.clock() + (timeout if timeout is not None else longest + 2.0)
        while self.clock() < deadline and not all(
            r.machine.terminal() for r in self.runners.values()
        ):
            await asyncio.sleep(0.05)

    # ---------------------------------------------------------------- ports
    @property
    def advertise_ip(self) -> str:
        """The address tasks' ports are reached at: the host this agent advertises."""
        host = urlsplit(self.http_addr).hostname if self.http_addr else None
        return host or "127.0.0.1"

    def assign_ports(self, alloc_id: str, network: Network) -> dict[str, AllocatedPort]:
        """Choose the allocation's ports: its static ones, and a free one per dynamic label.

        A static port already held by another allocation here, or bound by anything
        else on the machine, is refused (a non-recoverable start error that says so).
        """
        used = {
            p.value
            for r in self.runners.values()
            if r.id != alloc_id and not r.machine.terminal()
            for p in r.machine.ports.values()
        }
        ip = self.advertise_ip
        out: dict[str, AllocatedPort] = {}
        for label, port in network.ports.items():
            if port.static is not None:
                if port.static in used or not _port_free(port.static):
                    raise DriverError(
                        f"static port {port.static} ({label}) is already in use on this node"
                    )
                value = port.static
            else:
                value = self._free_dynamic_port(used)
            used.add(value)
            out[label] = AllocatedPort(value=value, host_ip=ip)
        return out

    def _free_dynamic_port(self, used: set[int]) -> int:
        low, high = DYNAMIC_PORTS
        start = random.randrange(low, high)
        for offset in range(high - low):
            candidate = low + (start - low + offset) % (high - low)
            if candidate not in used and _port_free(candidate):
                return candidate
        raise DriverError(f"no free dynamic port left in {low}-{high - 1} on this node")

    # ---------------------------------------------------------------- the node
    def node(self) -> Node:
        infos = {name: d.fingerprint() for name, d in self.drivers.items()}
        res = fingerprint_resources()
        s = self.settings
        return Node(
            id=self.node_id,
            name=self.node_name,
            datacenter=s.datacenter,
            node_pool=s.node_pool,
            http_addr=self.http_addr,
            attributes=fingerprint_attributes(infos),
            meta=dict(s.meta),
            resources=res,
            reserved=NodeResources(cpu=s.reserved_cpu, memory=s.reserved_memory),
            drivers=infos,
            host_volumes=dict(s.host_volumes),
            devices=fingerprint_devices(default_plugins(s.device_file)),
        )

    async def _register(self) -> None:
        answer = await self.client.register_node(self.node())
        secret = answer.get("node_secret")
        if isinstance(secret, str) and secret:
            self.state.put("node_secret", secret)  # before anything else relies on it
        self.heartbeat_ttl = float(answer.get("heartbeat_ttl", self.heartbeat_ttl))
        self.registered.set()
        if self._dirty or self._direct:
            self._report_wakeup.set()  # what happened while no server answered
        log.info("registered node %s (%s)", self.node_name, self.node_id)

    async def _register_and_heartbeat(self) -> None:
        backoff = 0.2
        first_sent: float | None = None
        """When the heartbeat now being sent (again) was first sent."""
        while True:
            try:
                if not self.registered.is_set():
                    first_sent = None
                    await self._register()
                else:
                    # unanswered within TTL/2 (at most 10 s), the request is dropped (its
                    # connection with it) and sent again at once: a heartbeat stuck behind a
                    # server's backlog or a dead connection must not take the node's whole
                    # TTL + grace
                    if first_sent is None:
                        first_sent = time.monotonic()
                    async with asyncio.timeout(heartbeat_deadline(self.heartbeat_ttl)):
                        answer = await self.client.heartbeat(self.node_id)
                    self.heartbeat_answered(time.monotonic() - first_sent)
                    first_sent = None
                    self.heartbeat_ttl = float(answer.get("heartbeat_ttl", self.heartbeat_ttl))
                backoff = 0.2
                self._maybe_learn_servers()
                await asyncio.sleep(heartbeat_interval(self.heartbeat_ttl))
            except NotFound:
                self.registered.clear()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self.metrics.heartbeat_retries += 1
                self.client.heartbeat_unanswered()  # not to the heartbeat lane again soon
                log.warning(
                    "heartbeat unanswered after %.1fs: sending it again now",
                    heartbeat_deadline(self.heartbeat_ttl),
                )
                await asyncio.sleep(0)  # at once: the deadline was the wait
            except Exception as exc:
                log.warning("cannot reach server: %s (retrying in %.1fs)", exc, backoff)
                await asyncio.sleep(backoff)
                # never slower than the heartbeats themselves: a server back from a restart
                # counts the TTL (+ grace) from its start, and a short TTL must be met
                backoff = min(backoff * 2, 5.0, max(0.2, self.heartbeat_ttl / 2))

    def heartbeat_answered(self, seconds: float) -> None:
        """A heartbeat was answered ``seconds`` after its first send (retries included)."""
        self.metrics.heartbeat_answered(seconds)

    def _maybe_learn_servers(self) -> None:
        """Every PEERS_INTERVAL, ask for the cluster's servers on a task of its own: the
        heartbeat never waits on it."""
        now = time.monotonic()
        if now - self._peers_asked < PEERS_INTERVAL:
            return
        if self._peers_task is not None and not self._peers_task.done():
            return
        self._peers_asked = now
        self._peers_task = asyncio.get_running_loop().create_task(self._learn_servers())

    async def _learn_servers(self) -> None:
        """Add the servers the cluster names (``GET /v1/status/peers``) to those this
        agent fails over among: the ones it was given stay first, none is forgotten (a
        server that is down now may be the one that answers later)."""
        try:
            peers = await self.client.peers()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an older server, or a moment without one: keep what we know
            log.debug("cannot learn the cluster's servers: %s", exc)
            return
        known = self.client.servers
        added = [url for url in peers if url and url not in known]
        if added:
            known.extend(added)
            log.info("servers of this cluster: %s", ", ".join(known))

    # ---------------------------------------------------------------- allocations
    async def _sync_loop(self) -> None:
        """Delta syncs, as Nomad's client does: each answer carries in full only the
        allocations changed past the index this agent last applied (``since``; 0 after a
        start, so a restarted agent hears of everything), every allocation's id with its
        index (so removals and gaps show), and only the job specs this agent lacks."""
        await self.registered.wait()
        index = 0
        since = 0
        backoff = 0.2
        started: set[str] = set()
        while True:
            taken = None
            if started:
                # Reports ride only on the sync after an answer that started allocations,
                # and not on its retries: a report the server keeps refusing (a bad one)
                # must not keep the node from hearing of its allocations.
                await self._await_first_reports(started)
                started = set()
                taken = self._take_reports()
            try:
                sync = await self.client.node_sync(
                    self.node_id,
                    index=index,
                    wait=self.settings.sync_wait,
                    since=since,
                    have=self._have(),
                    specs=self.shared_specs,
                    updates=taken.updates if taken is not None else (),
                    order=taken.order if taken is not None else None,
                )
                backoff = 0.2
            except asyncio.CancelledError:
                self._give_back(taken)
                raise
            except Exception as exc:
                self._give_back(taken)
                if isinstance(exc, Conflict):  # reports out of order: resent, nothing lost
                    log.debug("allocation sync refused: %s", exc)
                else:
                    log.warning("allocation sync failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if taken is not None:
                trim_after(len(taken.updates))
            if sync.index < index:
                # the server's state was reset: ask again for everything
                index = since = 0
                self._known.clear()
                continue
            if sync.index == index:
                continue
            live: set[str] | None = None
            complete = True
            removals = True
            if sync.alloc_indexes is not None and sync.alloc_count is not None:
                # Nothing left the node past ``since``: only what changed is listed.
                known = self._known
                for a in sync.allocations:
                    at = sync.alloc_indexes.get(a.id)
                    if at is not None:
                        known[a.id] = at
                live = set()  # not used for removals (there are none)
                removals = False
                # what we know plus what changed must be all the node has, or we missed some
                complete = len(known) == sync.alloc_count
            elif sync.alloc_indexes is not None:
                live = set(sync.alloc_indexes)
                sent = {a.id for a in sync.allocations}
                known = self._known
                for alloc_id, at in sync.alloc_indexes.items():
                    if alloc_id in sent:
                        known[alloc_id] = at
                    elif known.get(alloc_id) != at:
                        complete = False  # changed but not sent: a gap in what we heard
                for alloc_id in known.keys() - live:
                    del known[alloc_id]
            self._spec_indexes.update(sync.job_indexes)
            started = self.apply_sync(sync.allocations, sync.jobs, live=live, removals=removals)
            if not complete:
                log.info("allocation sync missed changes; asking for everything")
                index = since = 0
                self._known.clear()
                continue
            index = sync.index
            since = index if live is not None else 0
            if not self._orphans_checked:
                self._orphans_checked = True
                ids = set(self._known) if live is not None else {a.id for a in sync.allocations}
                asyncio.get_running_loop().create_task(
                    self._remove_orphans(ids | set(self.runners))
                )
                self._release_leases(ids | set(self.runners) | self._forgetting)
            trim_after(len(sync.allocations))
            self.synced_index = index

    async def _reap_orphans(self) -> None:
        """Stop the tasks an earlier agent on this data dir started that no allocation of
        this agent owns: its ``agent.db`` (or the whole data dir) was lost while they ran,
        so this agent is a new node and nothing else would ever stop them.  Tasks this
        agent re-attached to are owned; other agents' tasks are not this data dir's."""
        if not self.settings.alloc_dirs:
            return  # the simulator's agents start nothing that outlives them
        owned = set(self.runners)
        for point in secretsdir.unmount_orphans(f"{self.settings.data_dir}/allocs", owned):
            log.info("unmounted the secrets tmpfs %s of an allocation this agent lacks", point)
        for name, driver in self.drivers.items():
            try:
                reaped = await driver.reap_orphans(self.settings.data_dir, owned)
            except Exception as exc:
                log.warning("could not look for orphaned %s tasks: %s", name, exc)
                continue
            for orphan in reaped:
                log.warning(
                    "stopped orphaned task: %s; started from data dir %s for allocation %s, "
                    "which this agent does not have (its state was lost)",
                    orphan,
                    self.settings.data_dir,
                    orphan.alloc_id,
                )

    async def _forget(self, runner: AllocRunner) -> None:
        """The server collected the allocation: stop it, remove its files, and only then
        let its exec uid go to another allocation (nothing of it runs or is left)."""
        try:
            await runner.kill_and_forget()
        finally:
            self._forgetting.discard(runner.id)
            if self.uid_pool is not None and runner.id not in self.runners:
                try:
                    self.uid_pool.release(runner.id)
                except Exception:
                    log.exception("alloc %s: cannot release its exec uid", runner.id)

    def _release_leases(self, keep: set[str]) -> None:
        """After the first sync: release the exec uids of allocations that neither the
        server nor this agent has (collected while the agent was down, or forgotten by an
        agent that died before it could release them)."""
        if self.uid_pool is None:
            return
        try:
            gone = self.uid_pool.retain(keep)
        except Exception:
            log.exception("cannot release the exec uids of collected allocations")
            return
        if gone:
            log.info("released the exec uids of %d collected allocations", len(gone))

    async def _remove_orphans(self, live: set[str]) -> None:
        """Containers left by allocations this node no longer has (the agent was down
        when they were stopped or collected) are removed, once, after the first sync."""
        for name, driver in self.drivers.items():
            try:
                removed = await driver.remove_orphans(live, node_id=self.node_id)
            except Exception as exc:
                log.warning("could not remove orphaned %s tasks: %s", name, exc)
                continue
            if removed:
                log.info("removed %d orphaned %s tasks: %s", len(removed), name, ", ".join(removed))

    def apply_sync(
        self,
        allocs: list[Allocation],
        jobs: dict[str, JobSpec],
        live: set[str] | None = None,
        *,
        removals: bool = True,
    ) -> set[str]:
        """Start, update and stop runners after a sync; answers the ids of those started.

        ``live``: every allocation id the node still has (a delta sync, where ``allocs``
        holds only what changed); ``None``: ``allocs`` is the whole list.  ``removals``
        false: nothing left the node (a delta sync that lists only what changed), so no
        runner is looked at for removal.  Specs missing from ``jobs`` come from the cache
        of the ones this agent already holds."""
        specs = self._specs
        specs.update(jobs)
        started: set[str] = set()
        seen: set[str] = set() if live is None else live
        for alloc in allocs:
            seen.add(alloc.id)
            compact_alloc(alloc)  # a runner may keep it: ~2 KB each instead of ~5 KB
            spec = specs.get(spec_key(alloc.namespace, alloc.job_id, alloc.job_version))
            runner = self.runners.get(alloc.id)
            if runner is not None:
                if alloc.modify_index != runner.alloc.modify_index:
                    # The same version keeps the spec the runner has: the cache may hold
                    # another job's of the same id and version (purged, then registered
                    # again), and a purged job has no stored spec any more.
                    same = alloc.job_version == runner.alloc.job_version
                    runner.update(alloc, runner.machine.spec if same or spec is None else spec)
                continue
            if alloc.client_terminal():
                continue
            if alloc.desired_status == DesiredStatus.STOP or spec is None:
                # Stopped before this agent ever ran it: nothing to stop, but the server
                # must hear that it is done, or it would hold its resources forever.
                self._direct[alloc.id] = AllocClientUpdate(
                    id=alloc.id,
                    client_status=ClientStatus.COMPLETE,
                    client_description="stopped before it started",
                )
                self._report_wakeup.set()
                continue
            runner = AllocRunner(self, alloc, spec)
            self.runners[alloc.id] = runner
            runner.start()
            started.add(alloc.id)
        for alloc_id in list(self.runners) if removals else ():
            if alloc_id not in seen:
                runner = self.runners.pop(alloc_id)
                self.state.delete(alloc_id)
                self._forgetting.add(alloc_id)
                asyncio.get_running_loop().create_task(self._forget(runner))
        # Keep only the specs a runner still uses (the server resends one when needed).
        # Looked at only when runners may have let go of one (every runner, every sync,
        # would make a busy node's syncs cost what it already runs).
        if len(specs) > self._specs_kept:
            used = {
                spec_key(r.alloc.namespace, r.alloc.job_id, r.alloc.job_version)
                for r in self.runners.values()
                if not r.machine.terminal()  # a runner keeps its own spec; the cache is for new ones
            }
            for key in specs.keys() - used:
                del specs[key]
                self._spec_indexes.pop(key, None)
            self._specs_kept = 2 * len(specs) + 16
        return started

    async def _await_first_reports(self, started: set[str]) -> None:
        """Wait until the runners in ``started`` have left pending (at most
        FIRST_REPORT_WAIT), holding the report loop back: their reports, and whatever
        else changed meanwhile, then ride on the next sync."""
        self._gathering = True
        try:
            pending = ClientStatus.PENDING
            self._first_reports = {
                alloc_id
                for alloc_id in started
                if (runner := self.runners.get(alloc_id)) is not None
                and runner.machine.client_status() == pending
            }
            self._first_reported.clear()
            if self._first_reports:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FIRST_REPORT_WAIT):
                        await self._first_reported.wait()
        finally:
            self._gathering = False
            self._first_reports = set()

    def _have(self) -> list[str]:
        """The cached specs to name in a sync's ``have`` (``job@version@index``).

        It travels in the query string, so it is kept short: the specs of running
        allocations only (the cache drops the others), and nothing at all past
        ``HAVE_LIMIT`` characters (the server then sends the specs of whatever changed:
        more bytes, never a wrong or missing spec)."""
        keys = [f"{k}@{self._spec_indexes.get(k, 0)}" for k in self._specs]
        if sum(len(k) + 1 for k in keys) > HAVE_LIMIT:
            return []
        return keys

    async def _recover(self) -> None:
        for stored in self.state.load():
            try:
                alloc = compact_alloc(Allocation.model_validate_json(stored.alloc))
                spec = JobSpec.model_validate_json(stored.spec)
            except Exception:
                log.exception("cannot read stored allocation %s; forgetting it", stored.id)
                self.state.delete(stored.id)
                continue
            runner = AllocRunner(self, alloc, spec)
            runner.machine.restore(stored.machine)
            runner.restore_handles(stored.handles)
            self.runners[alloc.id] = runner
            await runner.recover()
            self.mark_dirty(runner)
        if self.runners:
            log.info("re-attached to %d allocations", len(self.runners))

    # ---------------------------------------------------------------- reporting
    def mark_dirty(self, runner: AllocRunner) -> None:
        self.report(runner.id)

    def report(self, alloc_id: str) -> None:
        """The allocation's state changed: send it with the next report (host protocol)."""
        self._dirty.add(alloc_id)
        self._report_wakeup.set()
        waiting = self._first_reports
        if alloc_id in waiting:
            runner = self.runners.get(alloc_id)
            if runner is not None and runner.machine.client_status() != ClientStatus.PENDING:
                waiting.discard(alloc_id)
                if not waiting:
                    self._first_reported.set()

    async def _report_loop(self) -> None:
        while True:
            await self._report_wakeup.wait()
            self._report_wakeup.clear()
            await asyncio.sleep(self.settings.report_interval)  # batch what comes meanwhile
            if self._gathering:
                continue  # the sync about to go out takes them
            try:
                await self._send_reports()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, Conflict):  # out of order: the states go again, as they are
                    log.debug("allocation states refused: %s", exc)
                else:
                    log.warning("cannot report allocation states: %s", exc)
                self._report_wakeup.set()
                await asyncio.sleep(1.0)

    def _take_reports(self) -> _Reports | None:
        """What changed since the last report, for one request (None: nothing)."""
        if not (self._dirty or self._direct) or not self.registered.is_set():
            return None
        ids, self._dirty = self._dirty, set()
        direct, self._direct = self._direct, {}
        updates = list(direct.values())
        for alloc_id in ids:
            runner = self.runners.get(alloc_id)
            if runner is None:
                continue
            m = runner.machine
            updates.append(
                AllocClientUpdate(
                    id=alloc_id,
                    client_status=m.client_status(),
                    client_description=m.client_description(),
                    task_states=m.task_states(),
                    ports=m.ports,
                    checks=runner.checks.report(),
                    deployment_status=runner.judge_health(),
                )
            )
        self._report_seq += 1
        return _Reports(ids, direct, updates, (self._report_session, self._report_seq))

    def _give_back(self, taken: _Reports | None) -> None:
        """A request with ``taken`` failed: report those allocations again (their states
        as they are then, which may have moved on) with the next request."""
        if taken is None:
            return
        self._dirty |= taken.ids
        self._direct = {**taken.direct, **self._direct}
        self._report_wakeup.set()

    async def _send_reports(self) -> None:
        taken = self._take_reports()
        if taken is None:
            return
        try:
            await self.client.update_allocs(self.node_id, taken.updates, taken.order)
        except BaseException:
            self._give_back(taken)
            raise
        trim_after(len(taken.updates))

    # ---------------------------------------------------------------- persistence
    def mark_persist(self, runner: AllocRunner) -> None:
        self.persist(runner.id)

    def persist(self, alloc_id: str) -> None:
        """Save the allocation's runner state with the next batch (host protocol)."""
        self._persist.add(alloc_id)
        if not self._persist_scheduled:
            # Batched: one transaction per PERSIST_DELAY however many runners changed.
            # An agent killed inside that window loses only the last few state changes:
            # tasks it started meanwhile are found again by the driver (the shim's pid file
            # in the task dir), which stops such a forgotten instance before starting anew.
            self._persist_scheduled = True
            asyncio.get_running_loop().call_later(PERSIST_DELAY, self._flush_persist)

    def _flush_persist(self) -> None:
        self._persist_scheduled = False
        ids, self._persist = self._persist, set()
        items = []
        # A burst's runners share one job spec: dumped once per flush, not once per runner
        # (specs are never mutated; keyed by identity, held by their runners meanwhile).
        specs: dict[int, str] = {}
        for alloc_id in ids:
            r = self.runners.get(alloc_id)
            if r is None:
                continue
            spec = r.machine.spec
            spec_json = specs.get(id(spec))
            if spec_json is None:
                spec_json = specs[id(spec)] = spec.model_dump_json()
            items.append(
                StoredAlloc(
                    id=alloc_id,
                    alloc=r.alloc.model_dump_json(),
                    spec=spec_json,
                    machine=r.machine.to_dict(),
                    handles=r.handles_dict(),
                )
            )
        try:
            self.state.save_many(items)
        except Exception:
            log.exception("cannot save agent state")

    # ---------------------------------------------------------------- logs
    async def _rotate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_rotate_interval)
            for runner in list(self.runners.values()):
                if runner.machine.terminal():
                    continue
                group = runner.machine.spec.groups.get(runner.alloc.group)
                if group is None:
                    continue
                for name, task in group.tasks.items():
                    for stream in ("stdout", "stderr"):
                        path = runner.log_path(name, stream)
                        with contextlib.suppress(OSError):
                            rotate_if_needed(
                                path,
                                task.logs.max_file_size * 1024 * 1024,
                                task.logs.max_files,
                                root=runner.alloc_path,  # no symlink of the task followed
                            )

    def alloc_log_path(self, alloc_id: str, task: str, stream: str) -> Path:
        runner = self.runners.get(alloc_id)
        base = runner.alloc_dir if runner else self.data_dir / "allocs" / alloc_id
        return base / "alloc" / "logs" / f"{task}.{stream}"


__all__ = ["Agent", "AgentSettings"]
