"""``podium operator``: the store's recovery (docs/operations.md).

``snapshot save FILE`` asks a running server for a consistent snapshot
(``GET /v1/operator/snapshot``, a management token with ``--acl``).
``snapshot restore FILE --data-dir DIR`` verifies a snapshot and installs it as the store
of a stopped server; ``snapshot inspect FILE`` runs the same checks and says what it
holds.  ``store reset --data-dir DIR`` moves a damaged store aside and leaves a new,
empty cluster.  The three offline commands refuse while a server holds the data dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli import common
from podium.cli.common import AddressOpt, Output, OutputOpt, TokenOpt

app = typer.Typer(help="Operate the cluster: snapshots of its state.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Save, check and restore the server's state.", no_args_is_help=True)
store_app = typer.Typer(help="The server's store on disk.", no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(store_app, name="store")

DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="The stopped server's data directory (its --data-dir).",
        show_default=False,
    ),
]


def _counts(info: dict[str, Any]) -> str:
    objects = info.get("objects") or {}
    return ", ".join(f"{n} {t}" for t, n in sorted(objects.items())) or "no objects"


@snapshot_app.command("save")
def save(
    file: Annotated[Path, typer.Argument(help="Where to write the snapshot.")],
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Save a consistent snapshot of a running server's state to FILE."""
    with common.handle_errors(output=output):
        index = common.make_client(address, token).save_snapshot(file)
        if output.structured:
            common.print_data({"file": str(file), "index": index}, output)
        else:
            typer.echo(f"Snapshot of index {index} saved to {file}")


@snapshot_app.command("inspect")
def inspect(
    file: Annotated[Path, typer.Argument(help="The snapshot file.")],
    output: OutputOpt = Output.TABLE,
) -> None:
    """Check a snapshot as a restore would, and say what it holds."""
    from podium.recovery import inspect_snapshot

    with common.handle_errors(output=output):
        info = inspect_snapshot(file)
        if output.structured:
            common.print_data(info, output)
        else:
            typer.echo(f"{file}: sound; index {info['index']}, cluster {info['cluster_id']}")
            typer.echo(f"  {_counts(info)}")


@snapshot_app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="The snapshot file (from `snapshot save`).")],
    data_dir: DataDirOpt,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Verify FILE and make it the store of the stopped server at --data-dir (the store it
    replaces is kept beside it).  Refused while the server runs; nothing changes unless
    the snapshot is sound."""
    from podium.recovery import restore_snapshot

    with common.handle_errors(output=output):
        info = restore_snapshot(file, data_dir)
        if output.structured:
            common.print_data(info, output)
            return
        typer.echo(f"Restored index {info['index']} ({_counts(info)}) into {data_dir}")
        if info.get("replaced"):
            typer.echo(f"The store it replaced is kept at {info['replaced']}")
        typer.echo("Start the server again to serve it.")


@store_app.command("reset")
def reset(data_dir: DataDirOpt, output: OutputOpt = Output.TABLE) -> None:
    """Move the stopped server's store aside and start a NEW, EMPTY cluster there: every
    job is forgotten (agents' running allocations will be stopped).  Prefer
    `snapshot restore`."""
    from podium.recovery import reset_store

    with common.handle_errors(output=output):
        aside = reset_store(data_dir)
        if output.structured:
            common.print_data({"data_dir": str(data_dir), "moved_to": aside}, output)
        elif aside:
            typer.echo(f"The old store is kept at {aside}; the next start is a new, empty cluster.")
        else:
            typer.echo("There was no store; the next start is a new, empty cluster.")
