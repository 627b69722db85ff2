"""``docker``: a task as a container, through the Docker Engine API (the ``docker`` SDK).

The SDK is blocking.  Short calls (inspect, create, kill, remove, stats) run in
the loop's default executor via :func:`asyncio.to_thread`; calls that block for
the task's lifetime (``wait``, following the log stream) run on their own daemon
threads with their own API client, so a thousand containers never starve the
executor or the SDK's connection pool.

Logs: one follower thread per container and stream (stdout, stderr) reads the
engine's log stream with timestamps and appends each line to the task's log
file, then records ``<ns> <count>`` (the last timestamp written, and how many
lines carried it) in a checkpoint file under ``<task_dir>/.podium/``.  After an
agent restart, ``recover`` resumes each stream from its checkpoint: it asks the
engine for lines ``since`` that second and skips what was already written, so
no line is lost or duplicated (a crash between a line's write and its
checkpoint duplicates that one line).  ``README.md`` has the details.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from podium.drivers.base import (
    Driver,
    DriverHealth,
    ExecSession,
    ExitResult,
    Orphan,
    TaskContext,
    TaskHandle,
    TaskOwner,
    TaskStats,
)
from podium.drivers.cgroups import UNLIMITED, core_mhz
from podium.drivers.docker_oom import OomWatch, child_limit
from podium.drivers.procfs import parse_signal
from podium.errors import DriverError
from podium.models import DriverInfo
from podium.models.dockerpolicy import DockerNeeds, DockerPolicy
from podium.models.taskconfig import DockerConfig, DockerNetwork

log = logging.getLogger(__name__)

LABEL_ALLOC = "podium.alloc_id"
LABEL_JOB = "podium.job_id"
LABEL_GROUP = "podium.group"
LABEL_TASK = "podium.task"
LABEL_NODE = "podium.node_id"
"""The node whose agent started the container (or created the network): an agent's orphan
cleanup touches only its own node's, so agents sharing an engine (tests) leave each other be."""
LABEL_DATA_DIR = "podium.data_dir"
"""The data dir of the agent that started the container: it outlives the agent's state, so
an agent on the same data dir that lost its ``agent.db`` (a new node id) still finds the
containers it started (:meth:`DockerDriver.reap_orphans`)."""
LABEL_MANAGED = "podium.managed"
"""On a network: Podium created it, and removes it once no container uses it."""
LABEL_PROJECT = "podium.project"
"""On a network: the Compose project (else the job) whose containers it joins."""
LABEL_COMPOSE_PROJECT = "podium.compose.project"
"""On a container: the Compose project it belongs to (set by ``podium compose``)."""
NETWORK_DRIVER = "bridge"
MIB = 1024 * 1024
ORPHAN_PARENT_AGE = 60.0
"""An OOM parent cgroup without a container is removed as an orphan only once it is this
old (seconds): a younger one may belong to a start in progress (of another agent)."""

STATE_SUBDIR = ".podium"
ALLOC_MOUNT = "/alloc"
"""Where the allocation's shared directory appears inside the container."""
LOCAL_MOUNT = "/local"
"""Where the task's own directory appears inside the container."""
HOST_ONLY_ENV = ("PATH", "HOME")
"""Task-env variables that describe the host, not the image: left to the image."""

API_TIMEOUT = 60.0
FINGERPRINT_TIMEOUT = 3.0
FINGERPRINT_TTL = 15.0
KILL_WAIT = 10.0
"""How long ``stop`` waits for the exit after SIGKILL."""
ORPHAN_GRACE = 5.0
"""How long an orphaned container gets between SIGTERM and SIGKILL."""
LOG_DRAIN = 5.0
"""How long ``wait`` lets the log followers catch up after the container exited."""
FINAL_READ_TRIES = 3
"""Reads of a stopped container's stored logs a follower tries before giving up."""
ENGINE_RETRY = 30.0
"""How long a waiter keeps retrying an engine that does not answer."""
MIN_CPU_SHARES = 2
LOG_OPTIONS = {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
"""The engine's own copy of the logs, which ``recover`` resumes from; kept small."""

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]")
_TS = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def _docker() -> Any:
    import docker  # type: ignore[import-untyped]

    return docker


def _errors() -> Any:
    import docker.errors  # type: ignore[import-untyped]

    return docker.errors


_api_version: str | None = None
"""The engine API version negotiated by the first client; later clients reuse it."""


def new_client(timeout: float | None = API_TIMEOUT) -> Any:
    """A client for the engine named by the environment (``DOCKER_HOST``, else the socket).

    Every container has a waiter and two log followers, each with a client of its own;
    without a version each would first ask the engine for it (``GET /version``), three
    extra calls per container start on an engine that is busy starting containers.
    """
    global _api_version
    if _api_version is None:
        client = _docker().from_env(timeout=timeout)
        _api_version = str(client.api.api_version)
        return client
    return _docker().from_env(timeout=timeout, version=_api_version)


def container_name(task: str, alloc_id: str) -> str:
    return _NAME_BAD.sub("-", f"podium-{task}-{alloc_id}")


