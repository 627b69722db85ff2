"""``podium compose ...``: run a Docker Compose project on Podium.

``convert`` shows the jobs a compose file becomes, ``up`` registers them and
follows them like ``podium job run``, ``down`` stops (and purges) them and
``ps`` lists their allocations.  The conversion itself lives in
:mod:`podium.spec.compose`; ``docs/compose.md`` says what maps to what.

A project's jobs are found on the server by their ``compose.project`` meta key,
so ``down`` and ``ps`` need only the project name (``--project``, or the file's
``name:``, or its directory), not a file that still parses to the same jobs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from podium.cli import common, render
from podium.cli.common import AddressOpt, Deadline, Output, OutputOpt, TimedOut
from podium.cli.job import EXIT_OK, RunMonitor, TimeoutOpt, _duration
from podium.client import Client, endpoints
from podium.errors import NotFound, SpecError
from podium.models import Allocation, JobSpec, format_duration
from podium.spec import ComposeProject, find_compose_file, load_compose_project

app = typer.Typer(
    help="Run a Docker Compose project (compose.yaml) as Podium jobs.", no_args_is_help=True
)

PROJECT_META = "compose.project"

FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="The compose file (default: compose.yaml or docker-compose.yml here).",
        show_default=False,
    ),
]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        help="Project name (default: name: in the file, else the file's directory).",
        show_default=False,
    ),
]
DetachOpt = Annotated[
    bool, typer.Option("--detach", "-d", help="Return once the jobs are registered.")
]


def _compose_file(file: Path | None) -> Path:
    if file is not None:
        return file
    found = find_compose_file(Path.cwd())
    if found is None:
        common.fail(
            "no compose file here (compose.yaml, compose.yml, docker-compose.yaml or "
            "docker-compose.yml); pass one with -f"
        )
    return found


def _load(file: Path | None, project: str | None) -> ComposeProject:
    """Convert the compose file; warnings go to stderr."""
    path = _compose_file(file)
    try:
        converted = load_compose_project(path, project)
    except SpecError as exc:
        _print_compose_error(exc)
        raise typer.Exit(1) from None
    err = common.err_console()
    for warning in converted.warnings:
        err.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
    return converted


def _print_compose_error(exc: SpecError) -> None:
    out = common.err_console()
    n = len(exc.issues)
    out.print(f"[bold red]Error:[/] invalid compose file ({n} issue{'s' if n != 1 else ''})")
    for issue in exc.issues:
        out.print(escape(issue.render(exc.source)), soft_wrap=True, style="red")


def _project_name(file: Path | None, project: str | None) -> str:
    """The project ``down`` and ``ps`` act on; the file is read only when needed."""
    if project:
        return project
    env_name = os.environ.get("COMPOSE_PROJECT_NAME")
    if env_name:
        return env_name
    return _load(file, None).name


def _doc(spec: JobSpec, *, full: bool) -> dict[str, Any]:
    if full:
        return spec.model_dump(mode="json", exclude_none=True)
    # A job file as a person would write it: what differs from the defaults.
    return spec.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


# -- convert -----------------------------------------------------------------------------


@app.command("convert")
def convert(
    file: FileOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Print the job specs the compose file becomes: YAML documents, or a JSON list.

    The YAML is what ``podium job run`` accepts (defaults left out); the JSON is
    the full spec of each job, every default filled in.
    """
    with common.handle_errors(str(file) if file else None):
        converted = _load(file, project)
        if output == Output.JSON:
            common.print_json([_doc(j, full=True) for j in converted.jobs])
            return
        docs = [_doc(j, full=False) for j in converted.jobs]
        typer.echo(
            yaml.safe_dump_all(docs, sort_keys=False, explicit_start=len(docs) > 1), nl=False
        )


# -- up ----------------------------------------------------------------------------------


