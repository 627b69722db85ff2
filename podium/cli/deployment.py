"""``podium deployment``: follow, promote and fail rolling deployments.

A deployment is one rollout of a job version (see docs/architecture.md,
"Deployments").  ``status`` shows a progress bar per group (healthy of
desired, with canaries and unhealthy instances); ``job run`` shows the same
view live while the version it registered rolls out.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import Client, endpoints
from podium.models import (
    Deployment,
    DeploymentGroup,
    DeploymentStatus,
    format_duration,
    parse_duration,
)

app = typer.Typer(help="Follow, promote and fail rolling deployments.", no_args_is_help=True)

DeploymentArg = Annotated[
    str, typer.Argument(metavar="DEPLOYMENT_ID", help="A deployment id or unique prefix.")
]


def deployment_view(
    dep: Deployment, now: float | None = None, *, hint: bool = True
) -> RenderableType:
    """The deployment's header and one progress bar per group.

    ``hint=False`` leaves out the line that says how to promote waiting
    canaries, for callers that say it themselves once the wait is certain.
    """
    head = Text.assemble(
        f"Deployment {render.short(dep.id)} of job ",
        (dep.job_id, "bold"),
        f" version {dep.job_version}: ",
        render.status_text(dep.status.value),
    )
    # said_once() starts with the status: what follows it is the news, said once
    head.append(render.said_once(dep.status.value, dep.status_description)[len(dep.status) :])
    lines: list[RenderableType] = [head]
    t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("Group", "Progress", "Healthy", "Unhealthy", "Placed", "Canaries", "Deadline"):
        t.add_column(col)
    for name, g in sorted(dep.groups.items()):
        total = max(g.desired_total, 1)
        bar = ProgressBar(
            total=total,
            completed=min(g.healthy_allocs, total),
            width=24,
            complete_style="red" if g.unhealthy_allocs else "green",
            finished_style="green",
        )
        deadline = "-"
        if dep.active() and g.require_progress_by is not None and now is not None:
            deadline = (
                f"{format_duration(float(round(max(0.0, g.require_progress_by - now))))} left"
            )
        t.add_row(
            escape(name),
            bar,
            f"{g.healthy_allocs}/{g.desired_total}",
            str(g.unhealthy_allocs),
            str(g.placed_allocs),
            _canaries(g),
            deadline,
        )
    lines.append(t)
    if hint and dep.active() and dep.has_unpromoted_canaries():
        lines.append(
            Text(
                f"Canaries wait for promotion: podium deployment promote {render.short(dep.id)}",
                style="yellow",
            )
        )
    return render.stack(*lines)


def _canaries(g: DeploymentGroup) -> str:
    if not g.desired_canaries:
        return "-"
    return f"{len(g.placed_canaries)}/{g.desired_canaries}" + (
        " promoted" if g.promoted else " (not promoted)"
    )


def deployment_lines(dep: Deployment) -> list[tuple[str, str]]:
    """The deployment as keyed plain lines, for a log: one for its status, one per group.

    No deadline countdown: a line changes only when the deployment does, so a
    watch without a terminal prints one line per change.
    """
    out = [
        (
            f"deployment {dep.id}",
            f"Deployment {render.short(dep.id)} of job {dep.job_id} version {dep.job_version}: "
            + render.said_once(dep.status.value, dep.status_description),
        )
    ]
    for name, g in sorted(dep.groups.items()):
        canaries = "" if not g.desired_canaries else f", canaries {_canaries(g)}"
        out.append(
            (
                f"deployment {dep.id} group {name}",
                f"  Group {name}: {g.healthy_allocs}/{g.desired_total} healthy, "
                f"{g.unhealthy_allocs} unhealthy, {g.placed_allocs} placed{canaries}",
            )
        )
    return out


def waiting_for_promotion(dep: Deployment) -> bool:
    """Every canary placed and healthy, and a person has to promote them."""
    groups = [g for g in dep.groups.values() if g.desired_canaries and not g.promoted]
    return bool(groups) and all(
        len(g.placed_canaries) >= g.desired_canaries and g.healthy_allocs >= g.desired_canaries
        for g in groups
    )


@app.command("list")
def list_(
    job: Annotated[str | None, typer.Option("--job", "-j", help="Only this job's.")] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Deployments, newest first."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        listed = client.query(endpoints.deployments(job))
        if output.structured:
            common.print_data(listed.raw, output)
            return
        con = common.console()
        if not listed.value:
            con.print("No deployments.")
            return
        t = render.table("ID", "Job", "Version", "Status", "Description")
        for d in listed.value:
            t.add_row(
                render.short(d.id),
                escape(d.job_id),
                str(d.job_version),
                render.status_text(d.status.value),
                escape(render.unrepeated(d.status.value, d.status_description) or "-"),
            )
        con.print(t)


@app.command("status")
def status(
    deployment_id: DeploymentArg,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow it until it ends (or waits for you).")
    ] = False,
    timeout: Annotated[str, typer.Option(help="How long --watch follows.")] = "30m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """One deployment: per group, healthy of desired, unhealthy, canaries, deadline."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        got = client.query(endpoints.deployment(deployment_id))
        dep = got.value
        raw = got.raw
        followed = watch and dep.active()
        if followed:
            try:
                seconds = parse_duration(timeout)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--timeout") from None
            deadline = common.Deadline(seconds)
            try:
                dep, raw = _follow(client, dep, deadline, show=not output.structured)
            except common.TimedOut:
                common.fail(
                    f"timed out after {format_duration(seconds)} following deployment "
                    f"{render.short(dep.id)} (it goes on; podium deployment status "
                    f"{render.short(dep.id)} shows it)",
                    common.EXIT_TIMEOUT,
                    kind="timeout",
                )
        if output.structured:
            common.print_data(raw, output)
        elif not followed:  # a followed one was shown as it went
            common.console().print(deployment_view(dep, time.time()))
    if dep.status == DeploymentStatus.FAILED:
        raise typer.Exit(common.EXIT_ERROR)


