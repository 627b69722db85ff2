"""``podium alloc restart|signal|stop|fs``: day-two operations on one allocation (issue 16).

Modelled on Nomad's commands of the same names.  ``restart`` and ``signal`` act on the
task in place (the server relays them to the node's agent); ``stop`` stops the allocation
and follows the evaluation that replaces it, as ``job run`` follows a registration (the
job keeps its count); ``fs`` lists a directory or prints a file within the allocation's
directory.  :func:`install` adds them to ``podium alloc`` (podium.cli.alloc).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from podium.cli import common, render
from podium.cli.common import AddressOpt, Deadline, Output, OutputOpt
from podium.client import Client, RegisterResult, ops
from podium.models import Allocation
from podium.models.alloc_ops import FileInfo, FsListing

if TYPE_CHECKING:
    from podium.cli.job import RunMonitor

AllocArg = Annotated[
    str, typer.Argument(metavar="ALLOC_ID", help="An allocation id or unique prefix.")
]
TaskArg = Annotated[
    str | None,
    typer.Argument(help="One task; left out: every running task of the allocation."),
]


def install(app: typer.Typer) -> None:
    """Add the commands to ``podium alloc``."""
    app.command("restart")(restart)
    app.command("signal")(signal)
    app.command("stop")(stop)
    app.command("fs")(fs)


def restart(
    alloc_id: AllocArg,
    task: TaskArg = None,
    all_tasks: Annotated[
        bool,
        typer.Option("--all-tasks", help="Every task of the allocation (each must be running)."),
    ] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Restart a task (or every running task) in place, on its node.

    The restart policy does not count it, nor the task's restart count: the task event
    "Restart Signaled" records it."""
    if task is not None and all_tasks:
        common.usage("name a task or give --all-tasks, not both")
    with common.handle_errors(output=output), common.make_client(address) as client:
        alloc = client.allocation(alloc_id)
        result = client.query(ops.restart_alloc(alloc.id, task, all_tasks))
        if output.structured:
            common.print_data(result.raw, output)
            return
        tasks = ", ".join(result.value.restarted)
        common.console().print(f"Restarting {tasks} of allocation {render.short(alloc.id)}")


def signal(
    alloc_id: AllocArg,
    task: TaskArg = None,
    sig: Annotated[
        str,
        typer.Option("--signal", "-s", help="The signal's name (SIGUSR1, HUP, ...)."),
    ] = "SIGKILL",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Send a signal to a task (or every running task): SIGKILL unless -s says another,
    as Nomad's ``alloc signal``."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        alloc = client.allocation(alloc_id)
        result = client.query(ops.signal_alloc(alloc.id, sig, task))
        if output.structured:
            common.print_data(result.raw, output)
            return
        answer = result.value
        common.console().print(
            f"Sent {answer.signal} to {', '.join(answer.tasks)} of allocation "
            f"{render.short(alloc.id)}"
        )


def stop(
    alloc_id: AllocArg,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once the stop is recorded.")
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="How long to follow the replacement (30s, 5m).")
    ] = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Stop an allocation; the scheduler places a replacement (the job keeps its count).

    Prints the evaluation and, unless --detach, follows it as ``job run`` does: exits 0
    once the job's allocations run again, 3 when the replacement cannot be placed, 4 when
    --timeout runs out."""
    from podium.cli.job import _duration, _follow_registration  # job run's: loaded when used

    wait_for = _duration(timeout)
    with common.handle_errors(output=output), common.make_client(address) as client:
        alloc = client.allocation(alloc_id)
        result = client.stop_alloc(alloc.id)
        quiet = output.structured
        if quiet:
            common.print_data(result.model_dump(mode="json"), output)
        else:
            common.console().print(
                f"Allocation {render.short(alloc.id)} ({alloc.name}) is stopping; "
                f"evaluation {render.short(result.eval_id)} replaces it"
            )
        if detach or result.eval_id is None:
            return
        job = client.job(alloc.job_id)
        reg = RegisterResult(
            eval_id=result.eval_id,
            version=job.version,
            job_modify_index=job.job_modify_index,
            index=result.index,
            changed=False,
        )
        monitor = _stop_monitor(alloc)(client, job.spec, reg, Deadline(wait_for), quiet=quiet)
        _follow_registration(monitor)


def _stop_monitor(stopped: Allocation) -> type[RunMonitor]:
    """``job run``'s monitor, headed by the stopped allocation rather than a version."""
    from podium.cli.job import RunMonitor

    class StopMonitor(RunMonitor):
        def _header(self) -> str:
            return (
                f"Job {self.spec.id} version {self.reg.version}: allocation "
                f"{render.short(stopped.id)} stopped, replacing it"
            )

    return StopMonitor


# --------------------------------------------------------------------------- fs


def fs(
    alloc_id: AllocArg,
    path: Annotated[
        str,
        typer.Argument(
            help="A path relative to the allocation's directory (alloc/logs, a task's "
            "name, web/local/app.conf); left out: the directory itself."
        ),
    ] = "",
    stat: Annotated[
        bool, typer.Option("--stat", help="Show the entry's details, not its contents.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing what is appended to a file.")
    ] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """List a directory or print a file within an allocation's directory.

    Only what lies within it is served: absolute paths, '..' and symlinks are refused,
    and a task's secrets/ directory is never shown."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        alloc = client.allocation(alloc_id)
        stat_result = client.query(ops.alloc_fs_stat(alloc.id, path))
        info = stat_result.value
        if stat:
            if output.structured:
                common.print_data(stat_result.raw, output)
            else:
                common.console().print(render.fields(_stat_rows(info)))
            return
        if info.is_dir:
            if follow:
                common.usage(
                    f"{path or 'the allocation directory'} is a directory: -f follows a file"
                )
            listed = client.query(ops.alloc_fs_ls(alloc.id, path))
            if output.structured:
                common.print_data(listed.raw, output)
            else:
                _print_listing(listed.value)
            return
        if output.structured:
            common.usage("-o json|yaml is for listings and --stat; a file prints as it is")
        _cat(client, alloc.id, path, follow)


def _stat_rows(info: FileInfo) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("Name", info.name),
        ("Path", info.path or "/"),
        ("Type", info.type),
        ("Mode", info.mode),
        ("Size", _size(info.size)),
        ("Modified", render.clock(info.mod_time)),
    ]
    if info.link_target:
        rows.append(("Link Target", info.link_target))
    return rows


def _print_listing(listing: FsListing) -> None:
    table = render.table("Mode", "Size", "Modified", "Name")
    for e in listing.entries:
        name = Text(e.name + ("/" if e.is_dir else ""))
        if e.link_target:
            name.append(f" -> {e.link_target}", style="dim")
        table.add_row(e.mode, "-" if e.is_dir else _size(e.size), render.clock(e.mod_time), name)
    common.console().print(table)
    if listing.truncated:
        common.err_console().print("[yellow]The listing was cut short: too many entries.[/]")


def _size(n: int) -> str:
    """``812 B``, ``4.0 KiB``, ``1.5 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _cat(client: Client, alloc_id: str, path: str, follow: bool) -> None:
    out = sys.stdout.buffer
    try:
        for chunk in client.alloc_fs_cat(alloc_id, path, follow=follow):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        return
