"""Workload identity on the agent: each task's token, its file, and its renewal.

Before a task starts, the runner asks for its token (:meth:`AgentIdentities.ensure`);
the requests of one turn of the event loop (a burst of starts, every task of an
allocation) go to the servers as one ``POST /v1/client/node/{node_id}/identities``.
The token is written to ``<task_dir>/secrets/podium_token`` (the directory 0700, a tmpfs
where the agent can (:mod:`podium.agent.secretsdir`), the file 0600, both the task's
user's: ``Driver.task_owner``; for a container whose user the agent cannot know,
0755/0644: see docs/acl.md) and put
in the task's environment as ``PODIUM_TOKEN`` (with ``PODIUM_ADDR``, the server the
agent uses).  A failure to get one is a recoverable start error: the restart policy
tries again.

While tasks run, :meth:`AgentIdentities.run` renews their tokens at two-thirds of
their life, every due token of the node in one request, and rewrites the files
atomically (a new file renamed over the old).  The environment of a running process
cannot change: the file is always the current token.  A token of a stopped allocation
stops working at once on the server, whatever its expiry says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from podium.agent.allocrunner import Phase
from podium.client import AsyncClient
from podium.errors import DriverError

if TYPE_CHECKING:
    from podium.agent.runner import AllocRunner

log = logging.getLogger("podium.agent")

SECRETS_DIR = "secrets"
TOKEN_FILE = "podium_token"
CA_FILE = "ca.crt"
"""Under ``--secure``: the cluster CA, for ``PODIUM_CACERT`` (public, but beside the token)."""
RENEW_AT = 2 / 3
"""Part of a token's life after which it is renewed."""
RETRY = 5.0
"""Seconds before a failed renewal is tried again (at most a tenth of a token's life)."""
RESCAN = 60.0
"""The renewal loop looks at the node's tasks at least this often."""
_LIVE = (Phase.STARTING, Phase.RUNNING)
"""Tasks whose tokens are renewed (a starting one's was just issued: its renewal time
is what the loop sleeps until)."""


@dataclass(slots=True)
class Held:
    """A task's current token: ``issued`` and ``expires`` on the agent's clock."""

    token: str
    issued: float
    expires: float

    @property
    def renew_at(self) -> float:
        return self.issued + (self.expires - self.issued) * RENEW_AT


def write_token(
    task_dir: str,
    token: str,
    *,
    owner: tuple[int, int] | None = None,
    ca_pem: bytes | None = None,
) -> None:
    """Write ``token`` to ``<task_dir>/secrets/podium_token`` atomically, never through a
    symlink (the task owns its dir and could plant one).  The file takes the secrets
    dir's owner and is readable by it alone, unless the dir is readable by others
    (a container's unknown user: see :func:`open_secrets_for_any_user`).  ``owner``:
    give the dir (and so the file) to this uid and gid first.  ``ca_pem``: the cluster's
    CA certificates, written beside it as ``ca.crt`` (``PODIUM_CACERT``: under
    ``--secure`` the server's https address is verified with them)."""
    dir_fd = _secrets_dir(task_dir)
    try:
        if owner is not None:
            os.fchown(dir_fd, owner[0], owner[1])
        info = os.fstat(dir_fd)
        mode = 0o644 if info.st_mode & stat.S_IROTH else 0o600
        _replace(dir_fd, TOKEN_FILE, token.encode(), mode, info)
        if ca_pem is not None:
            _replace(dir_fd, CA_FILE, ca_pem, mode, info)
    finally:
        os.close(dir_fd)


def _secrets_dir(task_dir: str) -> int:
    """An fd of ``<task_dir>/secrets`` (made 0700 if missing), opened without following a
    symlink at either step."""
    flags = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    task_fd = os.open(task_dir, flags)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(SECRETS_DIR, 0o700, dir_fd=task_fd)
        return os.open(SECRETS_DIR, flags, dir_fd=task_fd)
    finally:
        os.close(task_fd)


def _replace(dir_fd: int, name: str, data: bytes, mode: int, owner: os.stat_result) -> None:
    """``name`` in the directory ``dir_fd`` replaced by ``data`` at once (a new file renamed
    over it), with ``mode`` and the directory's owner."""
    tmp = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.fchown(fd, owner.st_uid, owner.st_gid)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def open_secrets_for_any_user(task_dir: str) -> None:
    """Make the secrets dir readable by any user (0755): for a container whose user the
    agent cannot know (a name only the image resolves)."""
    dir_fd = _secrets_dir(task_dir)
    try:
        os.fchmod(dir_fd, 0o755)
    finally:
        os.close(dir_fd)


class IdentityHost(Protocol):
    """What the token keeper needs from the agent (:class:`~podium.agent.agent.Agent`)."""

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def client(self) -> AsyncClient: ...

    @property
    def node_id(self) -> str: ...

    @property
    def runners(self) -> Mapping[str, AllocRunner]: ...

    def cluster_ca(self) -> bytes | None: ...


