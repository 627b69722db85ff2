"""``podium job ...``: run, plan, validate, status, scale, history, revert, stop, inspect."""

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

from podium.cli import common, job_restart, job_scaling, job_types, jobdiff, render
from podium.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PLACEMENT,
    EXIT_PLAN_ERROR,
    EXIT_TIMEOUT,
    AddressOpt,
    Deadline,
    Output,
    OutputOpt,
    TimedOut,
)
from podium.cli.deployment import deployment_lines, deployment_view, waiting_for_promotion
from podium.client import Client, GroupSummary, RegisterResult, endpoints
from podium.errors import Conflict, NotFound, PodiumError
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

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PLACEMENT",
    "EXIT_PLAN_ERROR",
    "EXIT_TIMEOUT",
    "RunMonitor",
    "TimeoutOpt",
    "app",
]

TimeoutOpt = Annotated[
    str, typer.Option("--timeout", help="How long to wait, as a duration (30s, 5m).")
]
FileArg = Annotated[Path, typer.Argument(help="The job file (YAML).", show_default=False)]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--timeout") from None


def _load_spec(path: Path) -> JobSpec:
    """Parse the job file here, so a bad one never reaches the server.

    A file that is not there is said to be missing, not "an invalid job
    specification": the remedy is a path, not an edit.
    """
    if not path.exists():
        common.fail(f"job file {path} does not exist", kind="file")
    if path.is_dir():
        common.fail(f"job file {path} is a directory, not a file", kind="file")
    try:
        from podium.spec import load_job_file
    except ImportError:
        common.fail("this build of podium has no job-file parser (podium.spec.load_job_file)")
    try:
        return load_job_file(path)
    except OSError as exc:
        common.fail(f"cannot read job file {path}: {exc.strerror or exc}", kind="file")


# -- run ---------------------------------------------------------------------------------


