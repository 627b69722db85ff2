"""``podium job restart``: restart every running allocation of a job, in batches.

As Nomad's ``job restart``: the allocations are restarted in place (their tasks killed and
started again on the same node: ``POST /v1/allocation/{id}/restart``) or, with
``--reschedule``, stopped and replaced by the scheduler (``POST .../stop``), a batch at a
time; each batch must run again before the next starts (``--batch-wait`` more between
them), so a service keeps most of its instances up while it restarts.  A batch that does
not come back (a task fails, a replacement cannot be placed, ``--timeout``) stops the
command; what was restarted stays restarted.  :func:`install` adds it to ``podium job``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from podium.cli import common, render
from podium.cli.common import (
    EXIT_ERROR,
    EXIT_TIMEOUT,
    AddressOpt,
    Deadline,
    Output,
    OutputOpt,
    TimedOut,
)
from podium.client import Client, endpoints
from podium.models import (
    Allocation,
    ClientStatus,
    DesiredStatus,
    TaskStateName,
    format_duration,
    parse_duration,
)


def install(app: typer.Typer) -> None:
    app.command("restart")(restart)


def parse_batch_size(text: str, total: int) -> int:
    """``N`` allocations, or ``P%`` of ``total`` (at least one)."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            pct = float(raw[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, int(total * pct / 100))
        n = int(raw)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        common.usage(
            f"--batch-size must be a number of allocations (>= 1) or a percentage, not {text!r}"
        )


@dataclass
class Batch:
    allocs: list[Allocation]
    started: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """In place: alloc id -> task -> its start time before the restart."""
    restarted: dict[str, list[str]] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)
    """Rescheduled: old alloc id -> its replacement's (once known)."""


class BatchFailed(Exception):
    pass


