"""Live log records for ``podium monitor``: a handler attached only while someone listens.

``GET /v1/agent/monitor`` (a server's own records) and the agent's ``/v1/client/monitor``
(relayed by a server for ``--node-id``) stream this process's log records from the moment
they are asked, at a level, as NDJSON, until the client goes away.  Nomad's ``monitor``
does the same; an operator reaches for it when a cluster misbehaves and the logs are on
another machine.

Why it looks like this:

- **Nothing is paid while nobody listens.**  The :class:`LogHub`'s handler is on the root
  logger only while at least one :class:`Listener` exists; the last one to leave takes it
  off.
- **A slow listener never slows the process.**  Each listener has a bounded buffer
  (:data:`DEFAULT_BUFFER` lines); a record that finds it full is counted and dropped, and
  the listener is told ``dropped N lines`` before the next line it reads.  Emitting is an
  append (or, from another thread, a ``call_soon_threadsafe``), never a wait.
- **``debug`` without flooding stderr.**  A listener below the process's level lowers the
  ``podium`` logger's level while it listens, and the root's other handlers get a filter
  that keeps them at the level they had: the process's own log output does not change.
- It lives beside the packages (like :mod:`podium.eventloop`) because servers and agents
  both serve it, and the agent never imports the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
"""The levels a monitor may ask for (``log_level=``)."""
DEFAULT_BUFFER = 512
"""Lines a listener may fall behind by before lines are dropped."""
PODIUM_LOGGER = "podium"
NDJSON = "application/x-ndjson"


def parse_level(text: str) -> int:
    """``debug|info|warning|error`` (any case) as a logging level, else ValueError that
    names the choices."""
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"log_level must be one of debug, info, warning, error; not {text!r}")
    return level


def record_dict(record: logging.LogRecord) -> dict[str, Any]:
    """One record as the monitor sends it (``time`` in UTC, to the millisecond)."""
    message = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        message += "\n" + logging.Formatter().formatException(record.exc_info)
    created = record.created
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return {
        "time": f"{stamp}.{int(created * 1000) % 1000:03d}Z",
        "level": record.levelname,
        "logger": record.name,
        "message": message,
    }


class Listener:
    """One monitor's view: the records at ``level`` or above, from when it was made."""

    def __init__(self, level: int, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.level = level
        self.loop = loop
        self.size = size
        self.lines: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self._ready = asyncio.Event()

    def full(self) -> bool:
        return len(self.lines) >= self.size

    def lose(self) -> None:
        """Count a record lost (from any thread: its loop does the counting)."""
        if _on_loop(self.loop):
            self.dropped += 1
            self._ready.set()
        else:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.lose)

    def push(self, line: dict[str, Any]) -> None:
        """On the listener's loop: keep ``line``, or count it lost when the buffer is full."""
        if len(self.lines) >= self.size:
            self.dropped += 1
        else:
            self.lines.append(line)
        self._ready.set()

    def take(self) -> list[dict[str, Any]]:
        """What is buffered, a ``dropped N lines`` note first when lines were lost."""
        out: list[dict[str, Any]] = []
        if self.dropped:
            out.append(
                {
                    "time": _now(),
                    "level": "WARNING",
                    "logger": "podium.monitor",
                    "message": f"dropped {self.dropped} lines: this monitor read too slowly "
                    f"(it may fall {self.size} lines behind)",
                }
            )
            self.dropped = 0
        out.extend(self.lines)
        self.lines.clear()
        self._ready.clear()
        return out

    async def next_batch(self) -> list[dict[str, Any]]:
        """Wait for lines; what :meth:`take` gives."""
        while not self.lines and not self.dropped:
            await self._ready.wait()
            self._ready.clear()
        return self.take()