@app.command("run")
def run(
    file: FileArg,
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
    batch job: running or complete) or canaries wait for promotion; 1 when
    one fails or on any error; 3 when the scheduler could not place the job;
    4 when --timeout runs out first.  With -o json|yaml the registration
    answer is printed, and a failure is an error document on stderr.
    """
    wait_for = _duration(timeout)
    with common.handle_errors(str(file), output):
        spec = _load_spec(file)
        deadline = Deadline(wait_for)
        with common.make_client(address) as client:
            _adopt_namespace(client, spec)  # what follows the registration reads there
            try:
                result = client.query(endpoints.register_job(spec, check_index))
            except Conflict:
                if check_index is None:
                    raise
                common.fail(
                    _check_index_refusal(client, spec.id, check_index, file),
                    kind="conflict",
                    status=409,
                )
            reg = result.value
            quiet = output.structured
            if quiet:
                common.print_data(result.raw, output)
            else:
                for warning in reg.warnings:
                    common.err_console().print(f"[yellow]Warning:[/] {escape(warning)}")
            if detach or spec.periodic is not None or spec.parameterized is not None:
                if not quiet:
                    _print_registered(common.console(), spec, reg)
                    _print_template(common.console(), spec)
                return
            _follow_registration(RunMonitor(client, spec, reg, deadline, quiet=quiet))


def _print_template(con: Console, spec: JobSpec) -> None:
    """A periodic or parameterized job is not placed itself: say what happens instead."""
    if spec.periodic is not None:
        con.print(
            f"Periodic job: next launch {job_types.next_launch_text(spec.periodic)}; "
            f"each launch is a job {escape(spec.id)}/periodic-<time>."
        )
    elif spec.parameterized is not None:
        con.print(
            f"Parameterized job: run it with `podium job dispatch {escape(spec.id)}`; each "
            f"dispatch is a job {escape(spec.id)}/dispatch-<time>-<id>."
        )


def _adopt_namespace(client: Client, spec: JobSpec) -> None:
    """A job file's ``namespace:`` is where the job is, when -n and ``$PODIUM_NAMESPACE``
    name none: what follows the registration reads that namespace (the registration
    itself sends it: :attr:`podium.client.Endpoint.file_namespace`).  When both name one
    and they differ, the server refuses the registration (docs/namespaces.md)."""
    if spec.namespace is not None and client.namespace is None:
        client.namespace = spec.namespace


def _follow_registration(monitor: RunMonitor) -> None:
    """Run the monitor; exit with its status, with an error document when -o asks."""
    code = monitor.run()
    if code:
        if monitor.quiet:
            kind, message = monitor.failure()
            common.report(message, code, kind=kind)
        raise typer.Exit(code)


def _check_index_refusal(client: Client, job_id: str, wanted: int, file: Path) -> str:
    """Why ``--check-index`` refused, from the job's index now (the server's wording
    says "changed since" even when the job is at a lower index than the one given)."""
    try:
        have = client.query(endpoints.job(job_id)).value.job_modify_index
    except NotFound:
        have = 0
    plan_hint = f"`podium job plan {file}` shows the changes and the index to pass"
    if have == 0:
        return (
            f"job {job_id} does not exist, so it is not at modify index {wanted}: nothing was "
            "registered (--check-index 0 registers a new job)"
        )
    if wanted == 0:
        return (
            f"job {job_id} already exists (at modify index {have}), and --check-index 0 "
            f"registers only a new job: nothing was registered; {plan_hint}"
        )
    if have > wanted:
        return (
            f"job {job_id} changed since modify index {wanted}: it is at {have} now; nothing "
            f"was registered; {plan_hint}"
        )
    return (
        f"job {job_id} is at modify index {have}, not {wanted}: nothing was registered; {plan_hint}"
    )


# -- plan --------------------------------------------------------------------------------


@app.command("plan")
def plan(
    file: FileArg,
    diff: Annotated[
        bool, typer.Option("--diff/--no-diff", help="Show the changes to the running version.")
    ] = True,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Show what `job run` would do with a job file, changing nothing.

    Prints the differences from the running version (+ added, - removed,
    ~ changed), what the scheduler would do per group (create, destroy,
    in-place or create/destroy update) and what could not be placed, each
    task's resources (what is reserved for it, and its hard limit), then the
    job's modify index: `podium job run --check-index N` registers the file
    only if the job has not changed since this plan.  Exits 0 when nothing
    would change, 1 when the job would change or allocations would be created
    or destroyed, 255 on any error.
    """
    try:
        with common.handle_errors(str(file), output):
            spec = _load_spec(file)
            with common.make_client(address) as client:
                result = client.query(endpoints.plan_job(spec, diff))
    except typer.Exit as exc:
        raise typer.Exit(EXIT_PLAN_ERROR if exc.exit_code else 0) from None
    planned = result.value
    if output.structured:
        common.print_data(result.raw, output)
    else:
        con = common.console()
        for line in jobdiff.plan_lines(planned, str(file), spec):
            con.print(line, soft_wrap=True)
    raise typer.Exit(1 if planned.changed or planned.creates_or_destroys() else 0)


# -- validate ----------------------------------------------------------------------------


@app.command("validate")
def validate(file: FileArg, output: OutputOpt = Output.TABLE) -> None:
    """Check a job file as `job run` does before it sends anything; no server needed.

    Every issue is reported as FILE:LINE:COLUMN: field: message (hint).  Exits
    0 when the file is valid, 1 when it is not (or cannot be read).  With
    -o json|yaml a valid file prints {"valid": true, "file", "job", "spec"}
    (the spec with every default filled in); issues are an error document on
    stderr.
    """
    with common.handle_errors(str(file), output):
        spec = _load_spec(file)
    if output.structured:
        common.print_data(
            {
                "valid": True,
                "file": str(file),
                "job": spec.id,
                "spec": spec.model_dump(mode="json", exclude_none=True),
            },
            output,
        )
        return
    tasks = sum(len(g.tasks) for g in spec.groups.values())
    groups = len(spec.groups)
    common.console().print(
        f"{escape(str(file))}: job {escape(spec.id)!r} is valid ({spec.type}; "
        f"{groups} group{'s' if groups != 1 else ''}, {tasks} task{'s' if tasks != 1 else ''})",
        soft_wrap=True,
    )


def _print_registered(con: Console, spec: JobSpec, reg: RegisterResult) -> None:
    what = "registered" if reg.changed else "unchanged"
    con.print(
        f"Job [bold]{escape(spec.id)}[/] {what} (version {reg.version}); "
        f"evaluation [bold]{render.short(reg.eval_id)}[/] ({reg.eval_id})"
    )


