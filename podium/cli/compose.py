"""``podium compose ...``: run a Docker Compose project on Podium.

``convert`` shows the jobs a compose file becomes, ``up`` builds what has
``build:`` (:mod:`podium.cli.compose_build`), registers the jobs and follows
them like ``podium job run``, ``down`` stops (and purges) them, ``ps`` lists
their allocations and ``logs`` prints (or follows) their output.  The
conversion itself lives in :mod:`podium.spec.compose`; ``docs/compose.md``
says what maps to what.

``up`` converges as ``docker compose up`` does: it registers with
``force_reschedule``, so allocations that failed (a service without
``restart:`` that exited, a first attempt that crashed) are started again even
when the file did not change; and a service that is defined but not enabled
by the active profiles is left as it runs, not stopped.

A project's jobs are found on the server by their ``compose.project`` meta key,
so ``down``, ``ps`` and ``logs`` need only the project name (``--project``, or
the file's ``name:``, or its directory), not a file that still parses to the
same jobs.  Text from the file (errors, warnings) is printed with rich's markup
and emoji codes off: ``image: x:100:`` stays as written.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from podium.cli import common, compose_build, render
from podium.cli.common import AddressOpt, Deadline, Output, OutputOpt, TimedOut
from podium.cli.compose_build import BuildFailed, Prepared
from podium.cli.job import EXIT_OK, RunMonitor, TimeoutOpt, _duration
from podium.client import Client, endpoints
from podium.errors import NotFound, SpecError
from podium.models import Allocation, JobSpec, JobType, format_duration
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
ProfileOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--profile",
        help="Enable the services of this profile (repeatable; '*' for all). "
        "Default: $COMPOSE_PROFILES (from the shell or .env).",
        show_default=False,
    ),
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


def _load(
    file: Path | None, project: str | None, profiles: list[str] | None = None
) -> ComposeProject:
    """Convert the compose file; warnings go to stderr."""
    path = _compose_file(file)
    try:
        converted = load_compose_project(path, project, profiles=profiles or ())
    except SpecError as exc:
        _print_compose_error(exc)
        raise typer.Exit(1) from None
    err = common.err_console()
    for warning in converted.warnings:
        err.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True, emoji=False)
    return converted


def _print_compose_error(exc: SpecError) -> None:
    """Every issue as ``file:line:col: path: message``, or one document with ``-o json|yaml``."""
    common.render_spec_error(exc, exc.source, what="compose file")


def _note(text: str) -> None:
    """A line on stderr about what the command does (text from the file, as written)."""
    common.err_console().print(escape(text), soft_wrap=True, emoji=False, highlight=False)


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
    profile: ProfileOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Print the job specs the compose file becomes: YAML documents, or a JSON list.

    The YAML is what ``podium job run`` accepts (defaults left out); the JSON is
    the full spec of each job, every default filled in.  A service with
    ``build:`` runs the image ``up`` builds for it (named on stderr).
    """
    with common.handle_errors(str(file) if file else None, output):
        converted = _load(file, project, profile)
        for name, spec in converted.builds.items():
            _note(
                f"Service {name} is built from {spec.context}: its job expects image "
                f"{spec.image}, which `podium compose up` builds with the local Docker Engine "
                "(--push REGISTRY for a cluster)"
            )
        if output.structured:
            common.print_data([_doc(j, full=True) for j in converted.jobs], output)
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
    profile: ProfileOpt = None,
    build: Annotated[
        bool, typer.Option("--build", help="Build every build: service first, even if built.")
    ] = False,
    no_build: Annotated[
        bool,
        typer.Option("--no-build", help="Build nothing: the nodes use the image names as written."),
    ] = False,
    push: Annotated[
        str | None,
        typer.Option(
            "--push",
            metavar="REGISTRY",
            help="Push built images to REGISTRY (host[:port][/path]) and run them from there: "
            "for a cluster whose nodes are not this machine.",
            show_default=False,
        ),
    ] = None,
    detach: DetachOpt = False,
    timeout: TimeoutOpt = "5m",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Build what needs building, register the project's jobs and follow them until
    their allocations run.

    The file is converted here first; a bad one (or a failed build) is reported
    and nothing is sent.  Allocations that failed before are started again, as
    ``docker compose up`` restarts exited containers.  Exits like
    ``podium job run``: 0 when every allocation runs, 1 on a failure or an error,
    3 when the scheduler could not place a job, 4 when ``--timeout`` ran out.
    """
    if build and no_build:
        with common.output_format(output):
            common.usage("--build and --no-build cannot be used together")
    wait_for = _duration(timeout)
    code = EXIT_OK
    with common.handle_errors(str(file) if file else None, output):
        converted = _load(file, project, profile)
        deadline = Deadline(wait_for)
        quiet = output.structured
        con = common.console()
        with common.make_client(address) as client:
            if converted.builds:
                _prepare_images(client, converted, build=build, no_build=no_build, push=push)
            _keep_disabled_services(client, converted)
            registered = []
            answers: dict[str, Any] = {}
            for spec in converted.jobs:
                result = client.query(endpoints.register_job(spec, force_reschedule=True))
                registered.append((spec, result.value))
                answers[spec.id] = result.raw
                if not quiet:
                    for warning in result.value.warnings:
                        common.err_console().print(
                            f"[yellow]Warning:[/] {escape(warning)}", emoji=False
                        )
            if quiet:
                common.print_data(answers, output)
            elif detach:
                for spec, reg in registered:
                    what = "registered" if reg.changed else "unchanged"
                    con.print(
                        f"Job [bold]{escape(spec.id)}[/] {what} (version {reg.version}); "
                        f"evaluation [bold]{render.short(reg.eval_id)}[/]",
                        emoji=False,
                    )
            if detach:
                return
            for spec, reg in registered:
                code = max(code, RunMonitor(client, spec, reg, deadline, quiet=quiet).run())
    if code:
        raise typer.Exit(code)


def _prepare_images(
    client: Client, converted: ComposeProject, *, build: bool, no_build: bool, push: str | None
) -> None:
    """Make every ``build:`` service's image exist where its nodes can get it, or fail
    (nothing registered) saying what to do."""
    if no_build:
        return  # the nodes use the image names as written
    services = ", ".join(converted.builds)
    try:
        engine = compose_build.open_engine()
        if push is None:
            foreign = compose_build.foreign_nodes(
                client.query(endpoints.nodes()).value, compose_build.engine_id(engine)
            )
            if foreign:
                where = ", ".join(
                    f"{n.name} ({n.http_addr or 'no address'})" for n in foreign[:3]
                ) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                common.fail(
                    f"{services} {'is' if len(converted.builds) == 1 else 'are'} built here "
                    f"(build:), but the cluster runs containers on other Docker Engines too: "
                    f"{where}. Their nodes cannot use an image built on this machine. Pass "
                    f"--push REGISTRY (say --push registry.example.com:5000/{converted.name}) "
                    "to push the built images where every node can pull them, or build and "
                    "push them yourself, set image: to the pushed name and use --no-build."
                )

        def out(text: str) -> None:
            typer.echo(text, err=True, nl=False)

        for name, spec in converted.builds.items():
            image_id = compose_build.image_exists(engine, spec.image)
            if build or spec.always or image_id is None:
                why = "" if image_id is not None or build or spec.always else " (not built yet)"
                _note(f"Building {name} ({spec.image}) from {spec.context}{why}")
                image_id = compose_build.build(engine, spec, converted.name, out)
            reference, pushed = spec.image, False
            if push is not None:
                _note(f"Pushing {spec.image} to {push}")
                reference, pushed = compose_build.push(engine, spec.image, push, out), True
            compose_build.apply(converted.jobs, name, Prepared(reference, image_id, pushed))
    except BuildFailed as exc:
        common.fail(f"{exc}; nothing was registered")


def _keep_disabled_services(client: Client, converted: ComposeProject) -> None:
    """A service of the file that the active profiles leave out keeps running as it
    does (``docker compose up`` leaves it too); only ``down`` stops it."""
    if not converted.disabled:
        return
    main = next((j for j in converted.jobs if j.id == converted.name), None)
    if main is None:
        return
    try:
        current = client.query(endpoints.job(converted.name)).value
    except NotFound:
        return
    if current.stop or current.spec.meta.get(PROJECT_META) != converted.name:
        return
    for name, profiles in converted.disabled.items():
        group = current.spec.groups.get(name)
        if group is not None and name not in main.groups:
            main.groups[name] = group
            _note(
                f"Service {name} (profiles: {', '.join(profiles)}) is not enabled and is left "
                "as it runs; `podium compose down` stops it"
            )


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
    with common.handle_errors(str(file) if file else None, output):
        name = _project_name(file, project)
        con = common.console()
        with common.make_client(address) as client:
            ids = project_jobs(client, name)
            if not ids:
                if output.structured:
                    common.print_data({}, output)
                else:
                    con.print(f"Project {escape(name)} has no jobs.")
                return
            answers: dict[str, Any] = {}
            for job_id in ids:
                result = client.query(endpoints.stop_job(job_id, purge))
                answers[job_id] = result.raw
                if not output.structured:
                    con.print(f"Stopping job {escape(job_id)}")
            if output.structured:
                common.print_data(answers, output)
            if detach:
                return
            for job_id in ids:
                _wait_stopped(client, job_id, deadline)
            if not output.structured:
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


def _ports(alloc: Allocation, published: dict[str, dict[str, Any]]) -> str:
    """``0.0.0.0:8080->80/tcp`` per port, as ``docker compose ps`` shows them: the
    address the container is published on (every interface: 0.0.0.0)."""
    out = []
    for label, port in sorted(alloc.ports.items()):
        spec = published.get(label)
        if spec is None:
            host = f"{port.host_ip}:{port.value}" if port.host_ip else str(port.value)
            out.append(f"{label}={host}")
            continue
        ip = spec.get("host_ip")
        ip = port.host_ip if ip is None else (ip or "0.0.0.0")
        host = f"[{ip}]" if ":" in str(ip) else ip
        where = f"{host}:{port.value}" if host else str(port.value)
        proto = f"/{spec['protocol']}" if spec.get("protocol") else ""
        out.append(f"{where}->{spec['target']}{proto}")
    return ", ".join(out) or "-"


def _published(spec: JobSpec, group: str) -> dict[str, dict[str, Any]]:
    """Each port label of the group's tasks, in its long form (target, host_ip, protocol)."""
    g = spec.groups.get(group)
    if g is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for task in g.tasks.values():
        ports = task.config.get("ports")
        if not isinstance(ports, dict):
            continue
        for label, value in ports.items():
            if isinstance(value, int):
                out[str(label)] = {"target": value}
            elif isinstance(value, dict) and isinstance(value.get("target"), int):
                out[str(label)] = value
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
    with common.handle_errors(str(file) if file else None, output):
        name = _project_name(file, project)
        with common.make_client(address) as client:
            rows: list[tuple[JobSpec, Allocation]] = []
            raw: list[Any] = []
            for job_id in project_jobs(client, name):
                job = client.query(endpoints.job(job_id)).value
                result = client.query(endpoints.job_allocations(job_id, all=all_allocs))
                raw.extend(result.raw if isinstance(result.raw, list) else [])
                rows.extend((job.spec, a) for a in result.value)
        if output.structured:
            common.print_data(raw, output)
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
                escape(_ports(alloc, _published(spec, alloc.group))),
            )
        con.print(t)