class _KeepLevel(logging.Filter):
    """Keeps a handler at the level its logger tree had before a monitor lowered it."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


class LogHub(logging.Handler):
    """The process's one source of live records (see the module's docstring)."""

    def __init__(self, root: logging.Logger | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.root = root or logging.getLogger()
        self.podium = logging.getLogger(PODIUM_LOGGER)
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self._saved_level: int | None = None
        """The ``podium`` logger's own level before a listener lowered it."""
        self._filters: list[tuple[logging.Handler, _KeepLevel]] = []

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    # ------------------------------------------------------------------ records in
    def emit(self, record: logging.LogRecord) -> None:
        listeners = self._listeners
        wanted = [li for li in listeners if record.levelno >= li.level]
        if not wanted:
            return
        if all(li.full() for li in wanted):
            # nobody has room: count the loss without building the line (the cost of a
            # listener that does not read must stay that of a counter)
            for li in wanted:
                li.lose()
            return
        try:
            line = record_dict(record)
        except Exception:  # a bad format string in someone's log call: never raise here
            self.handleError(record)
            return
        for li in wanted:
            if _on_loop(li.loop):
                li.push(line)
            else:
                # RuntimeError: that loop has closed; its listener is going away
                with contextlib.suppress(RuntimeError):
                    li.loop.call_soon_threadsafe(li.push, line)

    # ------------------------------------------------------------------ listeners
    def attach(self, level: int, size: int = DEFAULT_BUFFER) -> Listener:
        """A new listener at ``level``, on the running loop (detach it when done)."""
        listener = Listener(level, asyncio.get_running_loop(), size)
        with self._lock:
            if not self._listeners:
                self.root.addHandler(self)
            self._listeners = (*self._listeners, listener)
            self._retune()
        return listener

    def detach(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = tuple(li for li in self._listeners if li is not listener)
            if not self._listeners:
                self.root.removeHandler(self)
            self._retune()

    def _retune(self) -> None:
        """Lower the ``podium`` logger to the lowest level asked for (keeping the other
        handlers where they were), or put it back when nobody asks for less."""
        if self._saved_level is not None:
            self.podium.setLevel(self._saved_level)
            self._saved_level = None
            for handler, flt in self._filters:
                handler.removeFilter(flt)
            self._filters = []
        if not self._listeners:
            return
        lowest = min(li.level for li in self._listeners)
        current = self.podium.getEffectiveLevel()
        if lowest >= current:
            return
        self._saved_level = self.podium.level
        for handler in self.root.handlers:
            if handler is self:
                continue
            flt = _KeepLevel(max(current, handler.level))
            handler.addFilter(flt)
            self._filters.append((handler, flt))
        self.podium.setLevel(lowest)

    def response(
        self, level: int, what: str, size: int = DEFAULT_BUFFER, duration: float | None = None
    ) -> MonitorResponse:
        """The HTTP answer of a monitor: attached now (so a client that has the answer's
        headers misses nothing logged after), detached however the stream ends; with
        ``duration`` (seconds), the stream ends by itself after that long."""
        listener = self.attach(level, size)
        return MonitorResponse(self, listener, what, duration)


class MonitorResponse(StreamingResponse):
    """NDJSON: a first line saying what is monitored, then the listener's records."""

    def __init__(
        self, hub: LogHub, listener: Listener, what: str, duration: float | None = None
    ) -> None:
        super().__init__(_lines(listener, what, duration), media_type=NDJSON)
        self._hub = hub
        self._listener = listener

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.detach(self._listener)


async def _lines(listener: Listener, what: str, duration: float | None) -> AsyncIterator[bytes]:
    first = {
        "time": _now(),
        "level": "INFO",
        "logger": "podium.monitor",
        "message": f"monitoring {what} at level {logging.getLevelName(listener.level).lower()}",
    }
    yield json.dumps(first).encode() + b"\n"
    loop = asyncio.get_running_loop()
    end = None if duration is None else loop.time() + duration
    while True:
        if end is None:
            batch = await listener.next_batch()
        else:
            try:
                batch = await asyncio.wait_for(listener.next_batch(), max(0.0, end - loop.time()))
            except TimeoutError:
                return
        yield b"".join(json.dumps(line).encode() + b"\n" for line in batch)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_hub: LogHub | None = None


def hub() -> LogHub:
    """The process's hub (made on first use)."""
    global _hub
    if _hub is None:
        _hub = LogHub()
    return _hub
