"""``podium eval ...``: why the scheduler placed what it placed, or could not."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group as RenderGroup
from rich.markup import escape
from rich.text import Text

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import endpoints

app = typer.Typer(help="Inspect evaluations (scheduler runs).", no_args_is_help=True)


@app.command("status")
def status(
    eval_id: Annotated[
        str, typer.Argument(metavar="EVAL_ID", help="An evaluation id or unique prefix.")
    ],
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """One evaluation: trigger, outcome, plan, and placement failures with reasons."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.evaluation(eval_id))
        if output.structured:
            common.print_data(result.raw, output)
            return
        ev = result.value
        status_line = ev.status.value
        if ev.status_description:
            status_line += f" ({ev.status_description})"
        rows: list[tuple[str, object]] = [
            ("ID", ev.id),
            ("Job", ev.job_id),
            ("Type", ev.type),
            ("Priority", ev.priority),
            ("Triggered By", ev.triggered_by.value),
            ("Status", status_line),
            ("Created", render.age(ev.create_time)),
            ("Modified", render.age(ev.modify_time)),
        ]
        for label, other in (
            ("Node", ev.node_id),
            ("Previous Eval", ev.previous_eval),
            ("Next Eval", ev.next_eval),
            ("Blocked Eval", ev.blocked_eval),
        ):
            if other:
                rows.append((label, other))
        if ev.wait_until:
            rows.append(("Wait Until", render.clock(ev.wait_until)))
        if ev.plan_summary:
            rows.append(("Plan", render.plan_text(ev.plan_summary)))
        if ev.queued_allocations:
            rows.append(
                (
                    "Queued",
                    ", ".join(f"{g}: {n}" for g, n in sorted(ev.queued_allocations.items())),
                )
            )
        failures = None
        if ev.failed_tg_allocs:
            failures = RenderGroup(
                Text("Placement Failures", style="bold"),
                *[
                    Text(line, style="red")
                    for line in render.placement_failures(ev.failed_tg_allocs, ev)
                ],
            )
        common.console().print(render.stack(render.fields(rows), failures))


@app.command("list")
def list_(
    job: Annotated[
        str | None, typer.Option("--job", help="Only this job's evaluations (exact id).")
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Recent evaluations, newest first."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.evaluations(job_id=job))
        if output.structured:
            common.print_data(result.raw, output)
            return
        evals = sorted(result.value, key=lambda e: (e.create_index, e.create_time), reverse=True)
        if not evals:
            common.console().print(
                "No evaluations." if job is None else f"No evaluations for {escape(job)}."
            )
            return
        common.console().print(render.evals_table(evals))
