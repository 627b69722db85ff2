"""The ``podium`` command: one Typer app, one sub-app per command group.

The groups are imported when the command line names one (see
:mod:`podium.cli.lazy`): ``podium job run`` does not pay for Compose's
converter or the agent's start-up code.  The root group also answers what
every seasoned tool does: ``--version``, shell completion (``podium completion
bash|zsh|fish|powershell`` prints the script; ``--install-completion`` installs
it), the exit statuses in ``--help``, and a usage error as a document on
stderr when the command line asked for ``-o json`` or ``-o yaml``.
"""

from __future__ import annotations

import os
import sys

# httpx imports its own command-line tool (click, pygments, rich.syntax) whenever those
# are installed: ~30 ms of every podium command's start, for a tool this process never
# runs.  Marked as absent, httpx skips it (its `main` then only says what to install).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from enum import StrEnum  # noqa: E402
from typing import Annotated, Any  # noqa: E402

import typer  # noqa: E402
from typer._click.exceptions import UsageError  # noqa: E402  # Typer 0.29 vendors Click (pinned)

from podium import __version__  # noqa: E402
from podium.cli import common  # noqa: E402
from podium.cli.common import Output, OutputOpt  # noqa: E402
from podium.cli.lazy import LazyGroup  # noqa: E402

_ARGS = "podium.args"


class PodiumGroup(LazyGroup):
    """The root group: its command groups are loaded when named (``lazy``), and it keeps
    the raw arguments so a usage error anywhere below can be answered in the ``-o``
    format the line asked for."""

    lazy = {
        "agent": "podium.cli.agent:agent",
        "server": "podium.cli.server:app",
        "sim": "podium.cli.sim:sim",
        "job": "podium.cli.job:app",
        "alloc": "podium.cli.alloc:app",
        "node": "podium.cli.node:app",
        "eval": "podium.cli.eval:app",
        "event": "podium.cli.event:app",
        "deployment": "podium.cli.deployment:app",
        "compose": "podium.cli.compose:app",
        "var": "podium.cli.var:app",
        "service": "podium.cli.service:app",
        "namespace": "podium.cli.namespace:app",
        "join-token": "podium.cli.tls:join_token_app",
        "tls": "podium.cli.tls:app",
        "acl": "podium.cli.acl:app",
        "operator": "podium.cli.operator:app",
        "monitor": "podium.cli.monitor:monitor",
    }

    def _build(self, name: str, target: str) -> Any:
        built = super()._build(name, target)
        if name in common.NAMESPACED_GROUPS:
            common.add_namespace_option(built)
        return built

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
    ca_cert: Annotated[
        str | None,
        typer.Option(
            "--ca-cert",
            envvar="PODIUM_CACERT",
            help="The CA certificate an https:// server is verified with (default: the "
            "system's CAs).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="PODIUM_TOKEN",
            help="ACL token for every command (servers with --acl); also PODIUM_TOKEN.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Podium: run jobs on a cluster of machines (or just this one)."""
    if ca_cert:
        os.environ["PODIUM_CACERT"] = ca_cert  # what every Client reads (podium.client)
    common.root_token = token


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
