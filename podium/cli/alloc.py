"""``podium alloc ...``: one allocation's status, and its tasks' logs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Group as RenderGroup
from rich.console import RenderableType
from rich.text import Text

from podium.cli import alloc_ops, common, render
from podium.cli.alloc_exec import register as register_exec
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import Client, endpoints
from podium.errors import PodiumError
from podium.models import Allocation, ClientStatus
from podium.models.stats import AllocResourceUsage

app = typer.Typer(help="Inspect allocations and read their logs.", no_args_is_help=True)
register_exec(app)  # `alloc exec`: podium/cli/alloc_exec.py

AllocArg = Annotated[
    str, typer.Argument(metavar="ALLOC_ID", help="An allocation id or unique prefix.")
]

TAIL_BYTES_PER_LINE = 512
"""How far back ``--tail N`` reads: N lines at this many bytes each, a generous guess."""


@app.command("status")
def status(
    alloc_id: AllocArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Where an allocation runs, what it should and does do, and its tasks' recent events."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.allocation(alloc_id))
        if output.structured:
            common.print_data(result.raw, output)
            return
        a = result.value
        rows: list[tuple[str, object]] = [
            ("ID", a.id),
            ("Name", a.name),
            ("Node", f"{a.node_name} ({render.short(a.node_id)})" if a.node_name else a.node_id),
            ("Job", f"{a.job_id} (version {a.job_version})"),
            ("Group", a.group),
            ("Evaluation", render.short(a.eval_id)),
            ("Desired Status", _with_reason(a.desired_status.value, a.desired_description)),
            ("Client Status", _with_reason(a.client_status.value, a.client_description)),
            ("Resources", _resources(a)),
            ("Ports", _ports(a)),
            ("Created", render.age(a.create_time)),
            ("Modified", render.age(a.modify_time)),
        ]
        if a.previous_allocation:
            rows.append(("Replaces", render.short(a.previous_allocation)))
        if a.next_allocation:
            rows.append(("Replaced By", render.short(a.next_allocation)))
        if a.preempted_by_alloc:
            by = f"{render.short(a.preempted_by_alloc)} (job {a.preempted_by_job})"
            rows.append(("Preempted By", by))
        if a.preempted_allocations:
            rows.append(("Preempted", ", ".join(render.short(i) for i in a.preempted_allocations)))
        if a.reschedule_events:
            rows.append(("Reschedules", len(a.reschedule_events)))
        for given in a.devices:  # docs/devices.md
            rows.append(("Devices", f"{given.task}: {given.id} {', '.join(given.device_ids)}"))
        parts: list[RenderableType] = [render.fields(rows)]
        usage, no_usage = _usage(client, a)
        for name, state in sorted(a.task_states.items()):
            head = Text.assemble(
                ("Task ", "bold"),
                (f'"{name}"', "bold"),
                " is ",
                render.status_text(state.state.value),
            )
            if state.failed:
                head.append(" (failed)", style="red")
            trows: list[tuple[str, object]] = [("Restarts", state.restarts)]
            if state.exit_code is not None:
                trows.append(("Exit Code", state.exit_code))
            if state.signal:
                trows.append(("Signal", state.signal))
            if state.oom_killed:
                trows.append(("OOM Killed", "yes"))
            if state.started_at:
                trows.append(("Started", render.age(state.started_at)))
            if state.finished_at:
                trows.append(("Finished", render.age(state.finished_at)))
            block: list[RenderableType] = [head, render.fields(trows)]
            if state.state.value == "running" and (usage is not None or no_usage):
                block += [Text("Resource Usage:"), _usage_fields(usage, name, no_usage)]
            if state.events:
                block += [Text("Recent Events:"), render.events_table(state.events)]
            parts.append(RenderGroup(*block))
        common.console().print(render.stack(*parts))


def _usage(client: Client, a: Allocation) -> tuple[AllocResourceUsage | None, str]:
    """The running allocation's resource usage from its agent, or why there is none
    (an agent that cannot be reached must not hide the rest of the status)."""
    if a.client_status != ClientStatus.RUNNING:
        return None, ""
    try:
        return client.query(endpoints.alloc_stats(a.id)).value, ""
    except PodiumError as exc:
        return None, f"unavailable: {exc}"


def _usage_fields(usage: AllocResourceUsage | None, task: str, why: str) -> RenderableType:
    """``CPU 1.5% of a core``, ``Memory 12.3 MiB of 256 MiB``, ``Processes 3``."""
    stats = usage.tasks.get(task) if usage is not None else None
    if stats is None:
        return render.fields([("Usage", why or "not measured (the driver did not say)")])
    memory = _mib(stats.memory_bytes)
    if stats.memory_limit_bytes is not None:
        memory += f" of {_mib(stats.memory_limit_bytes)}"
    return render.fields(
        [
            ("CPU", f"{stats.cpu_percent:.1f}% of a core"),
            ("Memory", memory),
            ("Processes", stats.pids),
        ]
    )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _ports(a: Allocation) -> str:
    """``http 10.0.0.5:24107, dns 10.0.0.5:8053`` (label, address the node publishes on)."""
    return (
        ", ".join(
            f"{label} {p.host_ip}:{p.value}" if p.host_ip else f"{label} {p.value}"
            for label, p in sorted(a.ports.items())
        )
        or "-"
    )


def _resources(a: Allocation) -> str:
    """Reserved cpu and memory, with the hard limits when the job named any."""
    res = a.resources
    text = f"{res.cpu} MHz, {res.memory} MB reserved"
    limits = [f"{v} {unit}" for v, unit in ((res.cpu_max, "MHz"), (res.memory_max, "MB")) if v]
    return text + (f"; limits {', '.join(limits)}" if limits else "")


def _with_reason(status: str, description: str) -> str:
    return f"{status} ({description})" if description else status


def _pick_task(client: Client, alloc: Allocation, task: str | None) -> str:
    """The task to read: the one named, or the group's only task."""
    names = sorted(alloc.task_states)
    if not names:
        # Not started yet: the job version says which tasks the group has.
        for version in client.job_versions(alloc.job_id):
            if version.version == alloc.job_version and alloc.group in version.spec.groups:
                names = sorted(version.spec.groups[alloc.group].tasks)
                break
    if task is not None:
        if names and task not in names:
            common.fail(
                f'allocation {render.short(alloc.id)} has no task "{task}"; '
                f"its tasks are: {', '.join(names)}",
                kind="not_found",
            )
        return task
    if len(names) == 1:
        return names[0]
    if not names:
        common.fail(f"allocation {render.short(alloc.id)} has no tasks yet; name the task")
    common.usage(
        f"allocation {render.short(alloc.id)} has {len(names)} tasks; "
        f"name one of: {', '.join(names)}"
    )


