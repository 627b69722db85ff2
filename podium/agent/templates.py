"""Templates: files rendered into a task's directory, and rendered again on change.

A task's ``templates`` (:class:`podium.models.Template`) are Jinja2 text,
rendered in a sandbox (:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`:
no ``__class__``, no ``_private`` attributes, no mutating lists or dicts, bounded
``range``) with three names:

- ``var("app/config")``: the variable's items, as keys and attributes
  (``var("app/config").db_url``); a missing variable fails the render;
- ``service("db")``: the healthy instances of a service (``address``, ``port``,
  ``tags``, ``alloc_id``, ``node_id``, ``healthy``), possibly none;
- ``env``: the task's environment (``env.PODIUM_ALLOC_ID``).

A template is job author's code, so it never runs on the agent's event loop: it is
parsed and rendered in a child process (:mod:`podium.agent.render_worker`) with hard
limits (``RENDER_CPU`` seconds of CPU, ``RENDER_MEMORY`` of address space, ``MAX_OUTPUT``
of text, ``RENDER_TIMEOUT`` of wall clock, after which it is killed).  ``var()`` and
``service()`` therefore take string literals: the child names them, the agent fetches
them, the child renders.

Life cycle, per task (:class:`TemplateManager`, one per allocation runner):

1. before every start the runner awaits :meth:`TemplateManager.render_for_start`:
   every template is rendered and written (atomically, never through a symlink
   that leaves the task directory); ``env: true`` files are parsed as KEY=VALUE
   lines into the task's environment.  A failure raises :class:`TemplateError`,
   a recoverable start error naming the template: the restart policy retries.
2. once the task runs, :meth:`TemplateManager.started` watches what the render
   read, each with a blocking query from the index it was read at (nothing
   written in between is missed): ``GET /v1/var/{path}`` and
   ``GET /v1/service/{name}?healthy=true``.
3. when one changes, the task's templates are rendered again; the files whose
   content changed are rewritten and the task is restarted (``change_mode:
   restart``, a free restart: it does not count against the restart policy),
   signalled (``signal``), or left alone (``noop``).  A failing re-render keeps
   the files as they were and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import signal
import stat
import sys
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.agent.allocrunner import Phase, RestartRequested
from podium.agent.template_values import ServiceInstance, VariableItems
from podium.client import AsyncClient, endpoints
from podium.drivers.base import TaskOwner
from podium.errors import DriverError, NotFound, PodiumError
from podium.models import Template

if TYPE_CHECKING:
    from podium.agent.runner import AllocRunner

log = logging.getLogger("podium.agent")

WATCH_WAIT = 60.0
"""The longest single blocking query on a variable or service."""
POLL = 2.0
"""Pause between queries that cannot block (a missing variable, an answer whose index
did not move, an unreachable server)."""
SETTLE = 0.05
"""A change is rendered this long after it is seen, so a burst of writes renders once."""
FILE_MODE = 0o600
"""Rendered files are readable by the task's user alone (``Driver.task_owner``; a
container whose user the agent cannot know gets ``TaskOwner.any_user``: 0644)."""
DIR_MODE = 0o700
"""Directories a destination needs, made for the task's user alone (0755 for any user)."""
RENDER_TIMEOUT = 5.0
"""Wall-clock seconds a render worker may take per step (parse, then render); then it is
killed.  Fetching variables and services in between does not count."""
RENDER_CPU = 2.0
"""CPU seconds a render worker may use (``RLIMIT_CPU``)."""
RENDER_MEMORY = 512 << 20
"""Address space a render worker may use (``RLIMIT_AS``)."""
MAX_OUTPUT = 1 << 20
"""The largest rendered file (UTF-8 bytes)."""
MAX_TEMPLATE = 1 << 20
"""The largest template text (``data`` or ``source``)."""
MAX_WORKERS = max(2, os.cpu_count() or 2)
FETCH_TIMEOUT = 30.0
"""Seconds a render waits for its var()/service() answers from the server."""
"""Render workers running at once, per agent."""
_LINE_LIMIT = 16 << 20
"""The longest JSON line read from a worker (its output, escaped)."""

__all__ = [
    "Dep",
    "Lookups",
    "ServiceInstance",
    "TemplateError",
    "TemplateManager",
    "VariableItems",
    "parse_env",
    "read_existing",
    "read_source",
    "render",
    "write_file",
]