def restart(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")],
    group: Annotated[
        str | None, typer.Option("--group", help="Only this group's allocations.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Only this task of each allocation (in place only)."),
    ] = None,
    batch_size: Annotated[
        str,
        typer.Option("--batch-size", help="Allocations per batch: a number, or a percentage."),
    ] = "1",
    batch_wait: Annotated[
        str, typer.Option("--batch-wait", help="Pause between batches, as a duration (10s).")
    ] = "0s",
    reschedule: Annotated[
        bool,
        typer.Option(
            "--reschedule",
            help="Stop each allocation and let the scheduler replace it, instead of "
            "restarting its tasks in place.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="How long each batch may take to run again.")
    ] = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Restart every running allocation of a job, a batch at a time.

    Exits 0 when every batch runs again; 1 when one fails to; 4 when --timeout runs out
    waiting for a batch."""
    if task is not None and reschedule:
        common.usage("--task restarts tasks in place; --reschedule replaces whole allocations")
    try:
        wait_between = parse_duration(batch_wait)
        per_batch = parse_duration(timeout)
    except ValueError as exc:
        common.usage(str(exc))
    con = common.console()
    quiet = output.structured
    with common.handle_errors(output=output), common.make_client(address) as client:
        job = client.job(job_id)
        if group is not None and group not in job.spec.groups:
            common.fail(
                f"job {job.id} has no group {group!r} (groups: {', '.join(job.spec.groups)})",
                kind="not_found",
            )
        if task is not None:
            groups = [g for n, g in job.spec.groups.items() if group in (None, n)]
            if not any(task in g.tasks for g in groups):
                common.fail(f"job {job.id} has no task {task!r}", kind="not_found")
        allocs = [
            a
            for a in client.job_allocations(job.id)
            if a.desired_status == DesiredStatus.RUN
            and a.client_status == ClientStatus.RUNNING
            and group in (None, a.group)
            and (task is None or task in a.task_states)
        ]
        allocs.sort(key=lambda a: a.name)
        if not allocs:
            common.fail(f"job {job.id} has no running allocations to restart")
        size = parse_batch_size(batch_size, len(allocs))
        batches = [allocs[i : i + size] for i in range(0, len(allocs), size)]
        how = "stop and replace" if reschedule else "restart"
        if not yes:
            if not common.interactive():
                common.usage(
                    f"this would {how} {len(allocs)} allocations of job {job.id}: "
                    "give --yes to go ahead without a terminal to confirm on"
                )
            if not typer.confirm(
                f"{how.capitalize()} {len(allocs)} allocations of job {job.id} in "
                f"{len(batches)} batches?"
            ):
                raise typer.Exit(EXIT_ERROR)
        done: list[dict[str, Any]] = []
        try:
            for n, allocs_in_batch in enumerate(batches, 1):
                if n > 1 and wait_between > 0:
                    if not quiet:
                        con.print(
                            f"==> Waiting {format_duration(wait_between)} before the next batch"
                        )
                    common.sleep(wait_between)
                if not quiet:
                    names = ", ".join(f"{a.name} ({render.short(a.id)})" for a in allocs_in_batch)
                    con.print(f"==> Batch {n} of {len(batches)}: {names}")
                batch = Batch(allocs_in_batch)
                if reschedule:
                    _stop_batch(client, batch)
                else:
                    _restart_batch(client, batch, task)
                _wait_batch(client, job.id, batch, reschedule, Deadline(per_batch))
                for a in allocs_in_batch:
                    entry: dict[str, Any] = {"alloc_id": a.id, "name": a.name}
                    if reschedule:
                        entry["replaced_by"] = batch.replaced.get(a.id)
                    else:
                        entry["tasks"] = batch.restarted.get(a.id, [])
                    done.append(entry)
                    if not quiet:
                        if reschedule:
                            con.print(
                                f"    {a.name}: {render.short(a.id)} replaced by "
                                f"{render.short(batch.replaced.get(a.id))}, running"
                            )
                        else:
                            tasks = ", ".join(batch.restarted.get(a.id, []))
                            con.print(f"    {a.name} ({render.short(a.id)}): {tasks} running again")
        except TimedOut:
            common.fail(
                f"timed out after {format_duration(per_batch)} waiting for a batch to run "
                "again (it goes on; podium job status shows it)",
                EXIT_TIMEOUT,
                kind="timeout",
            )
        except BatchFailed as exc:
            common.fail(str(exc))
        if quiet:
            common.print_data({"job_id": job.id, "restarted": done}, output)
        else:
            con.print(f"[green]Job {job.id}: {len(done)} allocations restarted.[/]")


def _restart_batch(client: Client, batch: Batch, task: str | None) -> None:
    for a in batch.allocs:
        batch.started[a.id] = {name: s.started_at for name, s in a.task_states.items()}
        answer = client.restart_alloc(a.id, task)
        batch.restarted[a.id] = list(answer.restarted)


def _stop_batch(client: Client, batch: Batch) -> None:
    for a in batch.allocs:
        client.stop_alloc(a.id)


def _running(a: Allocation) -> bool:
    return a.client_status == ClientStatus.RUNNING and all(
        t.state == TaskStateName.RUNNING for t in a.task_states.values()
    )


def _wait_batch(
    client: Client, job_id: str, batch: Batch, reschedule: bool, deadline: Deadline
) -> None:
    """Until every allocation of the batch runs again (or its replacement does)."""
    ep = endpoints.job_allocations(job_id, all=True)
    for result in common.watch(client, ep, deadline):
        by_id = {a.id: a for a in result.value}
        if all(_back(a, by_id, batch, reschedule) for a in batch.allocs):
            return
    raise AssertionError("unreachable")  # pragma: no cover


def _back(old: Allocation, by_id: dict[str, Allocation], batch: Batch, reschedule: bool) -> bool:
    if reschedule:
        current = by_id.get(old.id)
        nxt_id = current.next_allocation if current is not None else None
        if not nxt_id:
            return False
        batch.replaced[old.id] = nxt_id
        nxt = by_id.get(nxt_id)
        if nxt is None:
            return False
        if nxt.client_status in (ClientStatus.FAILED, ClientStatus.LOST):
            raise BatchFailed(
                f"the replacement {render.short(nxt.id)} of {old.name} {nxt.client_status.value}"
                + (f": {nxt.client_description}" if nxt.client_description else "")
            )
        return _running(nxt)
    a = by_id.get(old.id)
    if a is None or a.client_status.terminal:
        status = a.client_status.value if a is not None else "gone"
        raise BatchFailed(f"allocation {render.short(old.id)} ({old.name}) is {status}")
    before = batch.started.get(old.id, {})
    for name in batch.restarted.get(old.id, []):
        state = a.task_states.get(name)
        if state is None or state.state != TaskStateName.RUNNING:
            return False
        if state.started_at is None or state.started_at == before.get(name):
            return False
    return True
