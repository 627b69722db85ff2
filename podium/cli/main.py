"""The ``podium`` command: one Typer app, one sub-app per command group."""

from __future__ import annotations

import typer

from podium import __version__
from podium.cli import agent as agent_cmd
from podium.cli import alloc, deployment, job, node
from podium.cli import compose as compose_cmd
from podium.cli import eval as eval_cmd
from podium.cli import server as server_cmd
from podium.cli import service as service_cmd
from podium.cli import sim as sim_cmd
from podium.cli import var as var_cmd
from podium.cli.common import Output, OutputOpt, print_json

app = typer.Typer(
    name="podium",
    help="Podium: run jobs on a cluster of machines (or just this one).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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