def _follow(
    client: Client, dep: Deployment, deadline: common.Deadline, *, show: bool
) -> tuple[Deployment, Any]:
    """Follow a deployment until it ends or waits for promotion; the last answer.

    On a terminal the view repaints in place; without one, a line per change
    (:func:`deployment_lines`), so a log gets the story and not a repaint per poll.
    """
    con = common.console()
    ends = endpoints.deployment(dep.id)
    raw: Any = None
    if show and common.interactive():
        with Live(deployment_view(dep, time.time()), console=con, auto_refresh=False) as live:
            for result in common.watch(client, ends, deadline):
                dep, raw = result.value, result.raw
                live.update(deployment_view(dep, time.time()), refresh=True)
                if not dep.active() or waiting_for_promotion(dep):
                    break
        return dep, raw
    log = common.ChangeLog(con)
    for result in common.watch(client, ends, deadline):
        dep, raw = result.value, result.raw
        if show:
            log.update(deployment_lines(dep))
        if not dep.active() or waiting_for_promotion(dep):
            break
    return dep, raw


@app.command("promote")
def promote(
    deployment_id: DeploymentArg,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="Promote only this group's canaries (repeatable)."),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """The canaries look good: replace the remaining instances with the new version."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        got = client.query(endpoints.promote_deployment(deployment_id, group))
        if output.structured:
            common.print_data(got.raw, output)
            return
        common.console().print(
            f"Deployment {escape(deployment_id)} promoted; evaluation "
            f"{render.short(got.value.eval_id)} rolls out the rest."
        )


@app.command("fail")
def fail(
    deployment_id: DeploymentArg,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Stop a deployment: canaries are removed and, with auto_revert, the job rolls back."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        got = client.query(endpoints.fail_deployment(deployment_id))
        if output.structured:
            common.print_data(got.raw, output)
            return
        dep = client.deployment(deployment_id)
        said = render.said_once(dep.status.value, dep.status_description)
        common.console().print(f"Deployment {render.short(dep.id)} {escape(said)}")
