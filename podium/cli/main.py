"""The ``podium`` command: one Typer app, one sub-app per command group.

The groups are imported when the command line names one (see
:mod:`podium.cli.lazy`): ``podium job run`` does not pay for Compose's
converter or the agent's start-up code.
"""

from __future__ import annotations

import sys

# httpx imports its own command-line tool (click, pygments, rich.syntax) whenever those
# are installed: ~30 ms of every podium command's start, for a tool this process never
# runs.  Marked as absent, httpx skips it (its `main` then only says what to install).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import typer  # noqa: E402

from podium import __version__  # noqa: E402
from podium.cli.common import Output, OutputOpt, print_json  # noqa: E402
from podium.cli.lazy import LazyGroup  # noqa: E402


class PodiumGroup(LazyGroup):
    lazy = {
        "agent": "podium.cli.agent:agent",
        "server": "podium.cli.server:server",
        "sim": "podium.cli.sim:sim",
        "job": "podium.cli.job:app",
        "alloc": "podium.cli.alloc:app",
        "node": "podium.cli.node:app",
        "eval": "podium.cli.eval:app",
        "deployment": "podium.cli.deployment:app",
        "compose": "podium.cli.compose:app",
        "var": "podium.cli.var:app",
        "service": "podium.cli.service:app",
    }


app = typer.Typer(
    name="podium",
    cls=PodiumGroup,
    help="Podium: run jobs on a cluster of machines (or just this one).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Podium: run jobs on a cluster of machines (or just this one)."""


@app.command("version")
def version(output: OutputOpt = Output.TABLE) -> None:
    """Print the version of this podium."""
    if output == Output.JSON:
        print_json({"version": __version__})
    else:
        typer.echo(f"podium {__version__}")


def main() -> None:
    app()


__all__ = ["app", "main"]


if __name__ == "__main__":  # `python -m podium.cli.main`, for environments without the script
    main()
