"""``podium job ...``: run, plan, status, scale, history, revert, stop, inspect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.console import Group as RenderGroup
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from podium.cli import common, jobdiff, render
from podium.cli.common import AddressOpt, Deadline, Output, OutputOpt, TimedOut
from podium.cli.deployment import deployment_view, waiting_for_promotion
from podium.client import Client, RegisterResult, endpoints
from podium.errors import PodiumError
from podium.models import (
    Allocation,
    ClientStatus,
    Deployment,
    DeploymentStatus,
    DesiredStatus,
    EvalStatus,
    Evaluation,
    JobSpec,
    JobType,
    TaskStateName,
    format_duration,
    parse_duration,
)

app = typer.Typer(help="Run, inspect, scale and stop jobs.", no_args_is_help=True)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PLACEMENT = 2
EXIT_PLAN_ERROR = 255

TimeoutOpt = Annotated[
    str, typer.Option("--timeout", help="How long to wait, as a duration (30s, 5m).")
]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--timeout") from None


def _load_spec(path: Path) -> JobSpec:
    """Parse the job file here, so a bad file never reaches the server."""
    try:
        from podium.spec import load_job_file
    except ImportError:
        common.fail("this build of podium has no job-file parser (podium.spec.load_job_file)")
    try:
        return load_job_file(path)
    except OSError as exc:
        common.fail(f"cannot read {path}: {exc.strerror or exc}")


# -- run ---------------------------------------------------------------------------------


@app.command("run")
def run(
    file: Annotated[Path, typer.Argument(help="The job file (YAML).", show_default=False)],
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once the job is registered.")
    ] = False,
    check_index: Annotated[
        int | None,
        typer.Option(
            "--check-index",
            help="Register only if the job's modify index is still N (0: only if it is new).",
        ),
    ] = None,
    timeout: TimeoutOpt = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Register a job file and follow it until its allocations run.

    The file is checked here first; a bad one is reported and nothing is
    sent.  Exits 0 when every allocation of the new version is running (for a
    batch job: running or complete), 1 when one fails or on any error, and 2
    when the scheduler could not place the job.  With -o json the registration
    answer is printed and the exit status alone tells how the run went.
    """
    wait_for = _duration(timeout)
    with common.handle_errors(str(file)):
        spec = _load_spec(file)
        deadline = Deadline(wait_for)
        with common.make_client(address) as client:
            result = client.query(endpoints.register_job(spec, check_index))
            reg = result.value
            quiet = output == Output.JSON
            if quiet:
                common.print_json(result.raw)
            else:
                for warning in reg.warnings:
                    common.err_console().print(f"[yellow]Warning:[/] {escape(warning)}")
            if detach:
                if not quiet:
                    _print_registered(common.console(), spec, reg)
                return
            code = RunMonitor(client, spec, reg, deadline, quiet=quiet).run()
    if code:
        raise typer.Exit(code)


# -- plan --------------------------------------------------------------------------------


