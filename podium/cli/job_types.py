"""``podium job dispatch`` and ``podium job periodic force``: run a parameterized job
with parameters, or a periodic job now (docs/periodic.md).  :func:`install` adds them
to ``podium job``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape
from rich.text import Text

from podium.cli import common, render
from podium.cli.common import AddressOpt, Output, OutputOpt
from podium.client import JobInfo, JobListItem, jobtypes
from podium.models.dispatch import MAX_PAYLOAD
from podium.models.periodic import describe_next

periodic_app = typer.Typer(help="Periodic jobs: launch one now.", no_args_is_help=True)


def install(app: typer.Typer) -> None:
    app.command("dispatch")(dispatch)
    app.add_typer(periodic_app, name="periodic")


def _meta(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            common.usage(f"--meta takes KEY=VALUE, not {pair!r}")
        if key in out:
            common.usage(f"--meta {key} is given twice")
        out[key] = value
    return out


def _payload(source: str | None) -> bytes | None:
    """The payload file's bytes (``-``: standard input), refused early past the limit."""
    if source is None:
        return None
    if source == "-":
        data = sys.stdin.buffer.read(MAX_PAYLOAD + 1)
    else:
        path = Path(source)
        if not path.is_file():
            common.fail(f"payload file {source} does not exist or is not a file", kind="file")
        try:
            with path.open("rb") as f:
                data = f.read(MAX_PAYLOAD + 1)
        except OSError as exc:
            common.fail(f"cannot read payload file {source}: {exc.strerror or exc}", kind="file")
    if len(data) > MAX_PAYLOAD:
        common.fail(
            f"the payload is more than {MAX_PAYLOAD:,} bytes (16 KiB), the most a dispatch "
            "carries: pass a path or a URL in it instead of the data",
            kind="usage",
        )
    return data


def dispatch(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="A parameterized job's id.")],
    payload: Annotated[
        str | None,
        typer.Argument(
            metavar="[PAYLOAD]",
            help="A file whose bytes are the payload (at most 16 KiB); - reads standard input.",
            show_default=False,
        ),
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", help="KEY=VALUE, repeatable: the dispatch's metadata."),
    ] = None,
    token: Annotated[
        str,
        typer.Option(
            "--idempotency-token",
            help="A dispatch repeated with the same token does not run again (it answers "
            "the first one's job).",
        ),
    ] = "",
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Dispatch a parameterized job: run a child job <JOB>/dispatch-<time>-<hex> with
    the metadata (PODIUM_META_<KEY> in every task) and the payload (the file a task's
    dispatch_payload names).  -o json prints the dispatched job's id."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        body = _payload(payload)
        result = client.query(jobtypes.dispatch_job(job_id, _meta(meta or []), body, token))
        if output.structured:
            common.print_data(result.raw, output)
            return
        d = result.value
        said = "Found" if d.existing else "Dispatched"
        common.console().print(
            f"{said} job {escape(d.dispatched_job_id)}; evaluation {render.short(d.eval_id)}"
            + (" (an earlier dispatch with this idempotency token made it)" if d.existing else "")
        )


@periodic_app.command("force")
def force(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="A periodic job's id.")],
    address: AddressOpt = common.DEFAULT_ADDR,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Launch a periodic job now, whatever its schedule and prohibit_overlap; the
    schedule itself is unchanged."""
    with common.handle_errors(output=output), common.make_client(address) as client:
        result = client.query(jobtypes.force_periodic(job_id))
        if output.structured:
            common.print_data(result.raw, output)
            return
        f = result.value
        common.console().print(
            f"Launched job {escape(f.job_id)}; evaluation {render.short(f.eval_id)}"
        )


def next_launch_text(spec_periodic: object) -> str:
    """``job status``'s line for a periodic job's next launch."""
    from podium.models.periodic import Periodic

    if not isinstance(spec_periodic, Periodic):
        return ""
    if not spec_periodic.enabled:
        return "none (periodic.enabled is false)"
    return describe_next(spec_periodic, time.time())


# -- job status ----------------------------------------------------------------------------


def count_children(jobs: list[JobListItem]) -> dict[tuple[str, str], dict[str, int]]:
    """Per parent (namespace, id): its listed children by status."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for j in jobs:
        if j.parent_id:
            by = out.setdefault((j.namespace, j.parent_id), {})
            by[j.status.value] = by.get(j.status.value, 0) + 1
    return out


def children_text(by_status: dict[str, int] | None) -> str:
    """``3 children: 1 running, 2 dead`` (the Allocs column of a parent's row)."""
    if not by_status:
        return "no children"
    total = sum(by_status.values())
    parts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    return f"{total} child{'ren' if total != 1 else ''}: {parts}"


def status_rows(job: JobInfo) -> list[tuple[str, object]]:
    """``job status``'s extra lines for a periodic or parameterized job, or a child."""
    rows: list[tuple[str, object]] = []
    spec = job.spec
    if job.parent_id:
        rows.append(("Parent", job.parent_id))
    if spec.periodic is not None:
        p = spec.periodic
        rows.append(("Periodic", f"{p.cron} ({p.time_zone})"))
        rows.append(("Prohibit overlap", p.prohibit_overlap))
        rows.append(("Next launch", "none (stopped)" if job.stop else next_launch_text(p)))
    if spec.parameterized is not None:
        q = spec.parameterized
        rows.append(("Parameterized", f"payload {q.payload}"))
        rows.append(("Meta required", ", ".join(q.meta_required) or "-"))
        rows.append(("Meta optional", ", ".join(q.meta_optional) or "-"))
    return rows


def children_table(kids: list[JobListItem]) -> RenderableType:
    if not kids:
        return Text("No children (launches or dispatches) yet.")
    t = render.table("ID", "Status", "Allocs", "Submitted", title="Children")
    for k in kids:
        t.add_row(
            escape(k.id),
            render.status_text(k.status.value),
            render.alloc_counts(k.summary),
            render.age(k.submit_time),
        )
    return t