@app.command("up")
def up(
    file: FileOpt = None,
    project: ProjectOpt = None,
    detach: DetachOpt = False,
    timeout: TimeoutOpt = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Register the project's jobs and follow them until their allocations run.

    The file is converted here first; a bad one is reported and nothing is sent.
    Exits like ``podium job run``: 0 when every allocation runs, 1 on a failure
    or an error, 2 when the scheduler could not place a job.
    """
    wait_for = _duration(timeout)
    code = EXIT_OK
    with common.handle_errors(str(file) if file else None):
        converted = _load(file, project)
        deadline = Deadline(wait_for)
        quiet = output == Output.JSON
        con = common.console()
        with common.make_client(address) as client:
            registered = []
            answers: dict[str, Any] = {}
            for spec in converted.jobs:
                result = client.query(endpoints.register_job(spec))
                registered.append((spec, result.value))
                answers[spec.id] = result.raw
                if not quiet:
                    for warning in result.value.warnings:
                        common.err_console().print(f"[yellow]Warning:[/] {escape(warning)}")
            if quiet:
                common.print_json(answers)
            elif detach:
                for spec, reg in registered:
                    what = "registered" if reg.changed else "unchanged"
                    con.print(
                        f"Job [bold]{escape(spec.id)}[/] {what} (version {reg.version}); "
                        f"evaluation [bold]{render.short(reg.eval_id)}[/]"
                    )
            if detach:
                return
            for spec, reg in registered:
                code = max(code, RunMonitor(client, spec, reg, deadline, quiet=quiet).run())
    if code:
        raise typer.Exit(code)


# -- down --------------------------------------------------------------------------------


def project_jobs(client: Client, project: str) -> list[str]:
    """Ids of the jobs on the server that belong to ``project`` (by their meta)."""
    listed = client.query(endpoints.jobs(prefix=project)).value
    ids = []
    for item in sorted(listed, key=lambda j: j.id):
        if item.id != project and not item.id.startswith(project + "-"):
            continue
        try:
            job = client.query(endpoints.job(item.id)).value
        except NotFound:
            continue
        if job.spec.meta.get(PROJECT_META) == project:
            ids.append(job.id)
    return ids


@app.command("down")
def down(
    file: FileOpt = None,
    project: ProjectOpt = None,
    purge: Annotated[
        bool,
        typer.Option("--purge/--no-purge", help="Also forget the jobs and their history."),
    ] = True,
    detach: DetachOpt = False,
    timeout: TimeoutOpt = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Stop the project's jobs (and purge them), then wait until their tasks exited."""
    deadline = Deadline(_duration(timeout))
    with common.handle_errors(str(file) if file else None):
        name = _project_name(file, project)
        con = common.console()
        with common.make_client(address) as client:
            ids = project_jobs(client, name)
            if not ids:
                if output == Output.JSON:
                    common.print_json({})
                else:
                    con.print(f"Project {escape(name)} has no jobs.")
                return
            answers: dict[str, Any] = {}
            for job_id in ids:
                result = client.query(endpoints.stop_job(job_id, purge))
                answers[job_id] = result.raw
                if output != Output.JSON:
                    con.print(f"Stopping job {escape(job_id)}")
            if output == Output.JSON:
                common.print_json(answers)
            if detach:
                return
            for job_id in ids:
                _wait_stopped(client, job_id, deadline)
            if output != Output.JSON:
                con.print(f"Project {escape(name)} stopped ({len(ids)} job(s)).")


def _wait_stopped(client: Client, job_id: str, deadline: Deadline) -> None:
    left: list[Allocation] = []
    try:
        for listed in common.watch(client, endpoints.allocations(job_id=job_id), deadline):
            left = [a for a in listed.value if a.job_id == job_id and not a.client_terminal()]
            if not left:
                return
    except TimedOut:
        common.fail(
            f"timed out after {format_duration(deadline.seconds)}: "
            f"{len(left)} allocation(s) of {job_id} still stopping"
        )


# -- ps ----------------------------------------------------------------------------------


def _ports(alloc: Allocation, targets: dict[str, int]) -> str:
    out = []
    for label, port in sorted(alloc.ports.items()):
        host = f"{port.host_ip}:{port.value}" if port.host_ip else str(port.value)
        target = targets.get(label)
        out.append(f"{host}->{target}" if target is not None else f"{label}={host}")
    return ", ".join(out) or "-"


def _targets(spec: JobSpec, group: str) -> dict[str, int]:
    g = spec.groups.get(group)
    if g is None:
        return {}
    out: dict[str, int] = {}
    for task in g.tasks.values():
        ports = task.config.get("ports")
        if isinstance(ports, dict):
            out.update({str(k): v for k, v in ports.items() if isinstance(v, int)})
    return out


@app.command("ps")
def ps(
    file: FileOpt = None,
    project: ProjectOpt = None,
    all_allocs: Annotated[
        bool, typer.Option("--all", "-a", help="Also list stopped and finished allocations.")
    ] = False,
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """List the project's allocations: service, status, node and ports."""
    with common.handle_errors(str(file) if file else None):
        name = _project_name(file, project)
        with common.make_client(address) as client:
            rows: list[tuple[JobSpec, Allocation]] = []
            raw: list[Any] = []
            for job_id in project_jobs(client, name):
                job = client.query(endpoints.job(job_id)).value
                result = client.query(endpoints.job_allocations(job_id, all=all_allocs))
                raw.extend(result.raw if isinstance(result.raw, list) else [])
                rows.extend((job.spec, a) for a in result.value)
        if output == Output.JSON:
            common.print_json(raw)
            return
        con = common.console()
        if not rows:
            con.print(f"Project {escape(name)} has no allocations.")
            return
        t = render.table("Service", "Alloc", "Job", "Status", "Node", "Ports")
        for spec, alloc in sorted(rows, key=lambda r: (r[1].group, r[1].index)):
            t.add_row(
                escape(alloc.group),
                render.short(alloc.id),
                escape(alloc.job_id),
                render.status_text(alloc.client_status.value),
                escape(alloc.node_name or render.short(alloc.node_id)),
                escape(_ports(alloc, _targets(spec, alloc.group))),
            )
        con.print(t)


__all__ = ["app", "project_jobs"]