@app.command("plan")
def plan(
    file: Annotated[Path, typer.Argument(help="The job file (YAML).", show_default=False)],
    diff: Annotated[
        bool, typer.Option("--diff/--no-diff", help="Show the changes to the running version.")
    ] = True,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Show what `job run` would do with a job file, changing nothing.

    Prints the differences from the running version (+ added, - removed,
    ~ changed), what the scheduler would do per group (create, destroy,
    in-place or create/destroy update) and what could not be placed, then the
    job's modify index: `podium job run --check-index N` registers the file
    only if the job has not changed since this plan.  Exits 0 when nothing
    would change, 1 when the job would change or allocations would be created
    or destroyed, 255 on any error.
    """
    try:
        with common.handle_errors(str(file)):
            spec = _load_spec(file)
            with common.make_client(address) as client:
                result = client.query(endpoints.plan_job(spec, diff))
    except typer.Exit as exc:
        raise typer.Exit(EXIT_PLAN_ERROR if exc.exit_code else 0) from None
    planned = result.value
    if output == Output.JSON:
        common.print_json(result.raw)
    else:
        con = common.console()
        for line in jobdiff.plan_lines(planned, str(file)):
            con.print(line, soft_wrap=True)
    raise typer.Exit(1 if planned.changed or planned.creates_or_destroys() else 0)


def _print_registered(con: Console, spec: JobSpec, reg: RegisterResult) -> None:
    what = "registered" if reg.changed else "unchanged"
    con.print(
        f"Job [bold]{escape(spec.id)}[/] {what} (version {reg.version}); "
        f"evaluation [bold]{render.short(reg.eval_id)}[/] ({reg.eval_id})"
    )


class RunMonitor:
    """Follows one registration: its evaluation, then the allocations it placed.

    The display is a rich ``Live`` that is redrawn on every change; on a
    non-terminal only the final state is printed, which keeps logs readable.
    """

    def __init__(
        self,
        client: Client,
        spec: JobSpec,
        reg: RegisterResult,
        deadline: Deadline,
        *,
        quiet: bool = False,
    ) -> None:
        self.client = client
        self.spec = spec
        self.reg = reg
        self.deadline = deadline
        self.quiet = quiet
        self.con = common.console()
        self.eval: Evaluation | None = None
        self.allocs: list[Allocation] = []
        self.deployment: Deployment | None = None
        self.phase = "evaluating"

    # The rendered view: eval line, then this version's allocations.
    def view(self) -> RenderableType:
        header = Text.from_markup(
            f"Job [bold]{escape(self.spec.id)}[/] version {self.reg.version}"
            + ("" if self.reg.changed else " (unchanged)")
        )
        if self.eval is None:
            ev_line = Text(f"Evaluation {render.short(self.reg.eval_id)}: submitted")
        else:
            ev_line = Text.assemble(
                f"Evaluation {render.short(self.eval.id)}: ",
                render.status_text(self.eval.status.value),
            )
            if self.eval.plan_summary:
                ev_line.append(f" (plan: {render.plan_text(self.eval.plan_summary)})")
        top = RenderGroup(header, ev_line)
        if self.phase == "evaluating":
            return top
        if self.deployment is not None:
            return render.stack(top, deployment_view(self.deployment, time.time()))
        return render.stack(top, render.allocs_table(self.allocs, title=None))

    def run(self) -> int:
        if self.quiet:
            return self._follow(None)
        with Live(self.view(), console=self.con, auto_refresh=False) as live:
            code = self._follow(live)
            live.update(self.view(), refresh=True)
        if not self.con.is_terminal:
            self.con.line()  # Live ends its last frame with a newline only on terminals
        return self._report(code)

    def _refresh(self, live: Live | None) -> None:
        if live is not None:
            live.update(self.view(), refresh=True)

    def _follow(self, live: Live | None) -> int:
        try:
            ev = self._wait_eval(live)
            if ev.status != EvalStatus.COMPLETE or ev.failed_tg_allocs:
                return EXIT_PLACEMENT if ev.failed_tg_allocs else EXIT_ERROR
            dep = self._new_deployment()
            if dep is not None:
                self.deployment = dep
                self.phase = "deploying"
                return self._wait_deployment(live, dep)
            self.phase = "placing"
            return self._wait_allocs(live)
        except TimedOut:
            self.phase = "timeout"
            return EXIT_ERROR

    def _wait_eval(self, live: Live | None) -> Evaluation:
        for result in common.watch(
            self.client, endpoints.evaluation(self.reg.eval_id), self.deadline
        ):
            self.eval = result.value
            self._refresh(live)
            if self.eval.terminal():
                return self.eval
        raise AssertionError("unreachable")  # pragma: no cover

    def _new_deployment(self) -> Deployment | None:
        """The deployment this registration started, if the job rolls out (update block)."""
        if not self.reg.changed or self.spec.type != JobType.SERVICE:
            return None
        if not any(self.spec.update_strategy(g) for g in self.spec.groups):
            return None
        dep = self.client.job_deployment(self.spec.id)
        if dep is None or dep.job_version != self.reg.version:
            return None  # nothing to roll out (say, only in-place changes)
        return dep

    def _wait_deployment(self, live: Live | None, dep: Deployment) -> int:
        for result in common.watch(self.client, endpoints.deployment(dep.id), self.deadline):
            self.deployment = result.value
            self._refresh(live)
            if self.deployment.status == DeploymentStatus.SUCCESSFUL:
                self.phase = "deployed"
                return EXIT_OK
            if not self.deployment.active():
                self.phase = "deploy-failed"
                return EXIT_ERROR
            if waiting_for_promotion(self.deployment):
                self.phase = "promote"
                return EXIT_OK
        raise AssertionError("unreachable")  # pragma: no cover

    def _mine(self, allocs: list[Allocation]) -> list[Allocation]:
        """This version's allocations that are meant to run and not already replaced."""
        return [
            a
            for a in allocs
            if a.job_version == self.reg.version
            and a.desired_status == DesiredStatus.RUN
            and not a.next_allocation
        ]

    def _wanted(self) -> int:
        return sum(g.count for g in self.spec.groups.values())

    def _wait_allocs(self, live: Live | None) -> int:
        ok = {ClientStatus.RUNNING}
        if self.spec.type == JobType.BATCH:
            ok.add(ClientStatus.COMPLETE)
        # all=True: a batch job's completed allocations are terminal, and they count.
        ep = endpoints.job_allocations(self.spec.id, all=True)
        for result in common.watch(self.client, ep, self.deadline):
            self.allocs = self._mine(result.value)
            self._refresh(live)
            if any(
                a.client_status in (ClientStatus.FAILED, ClientStatus.LOST) for a in self.allocs
            ):
                self.phase = "failed"
                return EXIT_ERROR
            # running means every task is up, not one of them waiting to be restarted
            done = [
                a
                for a in self.allocs
                if a.client_status in ok
                and (
                    a.client_status != ClientStatus.RUNNING
                    or all(t.state == TaskStateName.RUNNING for t in a.task_states.values())
                )
            ]
            if len(done) >= self._wanted() and len(done) == len(self.allocs):
                self.phase = "done"
                return EXIT_OK
        raise AssertionError("unreachable")  # pragma: no cover

    def _report(self, code: int) -> int:
        """What to say once the live view has stopped: success, or why not."""
        con, ev = self.con, self.eval
        if self.phase == "timeout":
            waiting = "allocations" if ev is not None and ev.terminal() else "the evaluation"
            con.print(
                f"[red]Timed out[/] after {format_duration(self.deadline.seconds)} "
                f"waiting for {waiting}"
            )
        elif ev is not None and ev.failed_tg_allocs:
            con.print("[bold red]Placement failed[/]")
            for line in render.placement_failures(ev.failed_tg_allocs, ev):
                con.print("  " + escape(line), soft_wrap=True)
            if ev.blocked_eval:
                con.print(
                    f"Evaluation {render.short(ev.blocked_eval)} is blocked: the job will be "
                    "placed when capacity appears."
                )
        elif ev is not None and ev.status != EvalStatus.COMPLETE:
            detail = f": {ev.status_description}" if ev.status_description else ""
            con.print(f"[red]Evaluation {render.short(ev.id)} {ev.status.value}{escape(detail)}[/]")
        elif self.phase == "failed":
            for alloc in self.allocs:
                if alloc.client_status in (ClientStatus.FAILED, ClientStatus.LOST):
                    _print_failure(con, alloc)
        elif self.phase == "deployed" and self.deployment is not None:
            con.print(
                f"[green]Deployment {render.short(self.deployment.id)} successful: every "
                "instance of the new version is healthy.[/]"
            )
        elif self.phase == "deploy-failed" and self.deployment is not None:
            con.print(
                f"[bold red]Deployment {render.short(self.deployment.id)} "
                f"{self.deployment.status.value}[/]: {escape(self.deployment.status_description)}",
                soft_wrap=True,
            )
        elif self.phase == "promote" and self.deployment is not None:
            con.print(
                "[yellow]Canaries are healthy and wait for promotion:[/] "
                f"podium deployment promote {render.short(self.deployment.id)} "
                f"(or podium deployment fail {render.short(self.deployment.id)})"
            )
        elif self.phase == "done":
            n = len(self.allocs)
            state = "running" if self.spec.type == JobType.SERVICE else "running or complete"
            con.print(f"[green]All {n} allocation{'s' if n != 1 else ''} {state}.[/]")
        return code


def _print_failure(con: Console, alloc: Allocation) -> None:
    desc = f": {alloc.client_description}" if alloc.client_description else ""
    con.print(
        f"[bold red]Allocation {render.short(alloc.id)} ({escape(alloc.name)}) "
        f"{alloc.client_status.value}[/]{escape(desc)}",
        soft_wrap=True,
    )
    for name, state in sorted(alloc.task_states.items()):
        if not state.events:
            continue
        con.print(f'Task "{escape(name)}" events:')
        con.print(render.events_table(state.events[-5:]))


# -- status ------------------------------------------------------------------------------


@app.command("status")
def status(
    job_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A job id or unique prefix.")
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """List jobs, or show one job: summary, placement failures and allocations."""
    with common.handle_errors(), common.make_client(address) as client:
        con = common.console()
        if job_id is None:
            listed = client.query(endpoints.jobs())
            if output == Output.JSON:
                common.print_json(listed.raw)
                return
            if not listed.value:
                con.print("No jobs.")
                return
            t = render.table("ID", "Type", "Priority", "Status", "Version", "Allocs", "Submitted")
            for j in sorted(listed.value, key=lambda j: j.id):
                running = sum(s.running for s in j.summary.values())
                total = sum(
                    s.pending + s.running + s.complete + s.failed + s.lost
                    for s in j.summary.values()
                )
                t.add_row(
                    escape(j.id),
                    j.type,
                    str(j.priority),
                    render.status_text("stopped" if j.stop else j.status.value),
                    str(j.version),
                    f"{running}/{total} running",
                    render.age(j.submit_time),
                )
            con.print(t)
            return

        got = client.query(endpoints.job(job_id))
        if output == Output.JSON:
            common.print_json(got.raw)
            return
        job = got.value
        allocs = client.job_allocations(job.id, all=True)
        evals = client.job_evaluations(job.id)
        rows: list[tuple[str, object]] = [
            ("ID", job.id),
            ("Type", job.type),
            ("Priority", job.priority),
            ("Status", job.status.value + (" (stopped)" if job.stop else "")),
            ("Version", job.version),
            ("Submitted", render.age(job.submit_time)),
        ]
        failures = None
        latest = render.placement_eval(evals)
        if latest is not None:
            failures = RenderGroup(
                Text(f"Placement Failure (evaluation {render.short(latest.id)})", style="bold"),
                *[
                    Text(line, style="red")
                    for line in render.placement_failures(latest.failed_tg_allocs, latest)
                ],
            )
        deployment = client.job_deployment(job.id)
        latest_deployment = None
        if deployment is not None:
            latest_deployment = RenderGroup(
                Text("Latest Deployment", style="bold"),
                deployment_view(deployment, time.time()),
            )
        con.print(
            render.stack(
                render.fields(rows),
                render.summary_table(job.summary) if job.summary else None,
                latest_deployment,
                failures,
                render.allocs_table(allocs) if allocs else Text("No allocations."),
            )
        )


# -- scale, history, stop, inspect -------------------------------------------------------


@app.command("scale")
def scale(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id or unique prefix.")],
    group: Annotated[str, typer.Argument(help="The group to scale.")],
    count: Annotated[int, typer.Argument(min=0, help="The new number of allocations.")],
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Set a group's count; the server stores a new version and evaluates it."""
    with common.handle_errors(), common.make_client(address) as client:
        result = client.query(endpoints.scale_job(job_id, group, count))
        if output == Output.JSON:
            common.print_json(result.raw)
            return
        r = result.value
        common.console().print(
            f"Scaled {escape(job_id)}/{escape(group)} to {count} (version {r.version}); "
            f"evaluation {render.short(r.eval_id)} ({r.eval_id})"
        )


@app.command("history")
def history(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id or unique prefix.")],
    diff: Annotated[
        bool,
        typer.Option("--diff", "-p", help="Each version with its changes, coloured, in full."),
    ] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """The job's stored versions, newest first, with what changed in each."""
    with common.handle_errors(), common.make_client(address) as client:
        result = client.query(endpoints.job_versions(job_id))
        if output == Output.JSON:
            common.print_json(result.raw)
            return
        con = common.console()
        if diff:
            newest = max((v.version for v in result.value), default=None)
            for n, v in enumerate(result.value):
                if n:
                    con.line()
                for line in jobdiff.version_lines(v, current=v.version == newest):
                    con.print(line, soft_wrap=True)
            return
        t = render.table("Version", "Stop", "Submitted", "Changes")
        for v in result.value:
            changes = ([v.description] if v.description else []) + v.diff
            t.add_row(
                str(v.version),
                "yes" if v.stop else "no",
                render.age(v.submit_time),
                escape("\n".join(changes)) if changes else "-",
            )
        con.print(t)


@app.command("revert")
def revert(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id or unique prefix.")],
    version: Annotated[int, typer.Argument(min=0, help="The version to go back to.")],
    enforce_prior_version: Annotated[
        int | None,
        typer.Option(
            "--enforce-prior-version",
            help="Revert only if the job is still at version N.",
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once the job is reverted.")
    ] = False,
    timeout: TimeoutOpt = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Register an older version's spec again, as a new version, and follow it like `run`.

    Exit statuses are those of `job run`.
    """
    deadline = Deadline(_duration(timeout))
    with common.handle_errors(), common.make_client(address) as client:
        full_id = client.job(job_id).id  # resolve a prefix before acting on it
        result = client.query(endpoints.revert_job(full_id, version, enforce_prior_version))
        reg = result.value
        quiet = output == Output.JSON
        if quiet:
            common.print_json(result.raw)
        else:
            what = f"new version {reg.version}" if reg.changed else f"version {reg.version}"
            common.console().print(
                f"Job [bold]{escape(full_id)}[/] reverted to version {version} ({what}); "
                f"evaluation [bold]{render.short(reg.eval_id)}[/] ({reg.eval_id})"
            )
        if detach:
            return
        spec = client.job(full_id).spec
        code = RunMonitor(client, spec, reg, deadline, quiet=quiet).run()
    if code:
        raise typer.Exit(code)


@app.command("stop")
def stop(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id or unique prefix.")],
    purge: Annotated[
        bool, typer.Option("--purge", help="Also forget the job and its history.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Do not wait for allocations to stop.")
    ] = False,
    timeout: TimeoutOpt = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Stop a job, then wait until its allocations' tasks have exited."""
    deadline = Deadline(_duration(timeout))
    with common.handle_errors(), common.make_client(address) as client:
        full_id = client.job(job_id).id  # resolve a prefix before acting on it
        result = client.query(endpoints.stop_job(full_id, purge))
        con = common.console()
        if output == Output.JSON:
            common.print_json(result.raw)
        else:
            ev = (
                f"; evaluation {render.short(result.value.eval_id)}" if result.value.eval_id else ""
            )
            con.print(f"Stopping job {escape(full_id)}{ev}")
        if detach:
            return
        left: list[Allocation] = []
        try:
            for listed in common.watch(client, endpoints.allocations(job_id=full_id), deadline):
                left = [a for a in listed.value if a.job_id == full_id and not a.client_terminal()]
                if not left:
                    break
        except TimedOut:
            common.fail(
                f"timed out after {format_duration(deadline.seconds)}: "
                f"{len(left)} allocation(s) still stopping"
            )
        if output != Output.JSON:
            con.print(f"Job {escape(full_id)} stopped.")


@app.command("inspect")
def inspect(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id or unique prefix.")],
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Print the job's current spec as JSON (with every default filled in)."""
    with common.handle_errors(), common.make_client(address) as client:
        result = client.query(endpoints.job(job_id))
        raw = result.raw
        spec = raw.get("spec") if isinstance(raw, dict) else None
        if spec is None:
            raise PodiumError("the server's answer has no spec")
        # Plain JSON in both formats: it is meant to be copied, and rich would wrap it.
        common.print_json(spec)
