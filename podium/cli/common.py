"""What every command shares: options, the client factory, output and error handling.

Commands get their client from :func:`make_client`, which calls the
module-level :data:`client_factory`; tests replace that factory with one that
builds a :class:`podium.Client` over an ``httpx.MockTransport``, so the whole
CLI runs against a fake server without sockets.  The same goes for
:data:`poll_interval` and :data:`sleep`, so watch loops run instantly in tests.

Output follows two rules (docs/cli.md):

- ``-o json`` / ``-o yaml`` print the API's answer as is on stdout, and an
  error as one document on stderr: ``{"error": {"kind", "message", "status",
  "exit_code", ...}}`` (:func:`error_document`).
- Without a terminal on stdout, nothing is wrapped or cut to fit 80 columns
  (:func:`console` is as wide as the longest line) and nothing repaints:
  watch loops print one plain line per change (:func:`interactive`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from typing import IO, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from podium.cli.render import PlainConsole
from podium.client import DEFAULT_ADDRESS, Client, Endpoint, QueryResult, ServerUnreachable
from podium.errors import (
    AmbiguousPrefix,
    APIError,
    Conflict,
    NotFound,
    PodiumError,
    SpecError,
    SpecIssue,
)

T = TypeVar("T")

# Exit statuses, the same for every command (``podium --help`` lists them).
EXIT_OK = 0
EXIT_ERROR = 1
"""Anything that went wrong: an error answer, nothing found, a bad file, a failed deployment."""
EXIT_USAGE = 2
"""The command line itself is wrong (Click's status for usage errors)."""
EXIT_PLACEMENT = 3
"""``job run``/``revert``/``compose up``: the scheduler could not place every instance."""
EXIT_TIMEOUT = 4
"""A wait (``--timeout``) ran out; what was started goes on without us."""
EXIT_INTERRUPTED = 130
EXIT_PLAN_ERROR = 255
"""``job plan`` only, as Nomad's: 0 no changes, 1 changes, 255 an error."""

EXIT_CODES_HELP = """Exit status:
  0    success
  1    error: the server refused, nothing was found, a file is invalid,
       an allocation or a deployment failed
  2    usage error: the command line is wrong
  3    job run, job revert, compose up: could not place everything
  4    a --timeout ran out while waiting (what was started goes on)
  130  interrupted
  job plan: 0 no changes, 1 changes, 255 error.
With -o json or -o yaml, an error is also one document on stderr:
  {"error": {"kind": ..., "message": ..., "status": ..., "exit_code": ...}}"""


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"

    @property
    def structured(self) -> bool:
        """For programs: the API's answer on stdout, errors as a document on stderr."""
        return self is not Output.TABLE


AddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="PODIUM_ADDR",
        help="URL of the Podium server's HTTP API.",
        show_default=True,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="PODIUM_TOKEN",
        help="ACL token (its secret) for servers that run with --acl.",
        show_default=False,
    ),
]
root_token: str | None = None
"""``podium --token T <command>``: the token of every command that takes none itself."""
OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        help="table for people; json or yaml for programs (the API's answer as is).",
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

PLAIN_WIDTH = 100_000
"""The console width without a terminal: wide enough that no line is ever wrapped."""

_output: ContextVar[Output] = ContextVar("podium_cli_output", default=Output.TABLE)
"""The running command's ``-o``, so :func:`fail` anywhere below it answers in kind."""


def make_client(address: str, token: str | None = None) -> Client:
    """The command's client; ``token``: its ``--token`` (else the root's ``--token``, else
    ``PODIUM_TOKEN``, which the client reads itself); the namespace: its ``-n``."""
    client = client_factory(address)
    chosen = token or root_token
    if chosen:
        client.set_token(chosen)
    namespace = _namespace.get()
    if namespace is not None:
        client.namespace = namespace
    return client


# -- -n/--namespace ----------------------------------------------------------------------

_namespace: ContextVar[str | None] = ContextVar("podium_cli_namespace", default=None)
"""The running command's ``-n``/``--namespace`` (or ``$PODIUM_NAMESPACE``), which
:func:`make_client` hands to the client."""

NAMESPACED_GROUPS = (
    "job",
    "alloc",
    "eval",
    "event",
    "deployment",
    "var",
    "service",
    "compose",
)
"""The command groups whose commands (those that take ``--address``) get ``-n``."""


def _take_namespace(value: str | None) -> str | None:
    if value is not None and value != "*":
        from podium.models.namespace import check_namespace

        try:
            check_namespace(value, "-n/--namespace")
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    _namespace.set(value or None)
    return value


_NAMESPACE_HELP = "The namespace to act in (default: default; '*' on listings: every one)."


def _carry_short(
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            envvar="PODIUM_NAMESPACE",
            expose_value=False,
            callback=_take_namespace,
            help=_NAMESPACE_HELP,
        ),
    ] = None,
) -> None:
    """Carries ``-n/--namespace`` for :func:`_namespace_param`."""