class TemplateError(DriverError):
    """A template could not be rendered or written: a recoverable start error."""

    def __init__(self, message: str) -> None:
        super().__init__(message, recoverable=True)


class _LookupFailed(Exception):
    """``var()`` or ``service()`` could not answer (wrapped with the template's name)."""


# --------------------------------------------------------------------------- lookups


@dataclass
class Dep:
    """Something a render read: where to watch it from, and what it was."""

    index: int
    marker: Any


class Lookups:
    """``var()`` and ``service()`` for one render pass: each read once, remembered with the
    index it was read at so watching starts from there.

    A render worker is handed what its template's literal ``var()``/``service()`` calls
    name (:meth:`fetch`); :attr:`deps` holds only what a render then actually called
    (:meth:`use`), so a lookup behind a false ``{% if %}`` is not watched."""

    def __init__(
        self, client: AsyncClient, namespace: str = "default", token: str | None = None
    ) -> None:
        self.client = client
        self.namespace = namespace
        """The allocation's: ``var()`` and ``service()`` read only what is in it."""
        self.token = token
        """The task's workload token: with ACLs on, the server lets a template read what
        the task may read (its job's variables, its namespace's services), nothing else."""
        self.deps: dict[tuple[str, str], Dep] = {}
        self._read: dict[tuple[str, str], Dep] = {}
        self._vars: dict[str, VariableItems | str] = {}
        self._services: dict[str, list[ServiceInstance] | str] = {}

    async def var(self, path: Any) -> VariableItems:
        if not isinstance(path, str):
            raise _LookupFailed(f"var() takes a path such as 'app/config', not {path!r}")
        if path not in self._vars:
            try:
                result = await self.client.query(
                    endpoints.with_token(
                        endpoints.in_namespace(endpoints.var_get(path), self.namespace),
                        self.token,
                    )
                )
            except NotFound:
                self._vars[path] = f"variable {path!r} not found"
            except ValueError as exc:  # a malformed path
                self._vars[path] = str(exc)
            except PodiumError as exc:
                self._vars[path] = f"cannot read variable {path!r}: {exc}"
            else:
                self._vars[path] = VariableItems(path, result.value.items)
                self._read[("var", path)] = Dep(result.index, result.value.modify_index)
        found = self._vars[path]
        if isinstance(found, str):
            raise _LookupFailed(found)
        return found

    async def service(self, name: Any) -> list[ServiceInstance]:
        if not isinstance(name, str) or not name:
            raise _LookupFailed(f"service() takes a service name such as 'db', not {name!r}")
        if name not in self._services:
            try:
                instances, index = await fetch_service(
                    self.client, name, namespace=self.namespace, token=self.token
                )
            except _LookupFailed as exc:
                self._services[name] = str(exc)
            else:
                self._services[name] = instances
                self._read[("service", name)] = Dep(index, tuple(instances))
        found = self._services[name]
        if isinstance(found, str):
            raise _LookupFailed(found)
        return list(found)

    async def fetch(self, paths: list[str], names: list[str]) -> dict[str, Any]:
        """What a render worker is handed: each variable and service, or why it could not
        be read (that fails the render only if the template calls it), fetched together."""

        async def one_var(path: str) -> dict[str, Any]:
            try:
                return {"items": dict(await self.var(path))}
            except _LookupFailed as exc:
                return {"error": str(exc)}

        async def one_service(name: str) -> dict[str, Any]:
            try:
                return {"instances": [i.to_json() for i in await self.service(name)]}
            except _LookupFailed as exc:
                return {"error": str(exc)}

        var_values = await asyncio.gather(*(one_var(p) for p in paths))
        service_values = await asyncio.gather(*(one_service(n) for n in names))
        return {
            "vars": dict(zip(paths, var_values, strict=True)),
            "services": dict(zip(names, service_values, strict=True)),
        }

    def use(self, used: Any) -> None:
        """A render called these (``[[kind, name], ...]``, from the worker): watch them."""
        for entry in used or ():
            key = (str(entry[0]), str(entry[1]))
            dep = self._read.get(key)
            if dep is not None:
                self.deps[key] = dep