@app.command("logs")
def logs(
    alloc_id: AllocArg,
    task: Annotated[
        str | None,
        typer.Argument(help="The task; may be left out when the group has only one."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as the task writes.")
    ] = False,
    stderr: Annotated[
        bool, typer.Option("--stderr", help="Read stderr instead of stdout.")
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("--tail", "-n", min=0, help="Start with (about) the last N lines."),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
) -> None:
    """Print a task's stdout (or stderr), proxied by the server from the node's agent."""
    with common.handle_errors(), common.make_client(address) as client:
        alloc = client.allocation(alloc_id)
        name = _pick_task(client, alloc, task)
        kind = "stderr" if stderr else "stdout"
        if tail is None:
            chunks = client.alloc_logs(alloc.id, name, type=kind, follow=follow)
            try:
                for chunk in chunks:
                    common.echo_raw(chunk)
            except KeyboardInterrupt:
                return  # the usual way to stop following
            return
        chunks = client.alloc_logs(
            alloc.id,
            name,
            type=kind,
            origin="end",
            offset=max(tail, 1) * TAIL_BYTES_PER_LINE,
            follow=follow,
        )
        try:
            _print_tail(chunks, tail, follow)
        except KeyboardInterrupt:
            return


def _print_tail(chunks: Iterator[str], lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines of what came first, then (following) everything after.

    Without ``--follow`` the whole answer is the window, so the cut is exact;
    while following, the first chunk stands for the window.
    """
    it = iter(chunks)
    if not follow:
        text = "".join(it)
        common.echo_raw(_last_lines(text, lines))
        return
    first = next(it, "")
    common.echo_raw(_last_lines(first, lines))
    for chunk in it:
        common.echo_raw(chunk)


def _last_lines(text: str, n: int) -> str:
    if n == 0:
        return ""
    kept = text.splitlines(keepends=True)[-n:]
    return "".join(kept)


# restart, signal, stop and fs: podium.cli.alloc_ops (issue 16)
alloc_ops.install(app)