def _carry_long(
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            envvar="PODIUM_NAMESPACE",
            expose_value=False,
            callback=_take_namespace,
            help=_NAMESPACE_HELP,
        ),
    ] = None,
) -> None:
    """Carries ``--namespace`` alone for :func:`_namespace_param`."""


def _namespace_param(short: bool) -> Any:
    """The click parameter Typer builds for ``-n/--namespace`` (built through a command of
    its own, so it is exactly what Typer would attach)."""
    carrier = typer.Typer()
    carrier.command()(_carry_short if short else _carry_long)
    return typer.main.get_command(carrier).params[0]


def add_namespace_option(command: Any) -> Any:
    """Give every command under ``command`` that takes ``--address`` the option
    ``-n/--namespace`` (``$PODIUM_NAMESPACE``), once, here, rather than in each command's
    signature: the commands read it through :func:`make_client`.  Where ``-n`` is taken
    already (``alloc logs -n``, the tail, as in Nomad) only ``--namespace`` is added."""
    commands = getattr(command, "commands", None)
    if commands is not None:
        for sub in commands.values():
            add_namespace_option(sub)
        return command
    names = {n for p in command.params for n in getattr(p, "opts", ())}
    if "--address" not in names or "--namespace" in names:
        return command
    command.params.append(_namespace_param(short="-n" not in names))
    return command


def interactive() -> bool:
    """Whether stdout is a terminal a person watches (live views may repaint it).

    ``TTY_INTERACTIVE=0/1`` overrides the check, as it does for rich.  A forced
    colour (``FORCE_COLOR``) does not make a log file a terminal.
    """
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return sys.stdout.isatty()
    except (ValueError, AttributeError):  # closed, or replaced by something without isatty
        return False


