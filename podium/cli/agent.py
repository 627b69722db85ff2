"""``podium agent``: run a server and/or a client agent in this process.

The CLI only gathers options; :mod:`podium.runtime` composes the server and
the agent (the CLI must not import them, see the import-linter contracts), so
it is imported only when the command runs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from enum import StrEnum
from typing import Annotated

import typer

from podium.cli import common

DEFAULT_HTTP_ADDR = "127.0.0.1:7634"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _split_servers(values: list[str] | None) -> list[str]:
    """``--servers a:1,b:2`` and ``--servers a:1 --servers b:2`` mean the same."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def agent(
    dev: Annotated[
        bool,
        typer.Option(
            "--dev", help="Server and client in one process, state in a temporary directory."
        ),
    ] = False,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Where state and allocation dirs live.")
    ] = None,
    http_addr: Annotated[
        str, typer.Option("--http-addr", help="HOST:PORT the HTTP API listens on.")
    ] = DEFAULT_HTTP_ADDR,
    servers: Annotated[
        list[str] | None,
        typer.Option(
            "--servers",
            help="Servers a client agent joins (HOST:PORT; repeat or separate with commas).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="This node's name (default: the hostname).")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log verbosity.")] = (
        LogLevel.INFO
    ),
    server: Annotated[
        bool, typer.Option("--server", help="Also run a server in this process (implied by --dev).")
    ] = False,
    client: Annotated[
        bool,
        typer.Option("--client/--no-client", help="Run a client (a node that runs tasks)."),
    ] = True,
    raw_exec: Annotated[
        bool | None,
        typer.Option(
            "--raw-exec/--no-raw-exec",
            help="Offer the raw_exec driver (unisolated; default: only with --dev).",
        ),
    ] = None,
) -> None:
    """Run a Podium agent.

    --dev runs a server and a client in one process with throwaway state: a
    cluster of one machine.  Otherwise give --data-dir, and --server to run a
    server, or --servers to join one as a client.
    """
    with common.handle_errors():
        server_list = _split_servers(servers)
        if not dev and not data_dir:
            common.fail("give --data-dir (or --dev for a throwaway one-machine cluster)")
        try:
            from podium.runtime import (  # type: ignore[import-not-found, unused-ignore]
                AgentConfig,
                run_agent,
            )
        except ImportError as exc:
            common.fail(f"this build of podium cannot run an agent ({exc})")
        config = AgentConfig(
            dev=dev,
            data_dir=data_dir,
            http_addr=http_addr,
            servers=server_list,
            name=name,
            log_level=log_level.value,
        )
        # The roles only when asked for, so their defaults stay the runtime's.
        if server:
            config.server = True
        if not client:
            config.client = False
        if raw_exec is not None:
            config.raw_exec = raw_exec
        try:
            outcome: object = run_agent(config)
            if inspect.isawaitable(outcome):  # tolerate a coroutine entry point
                outcome = asyncio.run(_await(outcome))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
    if isinstance(outcome, int) and outcome:
        raise typer.Exit(outcome)


async def _await(awaitable: Awaitable[object]) -> object:
    return await awaitable