# -- logs --------------------------------------------------------------------------------


def _log_targets(
    client: Client, project: str, services: list[str]
) -> list[tuple[str, Allocation, str]]:
    """``(prefix, allocation, task)`` for the newest allocation of each instance of the
    project's (chosen) services, ``web-1`` style as ``docker compose logs`` names them."""
    latest: dict[tuple[str, str, str], tuple[JobSpec, Allocation]] = {}
    known: set[str] = set()
    for job_id in project_jobs(client, project):
        job = client.query(endpoints.job(job_id)).value
        known.update(job.spec.groups)
        system = job.spec.type == JobType.SYSTEM
        for alloc in client.query(endpoints.job_allocations(job_id, all=True)).value:
            if services and alloc.group not in services:
                continue
            # one instance per index, or per node for a system job (global service)
            slot = f"node:{alloc.node_id}" if system else f"{alloc.index:09d}"
            key = (job_id, alloc.group, slot)
            have = latest.get(key)
            if have is None or alloc.create_index > have[1].create_index:
                latest[key] = (job.spec, alloc)
    unknown = [s for s in services if s not in known]
    if unknown:
        common.fail(
            f"project {project} has no service {unknown[0]!r}"
            + (f"; its services are: {', '.join(sorted(known))}" if known else "")
        )
    out = []
    for (_, group, slot), (spec, alloc) in sorted(latest.items()):
        tasks = list(spec.groups[group].tasks) if group in spec.groups else [group]
        task = group if group in tasks else tasks[0]
        if slot.startswith("node:"):
            prefix = f"{group}-{alloc.node_name or render.short(alloc.node_id)}"
        else:
            prefix = f"{group}-{alloc.index + 1}"
        out.append((prefix, alloc, task))
    return out