class _Plain:
    """A stdout for the wide console: trailing padding is cut from every line, so a table
    drawn 100,000 columns wide reads (and greps) like one drawn to fit."""

    _PADDING = re.compile(r"[ \t]+(?=\n)")

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.encoding = getattr(stream, "encoding", "utf-8") or "utf-8"

    def write(self, text: str) -> int:
        self._stream.write(self._PADDING.sub("", text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False


def console() -> Console:
    """A console on stdout, made per command so it sees the terminal (and $COLUMNS) of now.

    Emoji codes are off everywhere (a ``:100:`` in a file name or a message stays
    as written).  Without a terminal the console is :data:`PLAIN_WIDTH` wide, so
    tables keep their full cells instead of wrapping at 80 columns.
    """
    if interactive():  # a terminal, or TTY_INTERACTIVE=1: live views repaint
        return Console(highlight=False, soft_wrap=False, emoji=False, force_terminal=True)
    return PlainConsole(
        file=_Plain(sys.stdout),  # type: ignore[arg-type]  # a TextIO in all that rich uses
        highlight=False,
        soft_wrap=False,
        emoji=False,
        width=PLAIN_WIDTH,
    )


def err_console() -> Console:
    """A console on stderr for messages: never wrapped by rich (soft_wrap), so a long
    warning or error stays one line in a log; a terminal wraps it as it shows it."""
    return Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


def dump(raw: Any, output: Output) -> str:
    """An answer as ``output`` (json or yaml) text, ending in a newline."""
    if output == Output.YAML:
        import yaml  # only -o yaml pays for it

        return str(yaml.safe_dump(raw, sort_keys=False, default_flow_style=False, width=2**31))
    return json.dumps(raw, indent=2, sort_keys=False) + "\n"


def print_json(raw: Any) -> None:
    """Print an API answer as JSON, untouched by rich (no wrapping, no markup)."""
    typer.echo(json.dumps(raw, indent=2, sort_keys=False))


def print_data(raw: Any, output: Output) -> None:
    """Print an API answer in the ``-o`` format asked for (json or yaml)."""
    sys.stdout.write(dump(raw, Output.YAML if output == Output.YAML else Output.JSON))
    sys.stdout.flush()


@contextmanager
def output_format(output: Output) -> Iterator[None]:
    """Within this block, errors are reported as ``output`` asks (a document on stderr)."""
    token = _output.set(output)
    try:
        yield
    finally:
        _output.reset(token)


def error_document(
    kind: str,
    message: str,
    code: int,
    *,
    status: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The one shape of an error for programs (docs/cli.md, "Errors as data").

    ``kind`` is a stable word (usage, file, invalid_spec, not_found, ambiguous,
    conflict, unreachable, api, placement, failed, timeout, interrupted, error);
    ``status`` the HTTP status when the server answered, else null.
    """
    body: dict[str, Any] = {"kind": kind, "message": message, "status": status, "exit_code": code}
    body.update(extra)
    return {"error": body}


def emit_error(document: dict[str, Any], output: Output) -> None:
    """Write an error document on stderr in the ``-o`` format."""
    sys.stderr.write(dump(document, Output.YAML if output == Output.YAML else Output.JSON))
    sys.stderr.flush()


def report(
    message: str,
    code: int = EXIT_ERROR,
    *,
    kind: str = "error",
    status: int | None = None,
    **extra: Any,
) -> None:
    """Say what went wrong on stderr: one red line, or a document with ``-o json|yaml``."""
    output = _output.get()
    if output.structured:
        emit_error(error_document(kind, message, code, status=status, **extra), output)
    else:
        err_console().print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)


def fail(
    message: str,
    code: int = EXIT_ERROR,
    *,
    kind: str = "error",
    status: int | None = None,
    **extra: Any,
) -> NoReturn:
    """Report an error (see :func:`report`), then exit with ``code``."""
    report(message, code, kind=kind, status=status, **extra)
    raise typer.Exit(code)


def usage(message: str) -> NoReturn:
    """The command line is wrong (a value no option accepts): say so, exit 2."""
    fail(message, EXIT_USAGE, kind="usage")


def issue_dict(issue: SpecIssue, source: str | None) -> dict[str, Any]:
    return {
        "file": source,
        "line": issue.line,
        "column": issue.column,
        "path": issue.path,
        "message": issue.message,
        "hint": issue.hint,
        "text": issue.render(source),
    }


def render_spec_error(
    err: SpecError, source: str | None = None, what: str = "job specification"
) -> None:
    """Every issue as ``file:line:col: path: message (hint)``, one per line.

    With ``-o json|yaml`` the same issues are a list in the error document.
    """
    src = source or err.source
    issues = err.issues
    noun = "issue" if len(issues) == 1 else "issues"
    headline = f"invalid {what} ({len(issues)} {noun})"
    output = _output.get()
    if output.structured:
        doc = error_document(
            "invalid_spec",
            headline,
            EXIT_ERROR,
            issues=[issue_dict(i, src) for i in issues],
        )
        emit_error(doc, output)
        return
    out = err_console()
    out.print(f"[bold red]Error:[/] {headline}", soft_wrap=True)
    for issue in issues:
        out.print(escape(issue.render(src)), soft_wrap=True, style="red")


@contextmanager
def handle_errors(source: str | None = None, output: Output | None = None) -> Iterator[None]:
    """Turn Podium's exceptions into a readable message and an exit status.

    ``source`` names the job file a SpecError refers to, so a spec rejected by
    the server points at the file just like one rejected locally.  ``output``
    is the command's ``-o``: with json or yaml the error is a document on
    stderr (:func:`error_document`); None keeps the format of an enclosing block.
    """
    token = _output.set(output) if output is not None else None
    try:
        yield
    except SpecError as exc:
        render_spec_error(exc, source)
        raise typer.Exit(EXIT_ERROR) from None
    except ServerUnreachable as exc:
        fail(str(exc), kind="unreachable", address=exc.address)
    except NotFound as exc:
        fail(str(exc) or "not found", kind="not_found", status=404)
    except AmbiguousPrefix as exc:
        fail(str(exc), kind="ambiguous", status=400)
    except Conflict as exc:
        fail(str(exc), kind="conflict", status=409)
    except APIError as exc:
        fail(f"{exc} (HTTP {exc.status})", kind="api", status=exc.status)
    except TimedOut as exc:
        fail(str(exc) or "timed out", EXIT_TIMEOUT, kind="timeout")
    except PodiumError as exc:
        fail(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED, kind="interrupted")
    finally:
        if token is not None:
            _output.reset(token)


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


class ChangeLog:
    """Prints keyed lines, each only when its text differs from what was printed for it.

    What a watch loop shows without a terminal: one line per change, however
    often the server answers (a drain once printed the same line 676 times).
    Lines are plain text written straight to the console's file (rich would
    spend ~70 us laying out each), flushed once per :meth:`update`, so a log
    followed with ``tail -f`` gets them as they happen.
    """

    def __init__(self, con: Console) -> None:
        self.file = con.file
        self._last: dict[str, str] = {}

    def update(self, lines: Iterable[tuple[str, str]]) -> int:
        """Print the lines whose key last showed something else; how many were printed."""
        printed = 0
        last = self._last
        for key, line in lines:
            if last.get(key) != line:
                last[key] = line
                self.file.write(line + "\n")
                printed += 1
        if printed:
            self.file.flush()
        return printed


def requested_output(args: list[str]) -> Output:
    """The ``-o``/``--output`` a raw command line asks for (table when none, or unreadable).

    Used where Click has not parsed the line (a usage error), so that even a
    mistyped command answers ``-o json`` with a document.
    """
    found = Output.TABLE
    for i, arg in enumerate(args):
        if arg == "--":
            break
        value: str | None = None
        if arg in ("-o", "--output"):
            value = args[i + 1] if i + 1 < len(args) else None
        elif arg.startswith("--output="):
            value = arg.partition("=")[2]
        elif arg.startswith("-o") and not arg.startswith("--"):
            value = arg[2:].lstrip("=")
        if value is not None:
            try:
                found = Output(value)
            except ValueError:
                continue
    return found


def echo_raw(text: str) -> None:
    """Write log text exactly as it came, without a newline of our own."""
    sys.stdout.write(text)
    sys.stdout.flush()
