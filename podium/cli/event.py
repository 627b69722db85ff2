"""``podium event stream``: the cluster's committed changes as they happen.

A thin reader of ``GET /v1/event/stream`` (:meth:`podium.client.Client.events`): a line
per event for people, one JSON object per line with ``-o json`` for programs (``jq``
friendly, as the server sends them).  It runs until interrupted (Ctrl-C exits 0).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from podium.cli import common
from podium.cli.common import AddressOpt, Output, OutputOpt

app = typer.Typer(help="Follow the cluster's events.", no_args_is_help=True)


@app.command("stream")
def stream(
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic",
            "-t",
            help="A topic (Job, Evaluation, Allocation, Deployment, Node, Service, "
            "Variable, or '*'), optionally ':KEY' (an id or a filter key such as the job "
            "id). Repeatable; default every topic.",
        ),
    ] = None,
    index: Annotated[
        int | None,
        typer.Option("--index", min=0, help="Resume after this index (default: from now on)."),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Print every committed change as it happens, until interrupted."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        events = client.events(topic or (), index=index)
        try:
            for event in events:
                if output.structured:
                    line = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
                else:
                    where = f"{event.namespace}/{event.key}" if event.namespace else event.key
                    line = f"{event.index:>10}  {event.type:<22}  {where}"
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return
