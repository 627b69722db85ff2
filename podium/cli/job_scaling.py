"""``podium job scaling-events``: a job's scaling decisions, newest first.

Each change of a group's count the autoscaler made (with its reason: the metric, its
target, the instances measured), each ``podium job scale`` (a manual event, with its
``--message``), and each evaluation whose metric could not be read (an error, recorded
once until it changes), from ``GET /v1/job/{id}/scale`` (docs/autoscaling.md).  With
``-o json`` the API's answer as it is: every group's count, bounds, policy and events.
:func:`install` adds it to ``podium job``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import endpoints
from podium.models.scaling import JobScaleStatus, ScalingEvent


def install(app: typer.Typer) -> None:
    app.command("scaling-events")(scaling_events)


def change(ev: ScalingEvent) -> str:
    return "-" if ev.count is None else f"{ev.previous_count} -> {ev.count}"


def bounds(status: JobScaleStatus) -> list[str]:
    """One line per group: its count, running instances, bounds and policy."""
    lines = []
    for name, g in sorted(status.groups.items()):
        line = f"{name}: count {g.count}, running {g.running}"
        if g.min is not None:
            line += f", bounds [{g.min}, {g.max}]"
        if g.policy is not None:
            unit = "%" if g.policy.metric in ("cpu", "memory") else ""
            state = "" if g.enabled else " (paused)"
            line += f", {g.policy.metric} target {g.policy.target:g}{unit}{state}"
        lines.append(line)
    return lines


def scaling_events(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="A job id or unique prefix.")],
    group: Annotated[str | None, typer.Option("--group", help="Only this group's events.")] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """The job's scaling decisions (autoscaler and manual), newest first."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.job_scale_status(job_id))
        if output.structured:
            common.print_data(result.raw, output)
            return
        status = result.value
        if group is not None and group not in status.groups:
            common.fail(
                f"job {status.job_id} has no group {group!r} "
                f"(groups: {', '.join(sorted(status.groups))})",
                kind="not_found",
            )
        con = common.console()
        for line in bounds(status):
            con.print(escape(line), soft_wrap=True)
        events = [
            ev
            for name, g in status.groups.items()
            if group is None or name == group
            for ev in g.events
        ]
        events.sort(key=lambda e: e.time, reverse=True)
        if not events:
            con.print("No scaling events.")
            return
        t = render.table("Time", "Group", "Source", "Change", "Reason")
        for ev in events:
            said = ev.reason + (f": {ev.error}" if ev.error else "")
            t.add_row(
                render.clock(ev.time),
                escape(ev.group),
                ev.source,
                change(ev),
                escape(said),
            )
        con.print(t)
