"""``podium alloc exec`` in a docker task: the Engine's own exec (``docker exec``).

``exec_create`` + ``exec_start(socket=True)`` give the attached stream as a socket: raw with
a TTY, else multiplexed (8-byte frame headers: stream 1 stdout, 2 stderr, then a big-endian
length).  The SDK is blocking: one daemon thread reads the socket into the loop's queue;
writes, resizes (``exec_resize``) and the final ``exec_inspect`` (the exit code) run in the
default executor.  The command runs with what the container has (its namespaces, user,
working directory and environment), as ``docker exec`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import threading
from typing import Any

from podium.drivers.base import ExecSession
from podium.errors import DriverError

CHUNK = 32 * 1024
_STREAMS = {1: "stdout", 2: "stderr"}


class DockerExecSession(ExecSession):
    def __init__(self, client: Any, exec_id: str, sock: Any, tty: bool) -> None:
        self.tty = tty
        self._client = client
        self._exec_id = exec_id
        self._raw: socket.socket = getattr(sock, "_sock", sock)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=64)
        self._eof = False
        self._ended = asyncio.Event()
        self._closed = False
        self._code: int | None = None
        self._thread = threading.Thread(
            target=self._read_all, name=f"docker-exec-{exec_id[:12]}", daemon=True
        )
        self._thread.start()

    @classmethod
    async def start(
        cls, client: Any, container_id: str, command: list[str], tty: bool
    ) -> DockerExecSession:
        def create() -> tuple[str, Any]:
            created = client.api.exec_create(
                container_id, command, stdout=True, stderr=True, stdin=True, tty=tty
            )
            exec_id = str(created["Id"])
            sock = client.api.exec_start(exec_id, tty=tty, socket=True)
            return exec_id, sock

        try:
            exec_id, sock = await asyncio.to_thread(create)
        except Exception as exc:  # the SDK's APIError, or the engine gone
            raise DriverError(f"docker exec in container {container_id[:12]}: {exc}") from exc
        return cls(client, exec_id, sock, tty)

    # ------------------------------------------------------------------ the reader thread
    def _put(self, item: tuple[str, bytes] | None) -> None:
        """From the thread: into the queue, waiting while the client is slow."""
        if self._closed:
            return
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            try:
                future.result(timeout=1.0)
                return
            except TimeoutError:
                if self._closed:  # nobody reads any more
                    future.cancel()
                    return
            except Exception:
                return

    def _recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            data = self._raw.recv(n - len(out))
            if not data:
                return out
            out += data
        return out

    def _read_all(self) -> None:
        try:
            while True:
                if self.tty:
                    data = self._raw.recv(CHUNK)
                    if not data:
                        break
                    self._put(("stdout", data))
                    continue
                header = self._recv(8)
                if len(header) < 8:
                    break
                kind, size = header[0], struct.unpack(">I", header[4:])[0]
                payload = self._recv(size)
                if payload:
                    self._put((_STREAMS.get(kind, "stdout"), payload))
                if len(payload) < size:
                    break
        except OSError:
            pass
        finally:
            self._put(None)

    # ------------------------------------------------------------------ the session
    async def read(self) -> tuple[str, bytes] | None:
        if self._eof:
            return None
        item = await self._queue.get()
        if item is None:
            self._eof = True
            self._ended.set()
        return item

    async def write(self, data: bytes) -> None:
        if self._closed:
            return
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._raw.sendall, data)

    async def close_stdin(self) -> None:
        if self.tty:
            await self.write(b"\x04")
            return
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_WR)

    async def resize(self, height: int, width: int) -> None:
        if not self.tty:
            return
        with contextlib.suppress(Exception):
            await asyncio.to_thread(
                self._client.api.exec_resize, self._exec_id, height=height, width=width
            )

    async def _inspect(self) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self._client.api.exec_inspect, self._exec_id))

    async def wait(self) -> int:
        await self._ended.wait()  # read() drains the queue; the stream's end comes last
        for _ in range(100):  # the engine records the exit a moment after the stream ends
            info = await self._inspect()
            if not info.get("Running") and info.get("ExitCode") is not None:
                self._code = int(info["ExitCode"])
                return self._code
            await asyncio.sleep(0.05)
        raise DriverError(f"docker exec {self._exec_id[:12]}: no exit code from the engine")

    async def kill(self) -> None:
        if self._code is None:
            with contextlib.suppress(Exception):
                info = await self._inspect()
                pid = int(info.get("Pid") or 0)
                if info.get("Running") and pid > 0:
                    os.kill(pid, signal.SIGKILL)
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._raw.close()