class AgentIdentities:
    """The node's workload tokens: fetched in batches, renewed in one loop."""

    def __init__(self, agent: IdentityHost) -> None:
        self.agent = agent
        self._batch: dict[str, tuple[AllocRunner, set[str]]] = {}
        self._answer: asyncio.Future[dict[str, str]] | None = None
        self._changed = asyncio.Event()
        self._refused: set[str] = set()
        """Allocations the servers gave no token on renewal (stopping): not asked again."""
        self._sending: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- before a start
    async def ensure(self, runner: AllocRunner, task: str) -> None:
        """The task holds a token that is not due for renewal, written to its file;
        raises a recoverable :class:`DriverError` when none could be had."""
        held = runner.identity(task)
        if held is None or self.agent.clock() >= held.renew_at:
            group = runner.machine.spec.groups[runner.alloc.group]
            now = self.agent.clock()
            wanted = {task} | {
                t for t in group.tasks if (h := runner.identity(t)) is None or now >= h.renew_at
            }
            refused = await self._request(runner, wanted)
            self._refused.discard(runner.id)
            held = runner.identity(task)
            if held is None:
                why = refused.get(runner.id, "the servers answered no token for it")
                raise DriverError(f"no workload identity for task {task}: {why}", recoverable=True)
        self.write(runner, task, held)

    async def _request(self, runner: AllocRunner, tasks: set[str]) -> dict[str, str]:
        """Ask (with every other request of this loop turn) for ``tasks``' tokens; answers
        the allocations refused, with why."""
        entry = self._batch.get(runner.id)
        if entry is None:
            self._batch[runner.id] = (runner, set(tasks))
        else:
            entry[1].update(tasks)
        if self._answer is None:
            self._answer = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        return await asyncio.shield(self._answer)

    def _flush(self) -> None:
        batch, self._batch = self._batch, {}
        answer, self._answer = self._answer, None
        assert answer is not None
        task = asyncio.get_running_loop().create_task(self._send(batch, answer))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(
        self, batch: dict[str, tuple[AllocRunner, set[str]]], answer: asyncio.Future[dict[str, str]]
    ) -> None:
        try:
            refused = await self._fetch(batch)
        except Exception as exc:
            why = f"cannot get workload tokens from the servers: {exc}"
            answer.set_result(dict.fromkeys(batch, why))
            return
        answer.set_result(refused)

    async def _fetch(self, batch: dict[str, tuple[AllocRunner, set[str]]]) -> dict[str, str]:
        wanted = {alloc_id: sorted(tasks) for alloc_id, (_, tasks) in batch.items()}
        got = await self.agent.client.workload_identities(self.agent.node_id, wanted)
        now = self.agent.clock()
        for ident in got.identities:
            entry = batch.get(ident.alloc_id)
            if entry is None:
                continue
            ttl = got.ttl if got.ttl > 0 else max(0.0, ident.expires_at - now)
            entry[0].set_identity(ident.task, Held(ident.token, now, now + ttl))
        self._changed.set()
        return dict(got.refused)

    def write(self, runner: AllocRunner, task: str, held: Held) -> None:
        """The token into the task's secrets file (see :func:`write_token`)."""
        runner.make_dirs()
        task_dir = str(runner.task_dir(task))
        found = runner.task_owner(task)  # Driver.task_owner: the user the task runs as
        owner: tuple[int, int] | None = None
        if found is not None and found.any_user:
            open_secrets_for_any_user(task_dir)
        elif found is not None:
            owner = (found.uid, found.gid)
        try:
            write_token(task_dir, held.token, owner=owner, ca_pem=self.agent.cluster_ca())
        except OSError as exc:
            raise DriverError(
                f"cannot write the workload token of task {task}: {exc}", recoverable=True
            ) from exc

    # ---------------------------------------------------------------- renewal
    def _due(self, now: float) -> tuple[dict[str, tuple[AllocRunner, set[str]]], float]:
        """The running tasks whose tokens are due (or missing: a restarted agent's), and
        when the next one will be."""
        due: dict[str, tuple[AllocRunner, set[str]]] = {}
        next_at = now + RESCAN
        if self._refused:
            self._refused &= self.agent.runners.keys()
        for runner in list(self.agent.runners.values()):
            if runner.forgotten or runner.machine.terminal() or runner.id in self._refused:
                continue
            for task, track in runner.machine.tasks.items():
                if track.phase not in _LIVE:
                    continue
                held = runner.identity(task)
                if held is None and track.phase != Phase.RUNNING:
                    continue  # a start gets its own
                if held is not None:
                    # renew together what falls due within a tenth of its life
                    slack = min(30.0, (held.expires - held.issued) / 10)
                    if held.renew_at > now + slack:
                        next_at = min(next_at, held.renew_at)
                        continue
                due.setdefault(runner.id, (runner, set()))[1].add(task)
        return due, next_at

    async def run(self) -> None:
        """Renew the running tasks' tokens at two-thirds of their life (one request for
        all that are due), rewriting their files; forever."""
        while True:
            now = self.agent.clock()
            due, next_at = self._due(now)
            if due:
                try:
                    refused = await self._fetch(due)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("renewing %d workload tokens failed: %s", len(due), exc)
                    next_at = now + RETRY
                else:
                    for alloc_id, (runner, tasks) in due.items():
                        if alloc_id in refused:
                            log.info("alloc %s: no workload token: %s", alloc_id, refused[alloc_id])
                            self._refused.add(alloc_id)
                            continue
                        for task in tasks:
                            held = runner.identity(task)
                            if held is None or held.renew_at <= self.agent.clock():
                                self._refused.add(alloc_id)  # never ask in a loop
                                continue
                            try:
                                self.write(runner, task, held)
                            except DriverError as exc:
                                log.warning("alloc %s: %s", alloc_id, exc)
                    continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.05, next_at - now))