def parse_timestamp(raw: bytes) -> int:
    """The engine's RFC 3339 UTC timestamp (``...T12:00:00.123456789Z``) in nanoseconds."""
    m = _TS.match(raw)
    if m is None:
        raise ValueError(f"not a log timestamp: {raw[:40]!r}")
    secs = calendar.timegm(time.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S"))
    frac = (m.group(2) or b"0").decode().ljust(9, "0")
    return secs * 1_000_000_000 + int(frac)


def exit_result(state: dict[str, Any]) -> ExitResult:
    """How a container ended, from ``inspect``'s ``State``."""
    code = int(state.get("ExitCode") or 0)
    sig = code - 128 if 128 < code <= 128 + 64 else None
    error = state.get("Error") or None
    return ExitResult(
        exit_code=code, signal=sig, oom_killed=bool(state.get("OOMKilled")), error=error
    )


def container_health(state: dict[str, Any]) -> DriverHealth | None:
    """The health verdict in ``inspect``'s ``State`` (None when there is no health check)."""
    health = state.get("Health")
    if not isinstance(health, dict):
        return None
    status = health.get("Status")
    if status not in ("starting", "healthy", "unhealthy"):
        return None
    probes = [p for p in health.get("Log") or [] if isinstance(p, dict)]
    if status == "starting":
        output = str(probes[-1].get("Output") or "").strip() if probes else ""
        return DriverHealth(healthy=None, output=output)
    healthy = status == "healthy"
    # the newest probe that agrees with the verdict (the newest of all when none does)
    agreeing = [p for p in probes if (p.get("ExitCode") == 0) == healthy] or probes
    probe = agreeing[-1] if agreeing else {}
    output = str(probe.get("Output") or "").strip()
    if not healthy and not output and probe:
        output = f"exit code {probe.get('ExitCode')}"
    return DriverHealth(healthy=healthy, output=output)


def cleanup_orphans(
    client: Any,
    live_alloc_ids: Iterable[str],
    node_id: str | None = None,
    remove_network: Callable[[Any, str], bool] | None = None,
) -> list[str]:
    """Remove (force) every container labelled ``podium.alloc_id`` whose allocation is not
    live, then every Podium-managed network no container uses (through
    ``remove_network``, :func:`remove_network_if_unused` by default).  With ``node_id``,
    only containers and networks of that node (or with no node label) are candidates.

    Blocking; returns the names removed (containers, then ``network <name>``).  The agent
    calls it after its first sync.
    """
    live = set(live_alloc_ids)
    removed: list[str] = []
    errors = _errors()

    def ours(labels: dict[str, str] | None) -> bool:
        node = (labels or {}).get(LABEL_NODE)
        return node_id is None or node is None or node == node_id

    # The listing itself, not one inspect per container (containers.list() does that): a
    # container removed meanwhile (by another agent on the same engine) is no error.
    for c in client.api.containers(all=True, filters={"label": LABEL_ALLOC}):
        labels = c.get("Labels") or {}
        if labels.get(LABEL_ALLOC) in live or not ours(labels):
            continue
        name = str((c.get("Names") or ["/" + str(c["Id"])[:12]])[0]).lstrip("/")
        try:
            client.api.remove_container(c["Id"], force=True)
        except errors.NotFound:
            pass
        except errors.APIError as exc:
            log.warning("could not remove orphaned container %s: %s", name, exc)
            continue
        removed.append(name)
    remove = remove_network or remove_network_if_unused
    for net in client.api.networks(filters={"label": LABEL_MANAGED}):
        name = str(net.get("Name", ""))
        if ours(net.get("Labels")) and remove(client, name):
            removed.append(f"network {name}")
    return removed


def remove_network_if_unused(client: Any, name: str) -> bool:
    """Remove the Podium-managed network ``name`` when no container (running or not) is
    on it; True when it was removed.  Blocking."""
    errors = _errors()
    try:
        info = client.api.inspect_network(name)
    except errors.NotFound:
        return False
    if (info.get("Labels") or {}).get(LABEL_MANAGED) != "true" or info.get("Name") != name:
        return False  # not ours (an operator's network, or an id-prefix match)
    # by name too: a created container that has not started is only found by name
    on_it = client.api.containers(all=True, filters={"network": [name, info["Id"]]})
    if info.get("Containers") or on_it:
        return False
    try:
        client.api.remove_network(info["Id"])
    except errors.NotFound:
        return False
    except errors.APIError as exc:
        # "has active endpoints": a container joined it meanwhile; it stays
        log.debug("network %s stays: %s", name, _explain(exc))
        return False
    return True


# --------------------------------------------------------------------------- logs
class _Follower:
    """Appends one stream of one container's logs to a file, from a checkpoint."""

    def __init__(self, container_id: str, stream: str, path: str, checkpoint: str) -> None:
        self.container_id = container_id
        self.stream = stream
        self.path = path
        self.checkpoint = checkpoint
        self.stop = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()
        self._last = (0, 0)
        """The checkpoint: the newest line's time (ns) and how many lines had it."""
        self.thread = threading.Thread(
            target=self._run, name=f"docker-logs-{container_id[:12]}-{stream}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def join(self, timeout: float) -> None:
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _read_checkpoint(self) -> tuple[int, int]:
        try:
            ns, count = Path(self.checkpoint).read_text().split()
            return int(ns), int(count)
        except (OSError, ValueError):
            return 0, 0

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:
            log.exception("docker log follower %s/%s failed", self.container_id[:12], self.stream)

    def _follow(self) -> None:
        errors = _errors()
        self._last = self._read_checkpoint()
        client = new_client(timeout=None)
        out = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        ckpt = os.open(self.checkpoint, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while not self.stop.is_set():
                try:
                    self._pass(client, out, ckpt, follow=True)
                    if self.stop.is_set():
                        break
                except errors.NotFound:
                    return
                except Exception as exc:
                    if self.stop.is_set():
                        return
                    log.debug("docker log stream %s broke: %s", self.container_id[:12], exc)
                    time.sleep(0.5)
                # The stream ended: the container stopped, or the connection broke (read
                # again from the checkpoint).
                try:
                    running = client.api.inspect_container(self.container_id)["State"]["Running"]
                except errors.NotFound:
                    return
                except Exception:
                    running = True
                    time.sleep(0.5)
                if not running:
                    self._last_pass(client, out, ckpt, errors)
                    return
        finally:
            os.close(out)
            os.close(ckpt)
            with contextlib.suppress(Exception):
                client.close()

    def _last_pass(self, client: Any, out: int, ckpt: int, errors: Any) -> None:
        """Read what the engine stored once more, from the checkpoint, once the container
        stopped: a follow that began as it stopped, or that broke, can end before it has
        sent every line (seen here under load: a quick task's whole output)."""
        for attempt in range(FINAL_READ_TRIES):
            try:
                self._pass(client, out, ckpt, follow=False)
                return
            except errors.NotFound:
                return
            except Exception as exc:
                if self.stop.is_set():
                    return
                if attempt + 1 == FINAL_READ_TRIES:
                    log.warning(
                        "docker logs of %s (%s): the last lines may be missing: %s",
                        self.container_id[:12],
                        self.stream,
                        exc,
                    )
                    return
                time.sleep(0.5)

    def _pass(self, client: Any, out: int, ckpt: int, *, follow: bool) -> None:
        """Append the stream's lines after the checkpoint ``self._last`` (the newest
        line's time and how many lines carried that very time) and move it on."""
        last_ns, last_count = self._last
        kwargs: dict[str, Any] = {
            "stdout": self.stream == "stdout",
            "stderr": self.stream == "stderr",
            "stream": True,
            "follow": follow,
            "timestamps": True,
        }
        if last_ns:
            kwargs["since"] = max(1, last_ns // 1_000_000_000)
        frames = client.api.logs(self.container_id, **kwargs)
        with self._lock:
            self._response = frames
        if self.stop.is_set():
            return
        seen = 0  # lines at last_ns seen again in this pass
        for frame in frames:
            space = frame.find(b" ")
            try:
                ns = parse_timestamp(frame[:space])
            except ValueError:
                ns, space = last_ns, -1
            if ns < last_ns:
                continue
            if ns == last_ns:
                seen += 1
                if seen <= last_count:
                    continue
                last_count = seen
            else:
                last_ns, last_count, seen = ns, 1, 1
            os.write(out, frame[space + 1 :])
            os.pwrite(ckpt, f"{last_ns:020d} {last_count:010d}\n".encode(), 0)
            self._last = (last_ns, last_count)


# --------------------------------------------------------------------------- tracking
@dataclass
class _Container:
    """One container this driver watches: its exit future and its log followers."""

    container_id: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[ExitResult]
    followers: list[_Follower] = field(default_factory=list)
    waiter: threading.Thread | None = None
    cpu_sample: tuple[int, int] | None = None
    oom_parent: str | None = None
    """The name of the container's Podium parent cgroup (see :mod:`docker_oom`)."""
    started_at: float = 0.0
    killed: bool = False
    """This driver sent SIGKILL (a SIGKILL death is then no OOM hint)."""

    def resolve(self, result: ExitResult) -> None:
        def set_result() -> None:
            if not self.future.done():
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is gone
            self.loop.call_soon_threadsafe(set_result)

    def close_followers(self) -> None:
        for f in self.followers:
            f.close()


def _container_id(handle: TaskHandle) -> str:
    cid = handle.state.get("container_id")
    if not isinstance(cid, str) or not cid:
        raise DriverError(f"task {handle.task_id}: handle has no container id")
    return cid


def _port_bindings(cfg: DockerConfig, ctx: TaskContext) -> dict[str, list[tuple[str, int]]]:
    """``{"80/tcp": [(host_ip, host_port)]}`` for the Engine: each label's container port
    on the allocation's host port, at the address and for the protocols its config names.

    Two labels may publish one container port (``8080:80`` and ``127.0.0.1:9090:80``),
    so each key holds a list.  Without a ``host_ip`` a port binds the node's advertised
    address (the allocation's port), ``""`` every interface.
    """
    out: dict[str, list[tuple[str, int]]] = {}
    for label in cfg.ports:
        allocated = ctx.ports.get(label)
        if allocated is None:
            raise DriverError(
                f"port label {label!r} is not in the group's network "
                f"(has: {', '.join(sorted(ctx.ports)) or 'none'})"
            )
        spec = cfg.port(label)
        host_ip = spec.host_ip if spec.host_ip is not None else (allocated.host_ip or "0.0.0.0")
        for protocol in spec.protocols:
            out.setdefault(f"{spec.target}/{protocol}", []).append((host_ip, allocated.value))
    return out


def _create_host_path(path: str) -> None:
    """A bind's missing source becomes a directory, as ``docker run -v`` (and Compose)
    make it; something already there, file or directory, is left as it is."""
    if os.path.lexists(path):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise DriverError(
            f"cannot create the bind mount's source {path}: {exc.strerror or exc}",
            recoverable=False,
        ) from exc


class DockerDriver(Driver):
    name = "docker"

    def __init__(
        self, *, allow_privileged: bool = False, policy: DockerPolicy | None = None
    ) -> None:
        self.allow_privileged = allow_privileged
        policy = policy if policy is not None else DockerPolicy()
        self.policy = replace(policy, privileged=True) if allow_privileged else policy
        """What containers may have (host binds, cap_add, privileged); advertised in the
        fingerprint so the scheduler places only where this driver would start them."""
        self._images_seen: dict[str, float] = {}
        self._client_obj: Any = None
        self._containers: dict[str, _Container] = {}
        self._fingerprint: tuple[float, DriverInfo] | None = None
        self._oom = OomWatch()
        self._oom_configured = False
        self._oom_rewatched: set[str] = set()
        """Parents watched again by ``recover``: an OOM before that may have been missed."""
        self._net_lock = threading.Lock()
        self._net_users: dict[str, int] = {}
        """Networks a start in progress is about to join: not to be removed under it."""

    # ------------------------------------------------------------------ engine
    async def remove_orphans(
        self, live_alloc_ids: Iterable[str], node_id: str | None = None
    ) -> list[str]:
        """Remove this node's Podium containers whose allocations are gone, the networks
        they left unused and their OOM parent cgroups (see :func:`cleanup_orphans`); the
        agent calls it once it knows its allocations."""
        if not self.fingerprint().healthy:
            return []
        live = set(live_alloc_ids)
        return await asyncio.to_thread(self._remove_orphans, live, node_id)

    async def reap_orphans(
        self, data_dir: str, owned: Collection[str], grace: float = ORPHAN_GRACE
    ) -> list[Orphan]:
        """Stop and remove the containers labelled with this data dir whose allocation
        is not in ``owned`` (an agent that lost its state started them as another node)."""
        if not self.fingerprint().healthy:
            return []
        return await asyncio.to_thread(self._reap, data_dir, set(owned), grace)

    def _reap(self, data_dir: str, owned: set[str], grace: float) -> list[Orphan]:
        client = self._client()
        errors = _errors()
        label = f"{LABEL_DATA_DIR}={Path(data_dir).absolute()}"
        out = []
        for c in client.api.containers(all=True, filters={"label": label}):
            labels = c.get("Labels") or {}
            alloc_id = labels.get(LABEL_ALLOC, "")
            if not alloc_id or alloc_id in owned:
                continue
            name = str((c.get("Names") or ["/" + str(c["Id"])[:12]])[0]).lstrip("/")
            running = c.get("State") == "running"
            try:
                if running:
                    client.api.stop(c["Id"], timeout=max(1, round(grace)))
                client.api.remove_container(c["Id"], force=True)
            except errors.NotFound:
                pass
            except errors.APIError as exc:
                log.warning("could not remove orphaned container %s: %s", name, _explain(exc))
                continue
            how = "stopped and removed" if running else "removed"
            ref = f"container {name} ({str(c['Id'])[:12]}, {how})"
            out.append(Orphan(self.name, alloc_id, labels.get(LABEL_TASK, "?"), ref))
        return out

    def _remove_orphans(self, live: set[str], node_id: str | None) -> list[str]:
        client = self._client()
        removed = cleanup_orphans(client, live, node_id, self._remove_network)
        self._configure_oom()
        if self._oom.available:
            names = {
                str(c.get("Names", ["/"])[0]).lstrip("/") for c in client.api.containers(all=True)
            }
            for name in self._oom.leftovers(older_than=ORPHAN_PARENT_AGE):
                if name not in names and not self._oom.watching(name):
                    self._oom.release(name)
        return removed

    def _client(self) -> Any:
        if self._client_obj is None:
            self._client_obj = new_client()
        return self._client_obj

    async def exec(
        self, handle: TaskHandle, ctx: TaskContext, command: list[str], tty: bool
    ) -> ExecSession:
        """``docker exec`` in the task's container (its namespaces, user, directory, env)."""
        from podium.drivers.docker_exec import DockerExecSession

        return await DockerExecSession.start(self._client(), _container_id(handle), command, tty)

    def owns_task_files(self) -> bool:
        return True

    def keeps_health(self) -> bool:
        return True  # the image's HEALTHCHECK

    def task_owner(self, ctx: TaskContext) -> TaskOwner:
        """A container's files go to its user when that is numeric (``uid[:gid]``); a user
        name (or the image's default user) only the image resolves, so the files are then
        readable by any user (0644/0755, the agent's own): see the README."""
        cfg = ctx.config
        user = (cfg.user if isinstance(cfg, DockerConfig) else None) or ctx.user or ""
        return container_owner(user)

    def fingerprint(self) -> DriverInfo:
        now = time.monotonic()
        if self._fingerprint is not None and now - self._fingerprint[0] < FINGERPRINT_TTL:
            return self._fingerprint[1]
        info = self._probe()
        if info.healthy:
            info.attributes.update(self.policy.attributes())
        self._fingerprint = (now, info)
        return info

    @staticmethod
    def _probe() -> DriverInfo:
        try:
            client = new_client(timeout=FINGERPRINT_TIMEOUT)
        except ImportError:
            return DriverInfo(description="the docker Python SDK is not installed")
        except Exception as exc:
            return DriverInfo(description=f"no Docker Engine: {exc}")
        engine_id = ""
        try:
            version = client.version()
            # The engine's own id: `podium compose up` compares it with its local
            # engine's to know whether a node can run the images it built.
            with contextlib.suppress(Exception):
                engine_id = str(client.info().get("ID") or "")
        except Exception as exc:
            return DriverInfo(description=f"the Docker Engine does not answer: {exc}")
        finally:
            with contextlib.suppress(Exception):
                client.close()
        ver = str(version.get("Version", "unknown"))
        attrs = {"version": ver}
        if version.get("ApiVersion"):
            attrs["api_version"] = str(version["ApiVersion"])
        if engine_id:
            attrs["engine_id"] = engine_id
        return DriverInfo(
            detected=True, healthy=True, description=f"Docker Engine {ver}", attributes=attrs
        )

    # ------------------------------------------------------------------ start
    async def start(self, ctx: TaskContext) -> TaskHandle:
        cfg = ctx.config
        if not isinstance(cfg, DockerConfig):
            cfg = DockerConfig.model_validate(cfg.model_dump())
        if cfg.privileged and not (self.allow_privileged or self.policy.privileged):
            raise DriverError("privileged containers are not allowed on this node")
        # On the node, relative binds are resolved (symlinks too): one that stays in the
        # allocation's directory is no host volume; anything else needs --docker-volumes.
        needs = DockerNeeds.of(cfg, ctx.task_dir, os.path.dirname(ctx.alloc_dir))
        refusal = self.policy.refusal(needs)
        if refusal is not None:
            raise DriverError(f"{refusal} on this node", recoverable=False)
        create = self._create_args(ctx, cfg)
        state_dir = Path(ctx.task_dir) / STATE_SUBDIR
        state_dir.mkdir(parents=True, exist_ok=True)
        checkpoints = {s: str(state_dir / f"docker.{s}.since") for s in ("stdout", "stderr")}
        for path in checkpoints.values():  # a restarted task's new container logs afresh
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        network_labels = {
            LABEL_MANAGED: "true",
            LABEL_PROJECT: cfg.labels.get(LABEL_COMPOSE_PROJECT) or ctx.job_id,
            LABEL_NODE: ctx.node_id,
        }
        cid, pid, oom_parent = await asyncio.to_thread(
            self._create_and_start, cfg, create, network_labels
        )
        handle = TaskHandle(
            driver=self.name,
            task_id=ctx.task_id,
            pid=pid,
            started_at=time.time(),
            state={
                "container_id": cid,
                "container_name": create["name"],
                "image": cfg.image,
                "stdout_path": ctx.stdout_path,
                "stderr_path": ctx.stderr_path,
                "stdout_checkpoint": checkpoints["stdout"],
                "stderr_checkpoint": checkpoints["stderr"],
                "networks": [n.name for n in cfg.networks],
                "oom_parent": oom_parent,
            },
        )
        self._watch(handle, follow=True)
        return handle

    def _create_args(self, ctx: TaskContext, cfg: DockerConfig) -> dict[str, Any]:
        types = _docker().types
        env = {k: v for k, v in ctx.env.items() if k not in HOST_ONLY_ENV}
        env["PODIUM_ALLOC_DIR"] = ALLOC_MOUNT
        env["PODIUM_TASK_DIR"] = LOCAL_MOUNT
        cacert = env.get("PODIUM_CACERT", "")
        if cacert.startswith(ctx.task_dir + "/"):  # the task dir is /local inside
            env["PODIUM_CACERT"] = LOCAL_MOUNT + cacert[len(ctx.task_dir) :]
        env.update(cfg.env)
        labels = {
            **cfg.labels,
            LABEL_ALLOC: ctx.alloc_id,
            LABEL_JOB: ctx.job_id,
            LABEL_GROUP: ctx.group,
            LABEL_TASK: ctx.task_name,
            LABEL_NODE: ctx.node_id,
        }
        if ctx.data_dir:
            labels[LABEL_DATA_DIR] = str(Path(ctx.data_dir).absolute())
        mounts = [
            types.Mount(ALLOC_MOUNT, ctx.alloc_dir, type="bind"),
            types.Mount(LOCAL_MOUNT, ctx.task_dir, type="bind"),
        ]
        for spec in cfg.volumes:
            src, dst, *mode = spec.split(":")
            ro = mode == ["ro"]
            if src.startswith("/"):
                mounts.append(types.Mount(dst, src, type="bind", read_only=ro))
            elif src.startswith(".") or "/" in src:
                path = os.path.normpath(os.path.join(ctx.task_dir, src))
                mounts.append(types.Mount(dst, path, type="bind", read_only=ro))
            else:
                mounts.append(types.Mount(dst, src, type="volume", read_only=ro))
        # Host volumes the operator declared (--host-volume): bound whatever the node's
        # policy says of arbitrary binds, which the config's volumes/mounts stay under.
        for vol in ctx.mounts:
            mounts.append(
                types.Mount(vol.destination, vol.source, type="bind", read_only=vol.read_only)
            )
        for m in cfg.mounts:
            source = m.source
            if m.type == "bind":
                if not source:
                    raise DriverError(f"bind mount {m.target!r} needs a source")
                source = os.path.normpath(os.path.join(ctx.task_dir, source))
                if m.create_host_path:
                    _create_host_path(source)
            mounts.append(
                types.Mount(
                    m.target,
                    source,
                    type=m.type,
                    read_only=m.readonly,
                    no_copy=m.nocopy,
                    tmpfs_size=m.size * MIB if m.size is not None else None,
                    tmpfs_mode=m.mode,
                )
            )
        ports = _port_bindings(cfg, ctx)
        command: list[str] | None = None
        if cfg.command is not None:
            command = [cfg.command, *cfg.args]
        elif cfg.args:
            command = list(cfg.args)
        entrypoint = [cfg.entrypoint] if isinstance(cfg.entrypoint, str) else cfg.entrypoint
        res = ctx.resources
        # The reservation is Docker's soft limit; a hard limit only where the job names one.
        memory_max = res.memory_max * MIB if res.memory_max is not None else None
        healthcheck: dict[str, Any] | None = None
        if cfg.healthcheck is not None:
            hc = cfg.healthcheck
            healthcheck = {"test": hc.test}
            if not hc.disabled:
                for key in ("interval", "timeout", "start_period"):
                    if getattr(hc, key):
                        healthcheck[key] = round(getattr(hc, key) * 1e9)
                if hc.retries:
                    healthcheck["retries"] = hc.retries
        network: str | None = None
        if cfg.networks and not cfg.network_mode:
            network = cfg.networks[0].name  # the primary network, joined at create time
        args: dict[str, Any] = {
            "image": cfg.image,
            "command": command,
            "entrypoint": entrypoint,
            "name": container_name(ctx.task_name, ctx.alloc_id),
            "environment": env,
            "labels": labels,
            "mounts": mounts,
            "ports": ports,
            "mem_limit": memory_max,
            "memswap_limit": memory_max,
            "mem_reservation": res.memory * MIB,
            "cpu_shares": max(MIN_CPU_SHARES, res.cpu),
            "nano_cpus": nano_cpus(res.cpu_max) if res.cpu_max is not None else None,
            "privileged": cfg.privileged,
            "cap_add": cfg.cap_add or None,
            "cap_drop": cfg.cap_drop or None,
            "network_mode": cfg.network_mode,
            "network": network,
            "healthcheck": healthcheck,
            "hostname": cfg.hostname,
            "working_dir": cfg.work_dir,
            "user": cfg.user or ctx.user or None,
            "log_config": LOG_OPTIONS,
            "detach": True,
        }
        gpus = [d for g in ctx.devices if g.plugin == "nvidia" for d in g.device_ids]
        if gpus:  # real NVIDIA GPUs: the engine's nvidia runtime hands them over
            args["device_requests"] = [
                types.DeviceRequest(driver="nvidia", device_ids=gpus, capabilities=[["gpu"]])
            ]
        return {k: v for k, v in args.items() if v is not None}

    def _ensure_image(self, cfg: DockerConfig) -> None:
        client = self._client()
        errors = _errors()
        image = cfg.image
        seen = self._images_seen.get(image)
        if cfg.image_pull != "always" and seen is not None and time.monotonic() - seen < 60:
            return  # checked a moment ago: a burst of starts asks the engine once
        present = True
        try:
            client.images.get(image)
        except errors.ImageNotFound:
            present = False
        except errors.APIError as exc:
            raise DriverError(f"image {image!r}: {exc}", recoverable=True) from exc
        if present and cfg.image_pull != "always":
            self._images_seen[image] = time.monotonic()
            return
        if not present and cfg.image_pull == "never":
            raise DriverError(
                f"image {image!r} is not present on this node and image_pull is 'never'",
                recoverable=False,
            )
        repo, tag = _docker().utils.parse_repository_tag(image)
        try:
            client.images.pull(repo, tag=tag or "latest")
        except (errors.APIError, errors.DockerException) as exc:
            if present:
                log.warning("pulling %s failed, using the local image: %s", image, exc)
                return
            raise DriverError(
                f"image {image!r} is not present on this node and could not be pulled: "
                f"{_explain(exc)}",
                recoverable=False,
            ) from exc

    def _create_and_start(
        self, cfg: DockerConfig, create: dict[str, Any], network_labels: dict[str, str]
    ) -> tuple[str, int, str | None]:
        """Create and start the container; its id, host pid and OOM parent (if any)."""
        self._ensure_image(cfg)
        oom_parent = self._prepare_oom(create)
        self._join_networks(cfg.networks, network_labels)
        try:
            cid, pid = self._create_container(cfg, create)
        except BaseException:
            if oom_parent is not None:
                self._oom.release(oom_parent)
            raise
        finally:
            self._leave_networks(cfg.networks)
        if oom_parent is not None and pid and not self._oom.has_container(oom_parent, cid):
            with contextlib.suppress(Exception):
                running = self._client().api.inspect_container(cid)["State"]["Running"]
                if running and not self._oom.has_container(oom_parent, cid):
                    # this agent does not see the engine's cgroup tree (another mount
                    # namespace, say): the parent cannot tell it anything
                    self._oom.disable(f"container {cid[:12]} is not under {oom_parent}")
        return cid, pid, oom_parent

    # ------------------------------------------------------------------ OOM parents
    def _configure_oom(self) -> None:
        if self._oom_configured:
            return
        self._oom_configured = True
        try:
            info = self._client().info()
        except Exception as exc:
            self._oom.disable(f"docker info failed: {exc}")
            return
        self._oom.configure(str(info.get("CgroupDriver", "")), str(info.get("CgroupVersion", "")))
        if not self._oom.available:
            log.info("docker: OOM reports come from the engine (%s)", self._oom.disabled_reason)

    def _prepare_oom(self, create: dict[str, Any]) -> str | None:
        """Give the container a Podium parent cgroup holding its memory limit (cgroup v1,
        cgroupfs: see :mod:`podium.drivers.docker_oom`); its name, or None."""
        self._configure_oom()
        if not self._oom.available:
            return None
        if create.get("mem_limit") is None:
            return None  # no limit of its own: an OOM is the node's, as the engine reports it
        name = str(create["name"])
        limit = int(create["mem_limit"])
        try:
            create["cgroup_parent"] = self._oom.prepare(name, limit)
        except OSError as exc:
            self._oom.disable(f"cannot create the parent cgroup for {name}: {exc}")
            return None
        create["mem_limit"] = create["memswap_limit"] = child_limit(limit)
        return name

    def _oom_verdict(self, watch: _Container, result: ExitResult) -> ExitResult:
        """``result`` with ``oom_killed`` set when the container was OOM-killed but the
        engine did not flag it (Docker 20.10 on cgroup v1 loses the flag under load)."""
        if result.oom_killed or result.error is not None:
            return result
        oom = False
        sigkill = result.signal == 9 and not watch.killed
        if watch.oom_parent is not None and self._oom.available:
            count = self._oom.oom_count(watch.oom_parent)
            oom = bool(count)
            if not oom and sigkill and (count is None or watch.oom_parent in self._oom_rewatched):
                # watched only since an agent restart (or not at all): did it hit its limit?
                oom = self._oom.limit_hit(watch.oom_parent)
        elif sigkill:
            oom = self._oom_event(watch)
        if oom:
            result.oom_killed = True
        return result

    def _oom_event(self, watch: _Container) -> bool:
        """Whether the engine emitted an ``oom`` event for the container (it may come
        just after the exit: the query waits up to a second for it)."""
        since = int(watch.started_at or time.time()) - 1
        client = None
        try:
            client = new_client(timeout=10)
            events = client.events(
                since=since,
                until=int(time.time()) + 1,
                filters={"container": watch.container_id, "event": "oom"},
                decode=True,
            )
            return any(True for _ in events)
        except Exception as exc:
            log.debug("oom events of %s: %s", watch.container_id[:12], exc)
            return False
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    # ------------------------------------------------------------------ networks
    def _join_networks(self, networks: list[DockerNetwork], labels: dict[str, str]) -> None:
        """Make sure each network exists (a labelled bridge when Podium creates it) and
        hold it until the container is on it, so no destroy removes it meanwhile."""
        if not networks:
            return
        client = self._client()
        errors = _errors()
        with self._net_lock:
            for net in networks:
                self._net_users[net.name] = self._net_users.get(net.name, 0) + 1
            try:
                for net in networks:
                    try:
                        client.api.inspect_network(net.name)
                        continue
                    except errors.NotFound:
                        pass
                    try:
                        client.api.create_network(
                            net.name,
                            driver=NETWORK_DRIVER,
                            check_duplicate=True,
                            labels=labels,
                        )
                    except errors.APIError as exc:
                        if exc.status_code != 409:  # 409: created by someone else meanwhile
                            raise DriverError(
                                f"could not create network {net.name}: {_explain(exc)}",
                                recoverable=not exc.is_client_error(),
                            ) from exc
            except BaseException:
                self._leave_networks_locked(networks)
                raise

    def _leave_networks(self, networks: list[DockerNetwork]) -> None:
        if networks:
            with self._net_lock:
                self._leave_networks_locked(networks)

    def _leave_networks_locked(self, networks: list[DockerNetwork]) -> None:
        for net in networks:
            users = self._net_users.get(net.name, 0) - 1
            if users > 0:
                self._net_users[net.name] = users
            else:
                self._net_users.pop(net.name, None)

    def _release_networks(self, names: list[str]) -> None:
        """Remove the Podium-managed networks among ``names`` that no container uses."""
        client = self._client()
        for name in names:
            with contextlib.suppress(Exception):
                self._remove_network(client, name)

    def _remove_network(self, client: Any, name: str) -> bool:
        """:func:`remove_network_if_unused`, unless a start of this driver is joining it
        (a created container that has not started holds no endpoint: the engine would
        let the network go under it)."""
        with self._net_lock:
            if self._net_users.get(name):
                return False
            return remove_network_if_unused(client, name)

    # ------------------------------------------------------------------ create
    def _create_container(self, cfg: DockerConfig, create: dict[str, Any]) -> tuple[str, int]:
        client = self._client()
        errors = _errors()
        name = create["name"]
        create = dict(create)
        extra: list[DockerNetwork] = list(cfg.networks)
        if "network" in create:
            first = extra.pop(0)
            create["networking_config"] = {
                first.name: client.api.create_endpoint_config(aliases=first.aliases or None)
            }
        try:
            try:
                container = client.containers.create(**create)
            except errors.ImageNotFound:
                # removed since we last checked it: check (and pull) again, once
                self._images_seen.pop(cfg.image, None)
                self._ensure_image(cfg)
                container = client.containers.create(**create)
            except errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                # the name is taken: a container left by a crashed agent; replace it
                with contextlib.suppress(errors.NotFound):
                    client.api.remove_container(name, force=True)
                container = client.containers.create(**create)
        except errors.APIError as exc:
            raise DriverError(
                f"could not create container {name}: {_explain(exc)}",
                recoverable=not exc.is_client_error(),
            ) from exc
        try:
            for net in extra:
                client.api.connect_container_to_network(
                    container.id, net.name, aliases=net.aliases or None
                )
            container.start()
            container.reload()
        except errors.APIError as exc:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise DriverError(
                f"could not start container {name}: {_explain(exc)}",
                recoverable=not exc.is_client_error(),
            ) from exc
        return str(container.id), int(container.attrs["State"].get("Pid") or 0)

    # ------------------------------------------------------------------ watching
    def _watch(self, handle: TaskHandle, *, follow: bool = False) -> _Container:
        """The container's watch (its waiter thread, and with ``follow`` its log
        followers), made on first use."""
        cid = _container_id(handle)
        watch = self._containers.get(cid)
        loop = asyncio.get_running_loop()
        if watch is not None and (watch.loop is loop or watch.future.done()):
            if follow:
                self._follow(watch, handle)
            return watch
        watch = _Container(cid, loop, loop.create_future())
        oom_parent = handle.state.get("oom_parent")
        watch.oom_parent = oom_parent if isinstance(oom_parent, str) else None
        watch.started_at = handle.started_at
        self._containers[cid] = watch
        if follow:
            # Before the waiter: a quick container's exit must find the followers to wait
            # for (made after it, they were missed and the exit reported before its logs).
            self._follow(watch, handle)
        watch.waiter = threading.Thread(
            target=self._wait_thread, args=(watch,), name=f"docker-wait-{cid[:12]}", daemon=True
        )
        watch.waiter.start()
        return watch

    def _follow(self, watch: _Container, handle: TaskHandle) -> None:
        if any(f.thread.is_alive() for f in watch.followers):
            return
        st = handle.state
        watch.followers = [
            _Follower(watch.container_id, s, st[f"{s}_path"], st[f"{s}_checkpoint"])
            for s in ("stdout", "stderr")
        ]
        for f in watch.followers:
            f.start()

    def _wait_thread(self, watch: _Container) -> None:
        errors = _errors()
        cid = watch.container_id
        deadline = time.monotonic() + ENGINE_RETRY
        result: ExitResult | None = None
        while result is None:
            client = None
            try:
                client = new_client(timeout=None)
                client.api.wait(cid)
                state = client.api.inspect_container(cid)["State"]
                if state.get("Running"):
                    continue  # restarted under us (should not happen: no restart policy)
                result = self._oom_verdict(watch, exit_result(state))
            except errors.NotFound:
                result = ExitResult(error=f"container {cid[:12]} no longer exists")
            except Exception as exc:
                if time.monotonic() > deadline:
                    result = ExitResult(error=f"lost track of container {cid[:12]}: {exc}")
                else:
                    time.sleep(1.0)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
        for f in watch.followers:
            f.join(LOG_DRAIN)
        watch.resolve(result)

    async def wait(self, handle: TaskHandle) -> ExitResult:
        return await asyncio.shield(self._watch(handle).future)

    def exit_future(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        """The container's exit future itself, the one ``wait`` shields: no task per
        running container (callers only remove their callbacks, see Driver.exit_future)."""
        return self._watch(handle).future

    async def recover(self, handle: TaskHandle) -> bool:
        cid = _container_id(handle)
        errors = _errors()
        try:
            info = await asyncio.to_thread(self._client().api.inspect_container, cid)
        except errors.NotFound:
            loop = asyncio.get_running_loop()
            watch = _Container(cid, loop, loop.create_future())
            watch.future.set_result(
                ExitResult(error=f"container {cid[:12]} vanished while the agent was down")
            )
            self._containers[cid] = watch
            return False
        state = info["State"]
        handle.pid = int(state.get("Pid") or 0) or handle.pid
        oom_parent = handle.state.get("oom_parent")
        if isinstance(oom_parent, str) and not self._oom.watching(oom_parent):
            await asyncio.to_thread(self._configure_oom)
            if await asyncio.to_thread(self._oom.watch, oom_parent):
                self._oom_rewatched.add(oom_parent)
        # the followers catch up on what was logged while the agent was down
        self._watch(handle, follow=True)
        return bool(state.get("Running"))

    # ------------------------------------------------------------------ stop
    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        try:
            sig = parse_signal(signal)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc
        watch = self._watch(handle)
        if watch.future.done():
            return
        if not await self._kill(watch.container_id, sig.name):
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(watch.future), max(0.0, timeout))
            return
        await self._kill(watch.container_id, "SIGKILL")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(watch.future), KILL_WAIT)

    async def _kill(self, cid: str, sig: str) -> bool:
        """Send ``sig``; False when the container is not running (or gone)."""
        errors = _errors()
        watch = self._containers.get(cid)
        if watch is not None and sig == "SIGKILL":
            watch.killed = True
        try:
            await asyncio.to_thread(self._client().api.kill, cid, sig)
        except errors.NotFound:
            return False
        except errors.APIError as exc:
            if exc.status_code == 409:  # not running
                return False
            raise DriverError(f"could not signal container {cid[:12]}: {_explain(exc)}") from exc
        return True

    async def destroy(self, handle: TaskHandle) -> None:
        cid = _container_id(handle)
        errors = _errors()
        try:
            await asyncio.to_thread(self._client().api.remove_container, cid, force=True)
        except errors.NotFound:
            pass  # already gone
        except errors.APIError as exc:
            # 409: someone (an operator, a cleanup) is removing it already; that is the goal
            if exc.status_code != 409:
                raise
        watch = self._containers.pop(cid, None)
        if watch is not None:
            watch.close_followers()
            if not watch.future.done():
                watch.future.set_result(ExitResult(error=f"container {cid[:12]} was removed"))
        await asyncio.to_thread(self._release, handle)

    def _release(self, handle: TaskHandle) -> None:
        """What the removed container held on the node: its OOM parent cgroup, and the
        Podium-managed networks no other container uses."""
        oom_parent = handle.state.get("oom_parent")
        if isinstance(oom_parent, str):
            self._oom_rewatched.discard(oom_parent)
            self._oom.release(oom_parent)
        networks = handle.state.get("networks")
        if isinstance(networks, list) and networks:
            self._release_networks([str(n) for n in networks])

    # ------------------------------------------------------------------ health
    async def health(self, handle: TaskHandle) -> DriverHealth | None:
        """Docker's HEALTHCHECK verdict: None when the container has none (or is gone),
        ``healthy=None`` while it is "starting", else healthy or not with the output of
        the last probe."""
        cid = _container_id(handle)
        errors = _errors()
        try:
            info = await asyncio.to_thread(self._client().api.inspect_container, cid)
        except errors.NotFound:
            return None
        return container_health(info.get("State") or {})

    async def signal(self, handle: TaskHandle, signal: str) -> None:
        """Send ``signal`` to the container's main process (``docker kill --signal``)."""
        try:
            sig = parse_signal(signal)
        except ValueError as exc:
            raise DriverError(str(exc)) from exc
        watch = self._watch(handle)
        if watch.future.done() or not await self._kill(watch.container_id, sig.name):
            raise DriverError(f"task {handle.task_id} is not running")

    # ------------------------------------------------------------------ stats
    async def stats(self, handle: TaskHandle) -> TaskStats:
        cid = _container_id(handle)
        errors = _errors()
        try:
            raw = await asyncio.to_thread(self._client().api.stats, cid, stream=False)
        except errors.NotFound:
            return TaskStats(timestamp=time.time())
        return TaskStats(
            cpu_percent=_cpu_percent(raw),
            memory_rss_bytes=_memory_bytes(raw),
            timestamp=time.time(),
            memory_limit_bytes=_memory_limit(raw),
            pids=int((raw.get("pids_stats") or {}).get("current") or 0),
        )


def _cpu_percent(raw: dict[str, Any]) -> float:
    cpu = raw.get("cpu_stats") or {}
    pre = raw.get("precpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage", 0)
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system = cpu.get("system_cpu_usage", 0)
    pre_system = pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [1])
    d_cpu, d_sys = total - pre_total, system - pre_system
    if d_cpu <= 0 or d_sys <= 0:
        return 0.0
    return float(round(d_cpu / d_sys * cpus * 100.0, 2))


def nano_cpus(max_mhz: int) -> int:
    """Docker's ``NanoCpus`` for a hard limit of ``max_mhz``: ``max_mhz / core_mhz()``
    cores, at least the engine's minimum of 0.01."""
    return max(10_000_000, max_mhz * 1_000_000_000 // core_mhz())


def _memory_bytes(raw: dict[str, Any]) -> int:
    mem = raw.get("memory_stats") or {}
    usage = int(mem.get("usage", 0))
    st = mem.get("stats") or {}
    cache = st.get("total_inactive_file", st.get("inactive_file", st.get("cache", 0)))
    return max(0, usage - int(cache))


def _memory_limit(raw: dict[str, Any]) -> int | None:
    """The container's memory limit; None when it has none (the engine then reports the
    host's memory as the limit)."""
    limit = int((raw.get("memory_stats") or {}).get("limit") or 0)
    if limit <= 0 or limit >= psutil.virtual_memory().total or limit >= UNLIMITED:
        return None
    return limit


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def container_owner(user: str) -> TaskOwner:
    """The owner of a container's files: ``uid[:gid]`` as numbers (gid defaults to uid);
    anything else (a name, empty: the image's default) is a user the agent cannot know."""
    uid, _, gid = user.strip().partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        return TaskOwner(int(uid), int(gid or uid))
    return TaskOwner(os.geteuid(), os.getegid(), any_user=True)
