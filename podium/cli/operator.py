"""``podium operator``: the store's recovery and migration (docs/operations.md).

``snapshot save FILE`` asks a running server for a consistent snapshot
(``GET /v1/operator/snapshot``, a management token with ``--acl``).
``snapshot restore FILE --data-dir DIR`` verifies a snapshot and installs it as the store
of a stopped server; ``snapshot inspect FILE`` runs the same checks and says what it
holds.  ``store reset --data-dir DIR`` moves a damaged store aside and leaves a new,
empty cluster.  The three offline commands refuse while a server holds the data dir.

``snapshot restore FILE --etcd URLS`` makes a snapshot all that etcd holds for a cluster,
and ``migrate --from sqlite:DIR --to etcd://...`` moves a single server's store to etcd
(docs/ha.md): offline too, they refuse while a server leads the cluster (or holds DIR).
The work is podium.recovery's (the CLI does not import the store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli import common, operator_scheduler
from podium.cli.common import AddressOpt, Output, OutputOpt, TokenOpt

app = typer.Typer(
    help="Operate the cluster: snapshots of its state, its move to etcd.", no_args_is_help=True
)
snapshot_app = typer.Typer(help="Save, check and restore the server's state.", no_args_is_help=True)
store_app = typer.Typer(help="The server's store on disk.", no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(store_app, name="store")
app.add_typer(operator_scheduler.app, name="scheduler")

DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="The stopped server's data directory (its --data-dir).",
        show_default=False,
    ),
]

EtcdClusterOpt = Annotated[
    str,
    typer.Option(
        "--etcd-cluster",
        help="The Podium cluster's name in etcd: its keys are /podium/NAME/.",
    ),
]
SQLITE = "sqlite:"


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
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="The stopped server's data directory (its --data-dir).",
            show_default=False,
        ),
    ] = None,
    etcd: Annotated[
        str | None,
        typer.Option(
            "--etcd",
            help="Restore into etcd instead: etcd://HOST:PORT[,HOST:PORT...] "
            "(or http://HOST:PORT,...), every server of the cluster stopped.",
            show_default=False,
        ),
    ] = None,
    etcd_cluster: EtcdClusterOpt = "default",
    output: OutputOpt = Output.TABLE,
) -> None:
    """Verify FILE and make it the store of the stopped server at --data-dir (the store it
    replaces is kept beside it), or all that etcd holds for --etcd-cluster (what it held
    is deleted).  Refused while a server runs; nothing changes unless the snapshot is
    sound."""
    from podium.recovery import restore_snapshot

    with common.handle_errors(output=output):
        if (data_dir is None) == (etcd is None):
            common.usage("give exactly one of --data-dir DIR and --etcd URLS")
        if etcd is not None:
            _restore_etcd(file, etcd, etcd_cluster, output)
            return
        assert data_dir is not None
        info = restore_snapshot(file, data_dir)
        if output.structured:
            common.print_data(info, output)
            return
        typer.echo(f"Restored index {info['index']} ({_counts(info)}) into {data_dir}")
        if info.get("replaced"):
            typer.echo(f"The store it replaced is kept at {info['replaced']}")
        typer.echo("Start the server again to serve it.")


def _etcd_args(urls: str, option: str, cluster: str) -> tuple[list[str], str]:
    """The endpoints and the cluster name, as `podium server --etcd` takes them, or a
    usage error naming the option."""
    from podium.cli.server import check_cluster_name, parse_etcd_urls

    return parse_etcd_urls(urls, option), check_cluster_name(cluster, "--etcd-cluster")


def _restore_etcd(file: Path, urls: str, cluster: str, output: Output) -> None:
    from podium.recovery import restore_snapshot_etcd

    endpoints, cluster = _etcd_args(urls, "--etcd", cluster)
    info = restore_snapshot_etcd(file, endpoints, cluster)
    if output.structured:
        common.print_data(info, output)
        return
    where = f"etcd cluster {cluster!r} ({','.join(endpoints)})"
    typer.echo(f"Restored index {info['index']} ({_counts(info)}) into {where}")
    replaced = info.get("replaced_index")
    typer.echo(
        f"It replaced index {replaced}." if replaced is not None else "It held nothing before."
    )
    typer.echo("Start the servers again to serve it.")


@app.command("migrate")
def migrate(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="The stopped single server's store: sqlite:DATA_DIR (its --data-dir).",
            show_default=False,
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The etcd cluster: etcd://HOST:PORT[,HOST:PORT...] (or http://HOST:PORT,...).",
            show_default=False,
        ),
    ],
    etcd_cluster: EtcdClusterOpt = "default",
    output: OutputOpt = Output.TABLE,
) -> None:
    """Move a stopped single server's store into etcd, to run the cluster on several
    servers (docs/ha.md).  Its jobs, allocations, index and cluster id go on as they
    were.  Refused while the server runs, and when etcd already holds --etcd-cluster;
    the SQLite store is then kept aside (state.db.migrated-TIME)."""
    from podium.recovery import migrate_to_etcd

    with common.handle_errors(output=output):
        if not source.startswith(SQLITE):
            common.usage(f"--from {source!r}: expected sqlite:DATA_DIR (the server's --data-dir)")
        path = source.removeprefix(SQLITE)
        path = path[2:] if path.startswith("//") else path
        if not path:
            common.usage(f"--from {source!r} names no data dir: expected sqlite:DATA_DIR")
        endpoints, cluster = _etcd_args(to, "--to", etcd_cluster)
        data_dir = Path(path)
        info = migrate_to_etcd(data_dir, endpoints, cluster)
        if output.structured:
            common.print_data({**info, "data_dir": str(data_dir)}, output)
            return
        urls = ",".join(endpoints)
        typer.echo(
            f"Migrated index {info['index']} ({_counts(info)}) of cluster {info['cluster_id']} "
            f"from {data_dir} into etcd cluster {cluster!r} ({urls})"
        )
        if info.get("store_moved_to"):
            typer.echo(
                f"The SQLite store is kept at {info['store_moved_to']} (the way back); "
                "a server started on it without --etcd is refused."
            )
        flags = f"--etcd {urls}" + (f" --etcd-cluster {cluster}" if cluster != "default" else "")
        if info.get("keyring_file"):
            typer.echo(
                f"Start every server with {flags} --keyring-file PATH, PATH a copy of "
                f"{info['keyring_file']} (key {info['keyring_id']}: it seals the variables)."
            )
        else:
            typer.echo(
                f"Start every server with {flags}, and the keyring file the server used "
                "(--keyring-file) if it had one."
            )


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