async def fetch_service(
    client: AsyncClient,
    name: str,
    index: int | None = None,
    wait: float | None = None,
    namespace: str = "default",
    token: str | None = None,
) -> tuple[list[ServiceInstance], int]:
    try:
        endpoint = endpoints.with_token(
            endpoints.in_namespace(endpoints.service(name, True), namespace), token
        )
        result = await client.query(endpoint, index=index, wait=wait)
    except NotFound:
        return [], 0
    except PodiumError as exc:
        raise _LookupFailed(f"cannot read service {name!r}: {exc}") from None
    instances = [
        ServiceInstance(
            alloc_id=r.alloc_id,
            node_id=r.node_id,
            address=r.address,
            port=r.port,
            tags=tuple(r.tags),
            healthy=r.healthy,
        )
        for r in result.value
        if r.healthy
    ]
    instances.sort(key=lambda i: (i.address, i.port, i.alloc_id))
    return instances, result.index


# --------------------------------------------------------------------------- reading a source


def _outside_message(name: str, source: str) -> str:
    return (
        f"template {name}: source {source} is outside the task's "
        "directory; this agent reads template sources inside it only "
        "(start it with --template-host-files to allow files of the machine)"
    )


def read_source(name: str, source: str, task_dir: Path, *, host_files: bool = False) -> str:
    """A template's ``source``, read from inside the task's directory only (symlinks
    resolved), unless the agent allows host files (``--template-host-files``): otherwise any
    job author could copy any file of the machine into a task (Nomad's file sandbox).

    The file is opened once, the check is made on the *opened* file (its real path, from
    ``/proc/self/fd``) and the text is read from that descriptor: a task swapping a symlink
    in after a check, at the last component or a directory on the way, gains nothing.  The
    path is resolved first and opened with ``O_NOFOLLOW``, so a last-component symlink
    swapped in is refused rather than followed; ``O_NONBLOCK`` and the regular-file check
    keep a FIFO from hanging the agent."""
    path = source if os.path.isabs(source) else os.path.join(task_dir, source)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    root = ""
    if not host_files:
        root = os.path.realpath(task_dir)
        path = _realpath(path)
        if not _inside(path, root):
            raise TemplateError(_outside_message(name, source))
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not host_files:
            raise TemplateError(
                f"template {name}: source {source} turned into a symlink while it was "
                "read; refusing it"
            ) from None
        raise TemplateError(
            f"template {name}: cannot read source {path}: {exc.strerror or exc}"
        ) from None
    try:
        if not host_files and not _inside(_fd_path(fd), root):
            raise TemplateError(_outside_message(name, source))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TemplateError(f"template {name}: source {source} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 16):
            size += len(chunk)
            if size > MAX_TEMPLATE:
                raise TemplateError(
                    f"template {name}: source {source} is larger than {_size(MAX_TEMPLATE)}"
                )
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError as exc:
        raise TemplateError(
            f"template {name}: cannot read source {path}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"template {name}: cannot read source {path}: {exc}") from None
    finally:
        os.close(fd)


def _realpath(path: str) -> str:
    """Symlinks resolved: where the source is expected to be.  Only a first look (and a
    clear message); the opened file is what is checked."""
    return os.path.realpath(path)


# --------------------------------------------------------------------------- rendering


class _WorkerDied(Exception):
    """The render worker ended without answering."""


_WORKER_BOOT = (
    "import json, sys; "
    "sys.path.extend(p for p in json.loads(sys.argv[1]) if p not in sys.path); "
    "from podium.agent.render_worker import main; "
    "sys.exit(main())"
)


def _worker_command() -> list[str]:
    """``python -m podium.agent.render_worker``, started isolated (``-I``: neither the
    current directory nor ``PYTHON*`` variables) but able to import what this process does."""
    paths = [p for p in sys.path if p]
    root = str(Path(__file__).resolve().parents[2])  # the directory holding podium/
    if root not in paths:
        paths.append(root)
    return [sys.executable, "-I", "-c", _WORKER_BOOT, json.dumps(paths)]


_WORKER_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LD_LIBRARY_PATH", "TMPDIR")


def _worker_env() -> dict[str, str]:
    """The worker's environment: what starting Python may need, nothing of the agent's."""
    return {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slots() -> asyncio.Semaphore:
    """At most MAX_WORKERS render workers at once: a burst of starts forks no storm."""
    loop = asyncio.get_running_loop()
    sem = _SLOTS.get(loop)
    if sem is None:
        sem = _SLOTS[loop] = asyncio.Semaphore(MAX_WORKERS)
    return sem


async def _drain(stream: asyncio.StreamReader | None, keep: int = 4096) -> bytes:
    """Read a stream to its end, keeping its last ``keep`` bytes."""
    tail = b""
    if stream is None:
        return tail
    while chunk := await stream.read(1 << 16):
        tail = (tail + chunk)[-keep:]
    return tail


async def _exchange(proc: asyncio.subprocess.Process, message: Mapping[str, Any]) -> Any:
    """Send the worker one JSON line; answer its JSON line."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(message).encode() + b"\n")
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        raise _WorkerDied from None
    line = await proc.stdout.readline()
    if not line:
        raise _WorkerDied
    return json.loads(line)


async def _step(
    proc: asyncio.subprocess.Process, message: Mapping[str, Any], name: str, timeout: float
) -> Any:
    """One exchange with the worker, within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(proc, message)
    except TimeoutError:
        raise TemplateError(
            f"template {name}: rendering took longer than {timeout:g}s and was stopped"
        ) from None


def _died(name: str, returncode: int | None, stderr: bytes) -> TemplateError:
    if returncode is not None and -returncode in (signal.SIGXCPU, signal.SIGKILL):
        return TemplateError(
            f"template {name}: rendering used more than {RENDER_CPU:g}s of CPU time and was stopped"
        )
    last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
    if "MemoryError" in last[0]:
        return TemplateError(
            f"template {name}: rendering used more than {_size(RENDER_MEMORY)} of memory "
            "and was stopped"
        )
    return TemplateError(
        f"template {name}: the render worker failed (exit status {returncode}): {last[0]}"
    )


async def _render_in_worker(name: str, text: str, env: Mapping[str, str], lookups: Lookups) -> str:
    """Parse and render ``text`` in a child process (:mod:`podium.agent.render_worker`)
    under hard limits: CPU time and memory (the child lowers its own), output size, and a
    wall-clock limit enforced here (the child is killed).  The event loop only waits.

    The child first answers which variables and services the template names; they are
    fetched here (that time does not count against the render) and handed to it."""
    timeout = RENDER_TIMEOUT
    request = {
        "template": text,
        "env": dict(env),
        "limits": {"cpu_s": RENDER_CPU, "memory_bytes": RENDER_MEMORY, "output_bytes": MAX_OUTPUT},
    }
    slots = _slots()
    await slots.acquire()
    held = True
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *_worker_command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=_LINE_LIMIT,
                env=_worker_env(),
            )
        except OSError as exc:
            raise TemplateError(
                f"template {name}: cannot start the render worker: {exc.strerror or exc}"
            ) from None
        stderr = asyncio.get_running_loop().create_task(_drain(proc.stderr))
        try:
            try:
                first = await _step(proc, request, name, timeout)
                if "error" in first:
                    raise TemplateError(f"template {name}: {first['error']}")
                wanted = first["lookups"]
                # The child idles while the server answers: its slot goes to another
                # render meanwhile (a slow server must not stall every template on the
                # node), and the fetch has a limit of its own.
                slots.release()
                held = False
                try:
                    async with asyncio.timeout(FETCH_TIMEOUT):
                        values = await lookups.fetch(list(wanted["var"]), list(wanted["service"]))
                except TimeoutError:
                    raise TemplateError(
                        f"template {name}: the server did not answer its variable and service "
                        f"lookups within {FETCH_TIMEOUT:g}s"
                    ) from None
                except Exception as exc:
                    raise TemplateError(f"template {name}: {type(exc).__name__}: {exc}") from None
                finally:
                    await slots.acquire()
                    held = True
                result = await _step(proc, values, name, timeout)
            except _WorkerDied:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await proc.wait()
                        await stderr
                tail = stderr.result() if stderr.done() and not stderr.cancelled() else b""
                raise _died(name, proc.returncode, tail) from None
            except (ValueError, KeyError, TypeError) as exc:  # an answer that is not one
                raise TemplateError(
                    f"template {name}: the render worker answered nonsense: {exc!r}"
                ) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(Exception):
                await proc.wait()
            stderr.cancel()
    finally:
        if held:
            slots.release()
    lookups.use(result.get("used"))
    if "error" in result:
        raise TemplateError(f"template {name}: {result['error']}")
    return str(result["text"])


async def render(
    template: Template,
    task_dir: Path,
    env: Mapping[str, str],
    lookups: Lookups,
    *,
    host_files: bool = False,
) -> str:
    """The template's text, rendered; raises TemplateError naming the template.

    Parsing and rendering run in a child process with hard limits
    (:func:`_render_in_worker`); ``var()``/``service()`` take literal arguments, fetched
    here.  A ``source`` is read as :func:`read_source` says."""
    name = template.destination
    if template.source is not None:
        text = read_source(name, template.source, task_dir, host_files=host_files)
    else:
        text = template.data or ""
    if len(text.encode(errors="surrogatepass")) > MAX_TEMPLATE:
        raise TemplateError(f"template {name}: larger than {_size(MAX_TEMPLATE)}")
    return await _render_in_worker(name, text, env, lookups)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} B"


_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env(text: str, name: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (blank lines, ``#`` comments and ``export`` allowed; one pair of
    surrounding quotes is removed).  A bad line is named by number, never by content: it
    may hold a secret."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY.match(key):
            raise TemplateError(
                f"template {name}: line {number} is not KEY=VALUE (env: true templates must "
                "render environment variables, one per line)"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


# --------------------------------------------------------------------------- writing


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _enter(
    dir_fd: int, part: str, root: str, destination: str, owner: TaskOwner | None = None
) -> int:
    """Open (making it if missing, for ``owner``) the directory ``part`` under ``dir_fd``;
    refuse it when, symlinks resolved, it lies outside ``root``.  The check is made on the
    opened directory, so swapping a symlink in after the check changes nothing."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        fd = os.open(part, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        mode = owner.dir_mode if owner is not None else DIR_MODE
        try:
            os.mkdir(part, mode, dir_fd=dir_fd)
        except FileExistsError:  # a dangling symlink
            raise TemplateError(
                f"template {destination}: {part!r} is a symlink to nothing; "
                "refusing to write through it"
            ) from None
        fd = os.open(part, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
        os.fchmod(fd, mode)  # whatever the umask
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
    except NotADirectoryError:
        raise TemplateError(f"template {destination}: {part!r} is not a directory") from None
    real = _fd_path(fd)
    if not _inside(real, root):
        os.close(fd)
        raise TemplateError(
            f"template {destination}: {part!r} leads outside the task directory "
            f"(to {real}); refusing to write there"
        )
    return fd


def write_file(
    task_dir: Path, destination: str, content: str, owner: TaskOwner | None = None
) -> None:
    """Write ``content`` to ``task_dir/destination`` atomically (a temporary file renamed
    over it).  Directories on the way are made; a symlink among them that resolves outside
    the task directory is refused; a symlink at the final name is replaced, never followed.
    The file is ``owner``'s (the user the task runs as) with its ``file_mode`` (0600), so a
    re-render keeps both; without an owner (the agent's own user) it is 0600 and keeps the
    owner of the file it replaces."""
    root = os.path.realpath(task_dir)
    parts = [p for p in destination.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or destination.startswith("/"):
        raise TemplateError(f"template {destination}: not a path inside the task directory")
    *dirs, name = parts
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TemplateError(
            f"template {destination}: task directory {root}: {exc.strerror}"
        ) from None
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    created = False
    try:
        for part in dirs:
            nfd = _enter(fd, part, root, destination, owner)
            os.close(fd)
            fd = nfd
        ids = (owner.uid, owner.gid) if owner is not None else None
        mode = owner.file_mode if owner is not None else FILE_MODE
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise TemplateError(f"template {destination}: a directory is in the way")
            if stat.S_ISREG(st.st_mode) and ids is None:
                ids = (st.st_uid, st.st_gid)
        out = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=fd,
        )
        created = True
        try:
            data = content.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            if ids is not None and ids != (os.geteuid(), os.getegid()):
                if owner is not None:
                    os.fchown(out, *ids)  # the task's user: it must be able to read it
                else:
                    with contextlib.suppress(PermissionError):
                        os.fchown(out, *ids)
            os.fchmod(out, mode)  # whatever the umask, after the owner (chown clears bits)
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        created = False
    except OSError as exc:
        raise TemplateError(
            f"template {destination}: cannot write it: {exc.strerror or exc}"
        ) from None
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
        os.close(fd)


def read_existing(task_dir: Path, destination: str) -> str | None:
    """What a template wrote earlier (by an earlier agent process), if it is still there."""
    path = task_dir / destination
    try:
        if path.is_symlink():
            return None
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- the manager


@dataclass
class _TaskTemplates:
    task: str
    templates: list[Template] = field(default_factory=list)
    contents: dict[str, str | None] = field(default_factory=dict)
    deps: dict[tuple[str, str], Dep] = field(default_factory=dict)
    watchers: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loop: asyncio.Task[None] | None = None


class TemplateManager:
    """The templates of one allocation's tasks (see the module docstring)."""

    def __init__(self, runner: AllocRunner, client: AsyncClient) -> None:
        self.runner = runner
        self.client = client
        self._tasks: dict[str, _TaskTemplates] = {}
        self._closed = False

    def templates(self, task: str) -> list[Template]:
        spec = self.runner.machine.spec.groups[self.runner.alloc.group].tasks.get(task)
        return list(spec.templates) if spec is not None else []

    def _state(self, task: str) -> _TaskTemplates:
        state = self._tasks.get(task)
        if state is None:
            state = self._tasks[task] = _TaskTemplates(task)
        return state

    async def _render_all(
        self, task: str, templates: list[Template]
    ) -> tuple[list[tuple[Template, str]], Lookups]:
        self.runner.make_dirs()
        task_dir = self.runner.task_dir(task)
        env = self.runner.build_env(task)
        lookups = Lookups(
            self.client, self.runner.alloc.namespace, self.runner.identity_token(task)
        )
        host_files = self.runner.host.settings.template_host_files
        out = [
            (t, await render(t, task_dir, env, lookups, host_files=host_files)) for t in templates
        ]
        return out, lookups

    # ---------------------------------------------------------------- the runner's calls
    async def render_for_start(self, task: str) -> dict[str, str]:
        """Render and write the task's templates; answers what ``env: true`` ones add to
        its environment.  Raises TemplateError (recoverable) when one fails."""
        templates = self.templates(task)
        if not templates:
            return {}
        state = self._state(task)
        async with state.lock:
            self._stop_watching(state)  # started() watches again, from what this render read
            rendered, lookups = await self._render_all(task, templates)
            task_dir = self.runner.task_dir(task)
            env: dict[str, str] = {}
            for tpl, text in rendered:
                if tpl.env:
                    env.update(parse_env(text, tpl.destination))
            owner = self.runner.task_owner(task)
            for tpl, text in rendered:
                write_file(task_dir, tpl.destination, text, owner)
            state.templates = templates
            state.contents = {tpl.destination: text for tpl, text in rendered}
            state.deps = dict(lookups.deps)
        return env

    def started(self, task: str) -> None:
        """The task runs: watch what its templates read, from where they read it."""
        state = self._tasks.get(task)
        if state is None or self._closed or not state.templates:
            return
        self._watch(state, state.deps)
        self._ensure_loop(state)

    def resume(self, task: str) -> None:
        """A restarted agent re-attached to the running task: render again at once (what
        changed while no agent watched is acted on) and watch from there."""
        templates = self.templates(task)
        if not templates or self._closed:
            return
        state = self._state(task)
        task_dir = self.runner.task_dir(task)
        state.templates = templates
        state.contents = {t.destination: read_existing(task_dir, t.destination) for t in templates}
        self._ensure_loop(state)
        state.changed.set()

    def stop(self) -> None:
        """The allocation is done (or the agent detaches): stop every watch."""
        self._closed = True
        for state in self._tasks.values():
            self._stop_watching(state)
            if state.loop is not None:
                state.loop.cancel()
                state.loop = None

    # ---------------------------------------------------------------- watching
    def _stop_watching(self, state: _TaskTemplates) -> None:
        for w in state.watchers.values():
            w.cancel()
        state.watchers.clear()

    def _watch(self, state: _TaskTemplates, deps: Mapping[tuple[str, str], Dep]) -> None:
        """Watch exactly ``deps``: new ones from their read index, gone ones no more."""
        for key in list(state.watchers):
            if key not in deps:
                state.watchers.pop(key).cancel()
        loop = asyncio.get_running_loop()
        for key, dep in deps.items():
            if key not in state.watchers:
                kind, name = key
                coro = self._watch_var if kind == "var" else self._watch_service
                state.watchers[key] = loop.create_task(
                    coro(state, name, dep.index, dep.marker),
                    name=f"template-watch-{kind}-{name}",
                )

    def _ensure_loop(self, state: _TaskTemplates) -> None:
        if state.loop is None or state.loop.done():
            state.loop = asyncio.get_running_loop().create_task(
                self._loop(state), name=f"templates-{self.runner.id}-{state.task}"
            )

    async def _watch_var(self, state: _TaskTemplates, path: str, index: int, marker: Any) -> None:
        while True:
            progressed = False
            try:
                endpoint = endpoints.in_namespace(
                    endpoints.var_get(path), self.runner.alloc.namespace
                )
                result = await self.client.query(
                    endpoints.with_token(endpoint, self.runner.identity_token(state.task)),
                    index=index,
                    wait=WATCH_WAIT,
                )
                seen: Any = result.value.modify_index
                progressed = result.index > index
                index = result.index  # lower only when the server's state was reset
            except NotFound:
                seen = None  # deleted (or not there yet): poll until it is back
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("watching variable %s: %s", path, exc)
                await asyncio.sleep(POLL)
                continue
            if seen != marker:
                marker = seen
                state.changed.set()
            if not progressed:
                await asyncio.sleep(POLL)

    async def _watch_service(
        self, state: _TaskTemplates, name: str, index: int, marker: Any
    ) -> None:
        while True:
            try:
                instances, new_index = await fetch_service(
                    self.client,
                    name,
                    index=index,
                    wait=WATCH_WAIT,
                    namespace=self.runner.alloc.namespace,
                    token=self.runner.identity_token(state.task),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("watching service %s: %s", name, exc)
                await asyncio.sleep(POLL)
                continue
            if tuple(instances) != marker:
                marker = tuple(instances)
                state.changed.set()
            if new_index <= index:
                await asyncio.sleep(POLL)
            index = new_index  # lower only when the server's state was reset

    async def _loop(self, state: _TaskTemplates) -> None:
        while True:
            await state.changed.wait()
            await asyncio.sleep(SETTLE)
            state.changed.clear()
            try:
                await self._rerender(state)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "alloc %s task %s: re-rendering templates", self.runner.id, state.task
                )

    async def _rerender(self, state: _TaskTemplates) -> None:
        task = state.task
        runner = self.runner
        async with state.lock:
            track = runner.machine.tasks.get(task)
            if track is None or track.phase != Phase.RUNNING or self._closed:
                return  # a start renders them anyway; a dead task needs nothing
            try:
                rendered, lookups = await self._render_all(task, state.templates)
            except TemplateError as exc:
                log.warning(
                    "alloc %s task %s: %s (the files stay as they were)", runner.id, task, exc
                )
                if not state.watchers:  # nothing will wake us: try again later
                    asyncio.get_running_loop().call_later(POLL, state.changed.set)
                return
            task_dir = runner.task_dir(task)
            owner = runner.task_owner(task)
            changed: list[Template] = []
            for tpl, text in rendered:
                if state.contents.get(tpl.destination) != text:
                    write_file(task_dir, tpl.destination, text, owner)
                    state.contents[tpl.destination] = text
                    changed.append(tpl)
            state.deps = dict(lookups.deps)
            self._watch(state, lookups.deps)
        if changed:
            await self._act(task, changed)

    async def _act(self, task: str, changed: list[Template]) -> None:
        runner = self.runner
        restart = [t for t in changed if t.change_mode == "restart"]
        if restart:
            log.info(
                "alloc %s task %s: template %s changed: restarting",
                runner.id,
                task,
                restart[0].destination,
            )
            runner.dispatch(
                RestartRequested(
                    runner.now(),
                    task,
                    reason=f"template {restart[0].destination} changed",
                    counts=False,
                )
            )
            return
        signals: list[str] = []
        for t in changed:
            if t.change_mode == "signal" and t.change_signal and t.change_signal not in signals:
                signals.append(t.change_signal)
        handle = runner.handles.get(task)
        for sig in signals:
            if handle is None:
                break
            try:
                await runner.driver_for(task).signal(handle, sig)
                log.info("alloc %s task %s: template changed: sent %s", runner.id, task, sig)
            except Exception as exc:
                log.warning(
                    "alloc %s task %s: template changed but %s could not be sent: %s",
                    runner.id,
                    task,
                    sig,
                    exc,
                )
