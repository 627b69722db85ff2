"""``podium alloc exec <id> [task] -- cmd ...``: a command in a running task, interactive.

Like ``docker exec``: ``-i`` (on by default, as Nomad's) sends this terminal's stdin,
``-t`` gives the command a terminal (by default when stdin is one): this terminal goes raw,
keys (^C too) reach the command, and a resize here resizes it (SIGWINCH).  Without a TTY the
command's stdout and stderr arrive apart and go to ours.  The command's exit code is this
command's (a refusal or an unreachable server: 1, as every command).

``--`` separates the command from ``[task]``; without it, everything after the allocation
is the command and the task is the allocation's only one.  The session is a WebSocket to
the server (podium.client.execws), which relays it to the task's agent.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty as ttymod
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from podium.cli import common
from podium.cli.common import AddressOpt
from podium.client import Client
from podium.client.execws import ExecSession

COMMAND_KEY = "podium.exec.command"


class ExecCommand(TyperCommand):
    """Keeps what follows ``--`` as the command (click would drop the ``--`` itself, and
    with it the line between ``[task]`` and the command)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta[COMMAND_KEY] = args[i + 1 :]
            args = args[:i]
            ctx.allow_interspersed_args = True  # options anywhere before --
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    """Add ``exec`` to ``podium alloc`` (podium/cli/alloc.py calls this)."""
    app.command(
        "exec",
        cls=ExecCommand,
        context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    )(exec_command)


def exec_command(
    ctx: typer.Context,
    alloc_id: Annotated[
        str, typer.Argument(metavar="ALLOC_ID", help="An allocation id or unique prefix.")
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[TASK] -- COMMAND...",
            help="The task (before --; may be left out when the group has one), then the command.",
        ),
    ] = None,
    stdin: Annotated[
        bool, typer.Option("--stdin/--no-stdin", "-i", help="Send this stdin to the command.")
    ] = True,
    tty: Annotated[
        bool | None,
        typer.Option(
            "--tty/--no-tty", "-t", help="Give the command a terminal (default: if stdin is one)."
        ),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
) -> None:
    """Run a command in a running task (its namespaces, files, user, environment)."""
    before = list(args or [])
    if COMMAND_KEY in ctx.meta:
        command = list(ctx.meta[COMMAND_KEY])
        if len(before) > 1:
            common.usage(f"only one task goes before --, not {len(before)}: {' '.join(before)}")
        task = before[0] if before else None
    else:
        command, task = before, None
    if not command:
        common.usage("name the command to run: podium alloc exec ALLOC_ID [TASK] -- COMMAND...")
    use_tty = _stdin_is_terminal() if tty is None else tty
    with common.handle_errors(), common.make_client(address) as client:
        code = run(client, alloc_id, task, command, use_tty, stdin)
    raise typer.Exit(code)


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _terminal_size() -> tuple[int, int] | None:
    for stream in (sys.stdin, sys.stdout):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            size = os.get_terminal_size(stream.fileno())
            return size.lines, size.columns
    return None


@contextlib.contextmanager
def _raw(fd: int | None, on: bool) -> Iterator[None]:
    """This terminal in raw mode for the session (keys go to the command), then back."""
    if not on or fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        ttymod.setraw(fd, termios.TCSANOW)  # keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Input:
    """A thread that sends stdin (and the terminal's size on SIGWINCH) to the session,
    until stdin ends or :meth:`stop`."""

    def __init__(self, session: ExecSession, send_stdin: bool, tty: bool) -> None:
        self.session = session
        self.send_stdin = send_stdin
        self.tty = tty
        self.wake_r, self.wake_w = os.pipe()
        self.winch = False
        self.thread = threading.Thread(target=self._run, name="exec-stdin", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"x")
        self.thread.join(timeout=2)
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def resized(self) -> None:
        self.winch = True
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"w")

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the session closed under us: we are done
            self._loop()

    def _loop(self) -> None:
        fd = _stdin_fd() if self.send_stdin else None
        if not self.send_stdin:
            self.session.close_stdin()
        elif fd is None:  # no file behind stdin (a test's runner): what it holds, then EOF
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else b""
            if data:
                self.session.send_stdin(data)
            self.session.close_stdin()
            fd = None
        watched = [self.wake_r] + ([fd] if fd is not None else [])
        while True:
            ready, _, _ = select.select(watched, [], [])
            if self.wake_r in ready:
                token = os.read(self.wake_r, 64)
                if self.winch:
                    self.winch = False
                    size = _terminal_size()
                    if size is not None:
                        self.session.resize(*size)
                if b"x" in token:
                    return
            if fd is not None and fd in ready:
                data = os.read(fd, 32 * 1024)
                if not data:
                    self.session.close_stdin()
                    watched.remove(fd)
                    fd = None
                    continue
                self.session.send_stdin(data)


def run(
    client: Client, alloc_id: str, task: str | None, command: list[str], tty: bool, stdin: bool
) -> int:
    """The session, this terminal wired to it; the command's exit code."""
    session = client.exec_session(alloc_id, command, task, tty=tty)
    feeder = _Input(session, stdin, tty)
    previous: Any = None
    with session, _raw(_stdin_fd(), tty):
        if tty:
            size = _terminal_size()
            if size is not None:
                session.resize(*size)
            with contextlib.suppress(ValueError):  # not the main thread
                previous = signal.signal(signal.SIGWINCH, lambda *_: feeder.resized())
        feeder.start()
        try:
            out, err = sys.stdout.buffer, sys.stderr.buffer
            for chunk in session:
                target = err if chunk.stream == "stderr" else out
                target.write(chunk.data)
                target.flush()
        finally:
            feeder.stop()
            if previous is not None:
                signal.signal(signal.SIGWINCH, previous)
    return session.exit_code if session.exit_code is not None else 1
