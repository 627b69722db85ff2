"""A command the agent runs in a task's context for ``podium alloc exec``, as a child process.

``raw_exec`` runs it as the task runs (directory, environment); ``exec`` wraps it in
``nsenter``/``setpriv`` so that it joins the task's cgroup, pid and mount namespaces and root
as the task's user (:meth:`podium.drivers.exec.ExecDriver.exec`).  Either way the child is
spawned here without a ``preexec_fn`` (the agent has threads: docker's followers), so:

- with a TTY, ``setsid --ctty`` makes it a session leader whose controlling terminal is the
  pty the agent holds the master of (job control, ^C and SIGWINCH work as in a terminal);
- without, it starts a session of its own on three pipes (stdout and stderr apart).

Either way its pid is its process group's id, so a client that goes away ends the whole
group.  Output is read with ``add_reader`` on non-blocking fds into a bounded queue (a reader
pauses while the client is slow: the agent buffers at most ``QUEUE`` chunks).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import termios
from typing import Any

from podium.drivers.base import ExecSession
from podium.errors import DriverError

CHUNK = 32 * 1024
QUEUE = 64
"""Output chunks held for a slow client before the readers pause."""
DRAIN_GRACE = 1.0
"""Seconds output is still read after the command exited (a background child may hold
the pty open for ever: the session ends anyway)."""
SETSID = shutil.which("setsid") or "/usr/bin/setsid"
SH = "/bin/sh"
_JOIN = 'while [ "$1" != -- ]; do echo "$$" > "$1" || exit 126; shift; done; shift; exec "$@"'


def cgroup_join(dirs: list[str], argv: list[str]) -> list[str]:
    """``argv`` run from a shell that first moves itself into the task's cgroups (so the
    command is held to the task's limits and counted in its usage)."""
    if not dirs:
        return argv
    procs = [os.path.join(d, "cgroup.procs") for d in dirs]
    return [SH, "-c", _JOIN, "podium-exec", *procs, "--", *argv]


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ProcessExecSession(ExecSession):
    def __init__(
        self, popen: subprocess.Popen[bytes], tty: bool, stdin: int, outputs: dict[int, str]
    ) -> None:
        self.tty = tty
        self._popen = popen
        self._stdin: int | None = stdin
        self._outputs = dict(outputs)  # fd -> stream, while open
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._paused = False
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = self._loop.create_future()
        self._grace: asyncio.TimerHandle | None = None
        for fd in self._outputs:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._readable, fd)
        os.set_blocking(stdin, False)
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(popen.pid)
            self._loop.add_reader(self._pidfd, self._reap)
        except OSError:
            self._loop.call_later(0.1, self._poll)

    # ------------------------------------------------------------------ spawning
    @classmethod
    def spawn(
        cls,
        argv: list[str],
        *,
        cwd: str,
        env: dict[str, str],
        tty: bool,
        session_inside: bool = False,
    ) -> ProcessExecSession:
        """Start ``argv``; DriverError (the client's message) when it cannot start.

        ``session_inside``: ``argv`` makes the terminal's session itself (``setsid
        --ctty`` within a pid namespace, where the shell's job control must find its
        process group): this side only starts a session without a terminal to hold it."""
        if tty:
            master, slave = os.openpty()
            try:
                popen = subprocess.Popen(
                    argv if session_inside else [SETSID, "--ctty", *argv],
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    cwd=cwd,
                    env=env,
                    close_fds=True,
                    start_new_session=session_inside,
                )
            except OSError as exc:
                os.close(master)
                raise DriverError(f"cannot run {argv[-1]!r}: {exc}") from exc
            finally:
                os.close(slave)
            return cls(popen, True, master, {master: "stdout"})
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            popen = subprocess.Popen(
                argv,
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise DriverError(f"cannot run {argv[0]!r}: {exc}") from exc
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        return cls(popen, False, in_w, {out_r: "stdout", err_r: "stderr"})

    # ------------------------------------------------------------------ output
    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose other side is all closed (or the fd is gone)
            data = b""
        if not data:
            self._close_output(fd)
            return
        self._queue.put_nowait((self._outputs[fd], data))
        if self._queue.qsize() >= QUEUE and not self._paused:
            self._paused = True
            for f in self._outputs:
                self._loop.remove_reader(f)
        self._wake.set()

    def _close_output(self, fd: int) -> None:
        if fd in self._outputs:
            self._loop.remove_reader(fd)
            del self._outputs[fd]
            if fd == self._stdin:  # the pty's master: one fd both ways
                self._stdin = None
            os.close(fd)
        self._wake.set()

    async def read(self) -> tuple[str, bytes] | None:
        while True:
            if not self._queue.empty():
                item = self._queue.get_nowait()
                if self._paused and self._queue.qsize() < QUEUE // 2:
                    self._paused = False
                    for f in self._outputs:
                        self._loop.add_reader(f, self._readable, f)
                return item
            if not self._outputs:
                return None
            self._wake.clear()
            await self._wake.wait()

    # ------------------------------------------------------------------ input
    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._stdin is not None and not self._exit.done():
            fd = self._stdin
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                ready: asyncio.Future[None] = self._loop.create_future()
                self._loop.add_writer(fd, _set, ready)
                try:
                    waits: set[asyncio.Future[Any]] = {ready, self._exit}
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if self._stdin == fd or fd in self._outputs:
                        self._loop.remove_writer(fd)
                continue
            except OSError:  # EPIPE: the command closed its stdin
                return
            view = view[n:]

    async def close_stdin(self) -> None:
        if self._stdin is None:
            return
        if self.tty:
            await self.write(b"\x04")  # the terminal's EOF (VEOF) at the start of a line
            return
        fd, self._stdin = self._stdin, None
        os.close(fd)

    async def resize(self, height: int, width: int) -> None:
        if self.tty and self._stdin is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(
                    self._stdin, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0)
                )

    # ------------------------------------------------------------------ the end
    def _reap(self) -> None:
        code = self._popen.poll()
        if code is None:
            return
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._exited(code)

    def _poll(self) -> None:
        code = self._popen.poll()
        if code is None:
            self._loop.call_later(0.1, self._poll)
        else:
            self._exited(code)

    def _exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(128 - code if code < 0 else code)
        self._grace = self._loop.call_later(DRAIN_GRACE, self._give_up_output)

    def _give_up_output(self) -> None:
        for fd in list(self._outputs):
            self._readable(fd)  # what is there now
            self._close_output(fd)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    async def kill(self) -> None:
        if not self._exit.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._popen.kill()
        if self._stdin is not None and self._stdin not in self._outputs:
            fd, self._stdin = self._stdin, None
            os.close(fd)
        if self._exit.done():
            for fd in list(self._outputs):
                self._close_output(fd)
            if self._grace is not None:
                self._grace.cancel()
