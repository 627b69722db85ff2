"""What every command shares: options, the client factory, output and error handling.

Commands get their client from :func:`make_client`, which calls the
module-level :data:`client_factory`; tests replace that factory with one that
builds a :class:`podium.Client` over an ``httpx.MockTransport``, so the whole
CLI runs against a fake server without sockets.  The same goes for
:data:`poll_interval` and :data:`sleep`, so watch loops run instantly in tests.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from podium.client import DEFAULT_ADDRESS, Client, Endpoint, QueryResult, ServerUnreachable
from podium.errors import APIError, PodiumError, SpecError

T = TypeVar("T")


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


AddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="PODIUM_ADDR",
        help="URL of the Podium server's HTTP API.",
        show_default=True,
    ),
]
OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", help="table for people, json for programs (the API's JSON as is)."
    ),
]
DEFAULT_ADDR = DEFAULT_ADDRESS


def _default_factory(address: str) -> Client:
    return Client(address)


client_factory: Callable[[str], Client] = _default_factory
"""Builds the client every command uses; tests swap it for a MockTransport-backed one."""

poll_interval: float = 0.25
"""Pause between polls when the server answers a blocking query without waiting."""

sleep: Callable[[float], None] = time.sleep
"""How watch loops pause; replaceable so tests never really sleep."""

BLOCKING_WAIT = 5.0
"""Longest single blocking query in a watch loop, so the loop can check its deadline."""


def make_client(address: str) -> Client:
    return client_factory(address)


def console() -> Console:
    """A console on stdout, made per command so it sees the terminal (and $COLUMNS) of now."""
    return Console(highlight=False, soft_wrap=False, emoji=False)  # ":100:" stays as written


def err_console() -> Console:
    return Console(stderr=True, highlight=False, emoji=False)


def print_json(raw: Any) -> None:
    """Print an API answer as JSON, untouched by rich (no wrapping, no markup)."""
    typer.echo(json.dumps(raw, indent=2, sort_keys=False))


def fail(message: str, code: int = 1) -> NoReturn:
    """One red line on stderr, then exit with ``code``."""
    err_console().print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def render_spec_error(err: SpecError, source: str | None = None) -> None:
    """Every issue as ``file:line:col: path: message (hint)``, one per line."""
    out = err_console()
    src = source or err.source
    issues = err.issues
    noun = "issue" if len(issues) == 1 else "issues"
    out.print(
        f"[bold red]Error:[/] invalid job specification ({len(issues)} {noun})", soft_wrap=True
    )
    for issue in issues:
        out.print(escape(issue.render(src)), soft_wrap=True, style="red")


@contextmanager
def handle_errors(source: str | None = None) -> Iterator[None]:
    """Turn Podium's exceptions into a readable message and exit status 1.

    ``source`` names the job file a SpecError refers to, so a spec rejected by
    the server points at the file just like one rejected locally.
    """
    try:
        yield
    except SpecError as exc:
        render_spec_error(exc, source)
        raise typer.Exit(1) from None
    except ServerUnreachable as exc:
        fail(str(exc))
    except APIError as exc:
        fail(f"{exc} (HTTP {exc.status})")
    except PodiumError as exc:
        fail(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        err_console().print("interrupted")
        raise typer.Exit(130) from None


class Deadline:
    """A point in time a watch loop gives up at."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    def passed(self) -> bool:
        return self.remaining() <= 0.0


class TimedOut(Exception):
    """A watch loop's deadline passed."""


def watch(client: Client, endpoint: Endpoint[T], deadline: Deadline) -> Iterator[QueryResult[T]]:
    """Yield the endpoint's answer now and after every change, until the deadline.

    Uses blocking queries, so a change shows up as soon as the server commits
    it; when the server answers without its index moving (it does not block
    on this endpoint, or the wait ran out) the loop pauses ``poll_interval``
    so it never spins.
    """
    result = client.query(endpoint)
    yield result
    while True:
        if deadline.passed():
            raise TimedOut()
        wait = max(0.01, min(BLOCKING_WAIT, deadline.remaining()))
        previous = result.index
        result = client.query(endpoint, index=previous, wait=wait)
        if result.index <= previous:
            sleep(min(poll_interval, deadline.remaining()))
        yield result


def echo_raw(text: str) -> None:
    """Write log text exactly as it came, without a newline of our own."""
    sys.stdout.write(text)
    sys.stdout.flush()
