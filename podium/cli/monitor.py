"""``podium monitor``: a server's (or an agent's) log records, live, at a level.

As Nomad's ``monitor``: it streams from the moment it is run until interrupted (Ctrl-C),
each record as ``TIME LEVEL LOGGER: MESSAGE`` (or the API's JSON object a line with
``--json``).  A monitor that reads too slowly loses lines rather than slowing the server,
and is told so (``dropped N lines``).  Needs ``operator: read`` on a server with ACLs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from podium.cli import common
from podium.cli.common import AddressOpt


class Level(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def format_record(record: dict[str, Any]) -> str:
    """``2026-12-05T18:17:40.061+00:00 INFO  podium.server.jobs: message``."""
    return (
        f"{record.get('time', '')} {record.get('level', '')!s:<5} "
        f"{record.get('logger', '')}: {record.get('message', '')}"
    )


def monitor(
    log_level: Annotated[
        Level, typer.Option("--log-level", "-l", help="The lowest level shown.")
    ] = Level.INFO,
    node_id: Annotated[
        str | None,
        typer.Option("--node-id", help="That node's agent's log (relayed by the server)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Each record as a JSON object, one a line.")
    ] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
) -> None:
    """Stream the server's log (or an agent's, --node-id) from now on, until interrupted."""
    import json

    with common.handle_errors(), common.make_client(address) as client:
        try:
            for record in client.monitor(log_level.value, node_id):
                line = json.dumps(record) if as_json else format_record(record)
                common.echo_raw(line + "\n")
        except KeyboardInterrupt:
            return
