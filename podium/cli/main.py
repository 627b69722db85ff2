"""The ``podium`` command: one Typer app, one sub-app per command group.

The root group also answers what every seasoned tool does: ``--version``,
shell completion (``podium completion bash|zsh|fish|powershell`` prints the
script; ``--install-completion`` installs it), the exit statuses in
``--help``, and a usage error as a document on stderr when the command line
asked for ``-o json`` or ``-o yaml``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from typer._click.exceptions import UsageError  # Typer 0.29 vendors Click (pinned)
from typer.core import TyperGroup

from podium import __version__
from podium.cli import agent as agent_cmd
from podium.cli import alloc, deployment, job, node
from podium.cli import common as common
from podium.cli import compose as compose_cmd
from podium.cli import eval as eval_cmd
from podium.cli import server as server_cmd
from podium.cli import service as service_cmd
from podium.cli import sim as sim_cmd
from podium.cli import var as var_cmd
from podium.cli.common import Output, OutputOpt

_ARGS = "podium.args"


class PodiumGroup(TyperGroup):
    """The root group: keeps the raw arguments so a usage error anywhere below can be
    answered in the ``-o`` format the line asked for."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta[_ARGS] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            output = common.requested_output(ctx.meta.get(_ARGS, []))
            if not output.structured:
                raise
            doc = common.error_document("usage", exc.format_message(), common.EXIT_USAGE)
            common.emit_error(doc, output)
            raise typer.Exit(common.EXIT_USAGE) from None


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"podium {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="podium",
    cls=PodiumGroup,
    help="Podium: run jobs on a cluster of machines (or just this one).",
    epilog=common.EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Podium: run jobs on a cluster of machines (or just this one)."""


app.add_typer(job.app, name="job")
app.add_typer(alloc.app, name="alloc")
app.add_typer(node.app, name="node")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(deployment.app, name="deployment")
app.add_typer(compose_cmd.app, name="compose")
app.add_typer(var_cmd.app, name="var")
app.add_typer(service_cmd.app, name="service")
app.command("agent")(agent_cmd.agent)
app.command("server")(server_cmd.server)
app.command("sim")(sim_cmd.sim)


@app.command("version")
def version(output: OutputOpt = Output.TABLE) -> None:
    """Print the version of this podium (the same as --version)."""
    if output.structured:
        common.print_data({"version": __version__}, output)
    else:
        typer.echo(f"podium {__version__}")


class Shell(StrEnum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"
    POWERSHELL = "powershell"


@app.command("completion")
def completion(
    shell: Annotated[Shell, typer.Argument(help="The shell to complete podium in.")],
) -> None:
    """Print the shell completion script for podium.

    Load it now with `source <(podium completion bash)` (zsh: `source <(podium
    completion zsh)`, fish: `podium completion fish | source`), or put it in
    your shell's startup file; `podium --install-completion` does that for the
    shell you run.
    """
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    completion_init()  # registers Typer's completion classes, which the script talks to
    typer.echo(
        get_completion_script(
            prog_name="podium", complete_var="_PODIUM_COMPLETE", shell=shell.value
        )
    )


def main() -> None:
    app(prog_name="podium")


__all__ = ["app", "main"]


if __name__ == "__main__":  # `python -m podium.cli.main`, for environments without the script
    main()