FOLLOW_COUNTS_FROM = 50
"""From this many instances ``job run`` follows the job's counts, then checks the
allocations once: each answer of the allocation list is every allocation, parsed again
(~0.4 s of a 1,000-task run's CLI, beside the agent it shares the machine with)."""


class RunMonitor:
    """Follows one registration: its evaluation, then the allocations it placed.

    On a terminal the display is a rich ``Live`` redrawn on every change.
    Without one (a log, a pipe) nothing is redrawn: each change is one plain
    line (the evaluation's status, an allocation's, a deployment group's
    progress), printed once; then the end state (the table a terminal is left
    with) and the outcome.
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
        self.counts: dict[str, GroupSummary] | None = None
        """The job's allocations by state, while a large job is followed by its counts."""
        self.deployment: Deployment | None = None
        self.phase = "evaluating"
        self._live: Live | None = None
        self._log: common.ChangeLog | None = None

    def _header(self) -> str:
        return f"Job {self.spec.id} version {self.reg.version}" + (
            "" if self.reg.changed else " (unchanged)"
        )

    # The rendered view: eval line, then this version's allocations.
    def view(self) -> RenderableType:
        header = Text(self._header())
        header.stylize("bold", 4, 4 + len(self.spec.id))
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
        body = self.body()
        return top if body is None else render.stack(top, body)

    def body(self) -> RenderableType | None:
        """The deployment's progress, or this version's allocations (None: not yet placed)."""
        if self.phase == "evaluating":
            return None
        if self.deployment is not None:
            # the promotion hint is said once, by _report(), when the wait is certain
            return deployment_view(self.deployment, time.time(), hint=False)
        if self.counts is not None and not self.allocs:
            return Text(self._counts_text())
        allocs = self.allocs
        room = max(5, self.con.size.height - 8) if self._live is not None else len(allocs)
        if len(allocs) <= room:
            return render.allocs_table(allocs, title=None)
        # A live view redraws everything it holds on each change, and a screen shows only
        # so many rows: those not running yet first, then a count of the rest.
        shown = sorted(allocs, key=lambda a: a.client_status == ClientStatus.RUNNING)[:room]
        counts: dict[str, int] = {}
        for a in allocs:
            counts[a.client_status.value] = counts.get(a.client_status.value, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        more = Text(f"... and {len(allocs) - room} more ({len(allocs)} in all: {summary})")
        return RenderGroup(render.allocs_table(shown, title=None), more)

    def lines(self) -> list[tuple[str, str]]:
        """The state as keyed plain lines: what a log gets, a line per change."""
        out = [("job", self._header())]
        if self.eval is None:
            out.append(("eval", f"Evaluation {render.short(self.reg.eval_id)}: submitted"))
        else:
            plan = (
                f" (plan: {render.plan_text(self.eval.plan_summary)})"
                if self.eval.plan_summary
                else ""
            )
            out.append(
                ("eval", f"Evaluation {render.short(self.eval.id)}: {self.eval.status.value}{plan}")
            )
        if self.deployment is not None:
            out += deployment_lines(self.deployment)
        elif self.counts is not None:  # a large job: its counts, not a line per allocation
            out.append(("counts", self._counts_text()))
        elif self.phase != "evaluating":
            for a in sorted(self.allocs, key=lambda a: a.name):
                where = a.node_name or render.short(a.node_id)
                out.append(
                    (
                        f"alloc {a.id}",
                        f"Allocation {render.short(a.id)} {a.name} on {where}: "
                        f"{a.client_status.value}",
                    )
                )
        return out

    def run(self) -> int:
        if self.quiet:
            return self._follow()
        if not common.interactive():
            self._log = common.ChangeLog(self.con)
            code = self._follow()
            self._show()
            body = self.body()
            if body is not None:  # the end state, as a terminal is left with it
                self.con.print(body)
            return self._report(code)
        with Live(self.view(), console=self.con, auto_refresh=False) as live:
            self._live = live
            code = self._follow()
            live.update(self.view(), refresh=True)
        self._live = None
        return self._report(code)

    def _show(self) -> None:
        if self._live is not None:
            self._live.update(self.view(), refresh=True)
        elif self._log is not None:
            self._log.update(self.lines())

    def _follow(self) -> int:
        try:
            ev = self._wait_eval()
            if ev.status != EvalStatus.COMPLETE or ev.failed_tg_allocs:
                return EXIT_PLACEMENT if ev.failed_tg_allocs else EXIT_ERROR
            dep = self._new_deployment()
            if dep is not None:
                self.deployment = dep
                self.phase = "deploying"
                return self._wait_deployment(dep)
            self.phase = "placing"
            return self._wait_allocs()
        except TimedOut:
            self.phase = "timeout"
            return EXIT_TIMEOUT

    def _wait_eval(self) -> Evaluation:
        for result in common.watch(
            self.client, endpoints.evaluation(self.reg.eval_id), self.deadline
        ):
            self.eval = result.value
            self._show()
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

    def _wait_deployment(self, dep: Deployment) -> int:
        for result in common.watch(self.client, endpoints.deployment(dep.id), self.deadline):
            self.deployment = result.value
            self._show()
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

    def _counts_text(self) -> str:
        """``Allocations: 640/1000 running, 360 pending``: the job's, every version's."""
        totals: dict[str, int] = {}
        for group in (self.counts or {}).values():
            for state, n in group.model_dump().items():
                if n:
                    totals[state] = totals.get(state, 0) + n
        running = totals.pop("running", 0)
        rest = "".join(f", {n} {state}" for state, n in sorted(totals.items()))
        return f"Allocations: {running}/{self._wanted()} running{rest}"

    def _wait_counts(self) -> None:
        """Follow a large job by its summary (a few counts per answer, not every
        allocation parsed again on every change) until it says everything could be
        running or something failed; the allocations are then checked one by one."""
        for result in common.watch(self.client, endpoints.job(self.spec.id), self.deadline):
            self.counts = result.value.summary
            self._show()
            groups = self.counts.values()
            if any(g.failed or g.lost for g in groups):
                return  # this version's, or an older one's: the allocations say which
            if not any(g.pending or g.queued for g in groups) and (
                sum(g.running + g.complete for g in groups) >= self._wanted()
            ):
                return

    def _wait_allocs(self) -> int:
        if self._wanted() >= FOLLOW_COUNTS_FROM:
            self._wait_counts()
        ok = {ClientStatus.RUNNING}
        if self.spec.type == JobType.BATCH:
            ok.add(ClientStatus.COMPLETE)
        # all=True: a batch job's completed allocations are terminal, and they count.
        ep = endpoints.job_allocations(self.spec.id, all=True)
        for result in common.watch(self.client, ep, self.deadline):
            self.allocs = self._mine(result.value)
            self._show()
            if any(
                a.client_status in (ClientStatus.FAILED, ClientStatus.LOST) for a in self.allocs
            ):
                self.phase = "failed"
                return EXIT_ERROR
            # running means every task is up, not one of them waiting to be restarted
            # (lifecycle hooks that run to completion are not: docs/lifecycle.md)
            done = [
                a
                for a in self.allocs
                if a.client_status in ok
                and (
                    a.client_status != ClientStatus.RUNNING
                    or all(
                        t.state == TaskStateName.RUNNING
                        for name, t in a.task_states.items()
                        if self._stays_up(a.group, name)
                    )
                )
            ]
            if len(done) >= self._wanted() and len(done) == len(self.allocs):
                self.phase = "done"
                return EXIT_OK
        raise AssertionError("unreachable")  # pragma: no cover

    def _stays_up(self, group: str, task: str) -> bool:
        """Whether the task runs as long as its allocation: a main task or a sidecar, not
        a lifecycle hook that runs to completion."""
        spec = self.spec.groups.get(group)
        found = spec.tasks.get(task) if spec is not None else None
        return found is None or found.lifecycle is None or found.lifecycle.sidecar

    def _timeout_text(self) -> str:
        ev = self.eval
        waiting = "allocations" if ev is not None and ev.terminal() else "the evaluation"
        if self.deployment is not None:
            waiting = f"deployment {render.short(self.deployment.id)}"
        return (
            f"Timed out after {format_duration(self.deadline.seconds)} waiting for {waiting} "
            "(the job goes on; podium job status shows it)"
        )

    def failure(self) -> tuple[str, str]:
        """Why the run did not succeed, as an error document's (kind, message)."""
        ev = self.eval
        if self.phase == "timeout":
            return "timeout", self._timeout_text()
        if ev is not None and ev.failed_tg_allocs:
            return "placement", "placement failed: " + "; ".join(
                render.placement_failures(ev.failed_tg_allocs, ev)
            )
        if ev is not None and ev.status != EvalStatus.COMPLETE:
            detail = f": {ev.status_description}" if ev.status_description else ""
            return "failed", f"evaluation {render.short(ev.id)} {ev.status.value}{detail}"
        if self.phase == "deploy-failed" and self.deployment is not None:
            dep = self.deployment
            return "failed", (
                f"deployment {render.short(dep.id)} "
                + render.said_once(dep.status.value, dep.status_description)
            )
        failed = [
            a for a in self.allocs if a.client_status in (ClientStatus.FAILED, ClientStatus.LOST)
        ]
        if failed:
            return "failed", "; ".join(
                f"allocation {render.short(a.id)} ({a.name}) {a.client_status.value}"
                + (f": {a.client_description}" if a.client_description else "")
                for a in failed
            )
        return "error", "the job did not start"

    def _report(self, code: int) -> int:
        """What to say once the live view has stopped: success, or why not."""
        con, ev = self.con, self.eval
        if self.phase == "timeout":
            con.print(f"[red]{escape(self._timeout_text())}[/]", soft_wrap=True)
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
            dep = self.deployment
            said = render.said_once(dep.status.value, dep.status_description)
            con.print(
                f"[bold red]Deployment {render.short(dep.id)} {escape(said)}[/]", soft_wrap=True
            )
        elif self.phase == "promote" and self.deployment is not None:
            con.print(
                "[yellow]Canaries are healthy and wait for promotion:[/] "
                f"podium deployment promote {render.short(self.deployment.id)} "
                f"(or podium deployment fail {render.short(self.deployment.id)})",
                soft_wrap=True,
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
    children: Annotated[
        bool,
        typer.Option(
            "--children",
            help="List periodic launches and dispatches too (each under its parent's "
            "row by default only counted).",
        ),
    ] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """List jobs, or show one: summary, deployment, placement failures, allocations, events.

    The list counts each job's allocations per state (5 running, 3 complete);
    one job's view ends with the newest events of its tasks.  Children of periodic and
    parameterized jobs are left out of the list (their parent's row counts them) unless
    --children; a parent's own view lists them.
    """
    with common.handle_errors(output=output), common.make_client(address) as client:
        con = common.console()
        if job_id is None:
            listed = client.query(endpoints.jobs())
            if output.structured:
                common.print_data(listed.raw, output)
                return
            if not listed.value:
                con.print("No jobs.")
                return
            every = client.namespace == "*"
            columns = ("ID", "Type", "Priority", "Status", "Version", "Allocs", "Submitted")
            t = render.table(*(("Namespace", *columns) if every else columns))
            kids = job_types.count_children(listed.value)
            for j in sorted(listed.value, key=lambda j: (j.namespace, j.id)):
                if j.parent_id and not children:
                    continue
                t.add_row(
                    *((escape(j.namespace),) if every else ()),
                    escape(j.id),
                    f"{j.type}/{j.kind}" if j.kind else j.type,
                    str(j.priority),
                    render.status_text("stopped" if j.stop else j.status.value),
                    str(j.version),
                    job_types.children_text(kids.get((j.namespace, j.id)))
                    if j.kind
                    else render.alloc_counts(j.summary),
                    render.age(j.submit_time),
                )
            con.print(t)
            return

        got = client.query(endpoints.job(job_id))
        if output.structured:
            common.print_data(got.raw, output)
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
            *job_types.status_rows(job),
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
        if job.spec.periodic is not None or job.spec.parameterized is not None:
            con.print(
                render.stack(
                    render.fields(rows), job_types.children_table(client.job_children(job.id))
                )
            )
            return
        con.print(
            render.stack(
                render.fields(rows),
                render.summary_table(job.summary) if job.summary else None,
                latest_deployment,
                failures,
                render.allocs_table(allocs) if allocs else Text("No allocations."),
                render.recent_events(allocs),
            )
        )


# -- scale, history, stop, inspect -------------------------------------------------------


@app.command("scale")
def scale(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id or unique prefix.")],
    group: Annotated[str, typer.Argument(help="The group to scale.")],
    count: Annotated[int, typer.Argument(min=0, help="The new number of allocations.")],
    message: Annotated[
        str, typer.Option("--message", "-m", help="Why: kept on the version and scaling event.")
    ] = "",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Set a group's count; the server stores a new version and evaluates it (a group
    with scaling bounds refuses a count outside them)."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.scale_job(job_id, group, count, message))
        if output.structured:
            common.print_data(result.raw, output)
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
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.job_versions(job_id))
        if output.structured:
            common.print_data(result.raw, output)
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

    The new version rolls out as any other does: with an update block that has
    canaries, they start beside the running version and wait for `podium
    deployment promote` (said when it happens).  Exit statuses are those of
    `job run`.
    """
    deadline = Deadline(_duration(timeout))
    with common.handle_errors(output=output), common.make_client(address) as client:
        full_id = client.job(job_id).id  # resolve a prefix before acting on it
        result = client.query(endpoints.revert_job(full_id, version, enforce_prior_version))
        reg = result.value
        quiet = output.structured
        spec = client.job(full_id).spec
        if quiet:
            common.print_data(result.raw, output)
        else:
            con = common.console()
            what = f"new version {reg.version}" if reg.changed else f"version {reg.version}"
            con.print(
                f"Job [bold]{escape(full_id)}[/] reverted to version {version} ({what}); "
                f"evaluation [bold]{render.short(reg.eval_id)}[/] ({reg.eval_id})"
            )
            note = canary_note(spec) if reg.changed else None
            if note:
                con.print(f"[yellow]{escape(note)}[/]", soft_wrap=True)
        if detach:
            return
        _follow_registration(RunMonitor(client, spec, reg, deadline, quiet=quiet))


def canary_note(spec: JobSpec) -> str | None:
    """What a revert to ``spec`` will wait for: a reverted version rolls out like any new
    one, so an update block with canaries starts them and (without auto_promote)
    waits for a person to promote them, the old version running meanwhile."""
    waiting: list[str] = []
    auto: list[str] = []
    for name in sorted(spec.groups):
        strategy = spec.update_strategy(name)
        if strategy is None or not strategy.canary:
            continue
        (auto if strategy.auto_promote else waiting).append(f"{name} ({strategy.canary})")
    if waiting:
        return (
            "The reverted version rolls out like any new one: canaries start first in group "
            + ", ".join(waiting)
            + " and wait for `podium deployment promote` (the current version keeps running "
            "until then)."
        )
    if auto:
        return (
            "The reverted version rolls out like any new one: canaries start first in group "
            + ", ".join(auto)
            + " and are promoted once healthy."
        )
    return None


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
    with common.handle_errors(output=output), common.make_client(address) as client:
        full_id = client.job(job_id).id  # resolve a prefix before acting on it
        result = client.query(endpoints.stop_job(full_id, purge))
        con = common.console()
        if output.structured:
            common.print_data(result.raw, output)
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
                f"{len(left)} allocation(s) still stopping",
                EXIT_TIMEOUT,
                kind="timeout",
            )
        if not output.structured:
            con.print(f"Job {escape(full_id)} stopped.")


@app.command("inspect")
def inspect(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="A job id or unique prefix.")],
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Print the job's current spec as JSON, or YAML with -o yaml (every default filled in)."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(endpoints.job(job_id))
        raw = result.raw
        spec = raw.get("spec") if isinstance(raw, dict) else None
        if spec is None:
            raise PodiumError("the server's answer has no spec")
        # JSON unless YAML is asked for: it is meant to be copied, and rich would wrap it.
        common.print_data(spec, output)


# podium job restart: podium.cli.job_restart (issue 16)
job_restart.install(app)
# podium job scaling-events: podium.cli.job_scaling (issue 17, docs/autoscaling.md)
job_scaling.install(app)
# podium job dispatch, podium job periodic force: podium.cli.job_types (issue 17)
job_types.install(app)