class _LinePrinter:
    """Whole lines from many streams, each with its prefix, never interleaved mid-line."""

    def __init__(self, width: int, prefixed: bool) -> None:
        self.width = width
        self.prefixed = prefixed
        self.lock = threading.Lock()

    def feed(self, prefix: str, chunks: Any) -> None:
        pending = ""
        for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split("\n")
            self._write(prefix, lines)
        if pending:
            self._write(prefix, [pending])

    def _write(self, prefix: str, lines: list[str]) -> None:
        if not lines:
            return
        head = f"{prefix:<{self.width}} | " if self.prefixed else ""
        with self.lock:
            sys.stdout.write("".join(f"{head}{line}\n" for line in lines))
            sys.stdout.flush()


@app.command("logs")
def logs(
    services: Annotated[
        list[str] | None, typer.Argument(help="Services to show (default: all).")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as the containers write.")
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("--tail", "-n", min=0, help="Start with (about) the last N lines of each."),
    ] = None,
    no_log_prefix: Annotated[
        bool, typer.Option("--no-log-prefix", help="Leave out the service-N | prefix.")
    ] = False,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="The compose file (to name the project).", show_default=False),
    ] = None,
    project: ProjectOpt = None,
    address: AddressOpt = common.DEFAULT_ADDR,
) -> None:
    """Print the output (stdout and stderr) of the project's containers, each line
    prefixed with its service and instance (``web-1 | ...``), as ``docker compose logs``.

    Reads each service's newest allocations through the server (``podium alloc logs``
    for one).  ``-f`` follows them until they stop (Ctrl-C to leave).
    """
    with common.handle_errors(str(file) if file else None):
        name = _project_name(file, project)
        with common.make_client(address) as client:
            targets = _log_targets(client, name, services or [])
            if not targets:
                common.console().print(f"Project {escape(name)} has no containers.", emoji=False)
                return
            printer = _LinePrinter(max(len(t[0]) for t in targets), not no_log_prefix)
            streams = []
            for prefix, alloc, task in targets:
                for kind in ("stdout", "stderr"):
                    if tail is None:
                        chunks = client.alloc_logs(alloc.id, task, type=kind, follow=follow)
                    else:
                        chunks = _tail(client, alloc.id, task, kind, tail, follow)
                    streams.append((prefix, chunks))
            if not follow:
                for prefix, chunks in streams:
                    printer.feed(prefix, chunks)
                return
            threads = [
                threading.Thread(target=printer.feed, args=stream, daemon=True)
                for stream in streams
            ]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    while t.is_alive():
                        t.join(0.2)
            except KeyboardInterrupt:
                return  # the usual way to stop following


def _tail(client: Client, alloc_id: str, task: str, kind: str, lines: int, follow: bool) -> Any:
    """The last ``lines`` lines of a log (the first chunk cut to them), then the rest."""
    from podium.cli.alloc import TAIL_BYTES_PER_LINE

    chunks = iter(
        client.alloc_logs(
            alloc_id,
            task,
            type=kind,
            origin="end",
            offset=max(lines, 1) * TAIL_BYTES_PER_LINE,
            follow=follow,
        )
    )
    if not follow:
        text = "".join(chunks)
        yield "".join(text.splitlines(keepends=True)[-lines:]) if lines else ""
        return
    first = next(chunks, "")
    yield "".join(first.splitlines(keepends=True)[-lines:]) if lines else ""
    yield from chunks


__all__ = ["app", "project_jobs"]
