"""Tables and small formatting helpers shared by the commands.

Kept apart from the commands so that ``job status`` and ``node status`` draw
an allocation the same way, and so the formats are testable on their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.console import Group as RenderGroup
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from podium.client import GroupSummary
from podium.models import Allocation, AllocMetric, Evaluation, TaskEvent

SHORT = 8


def short(ident: str | None) -> str:
    """The first 8 characters of an id: unique in practice and accepted back as a prefix."""
    return (ident or "")[:SHORT] or "-"


def age(ts: float | None, now: float | None = None) -> str:
    """``12s ago``, ``3m ago``, ``2h5m ago``, ``4d ago``; ``-`` for an unset time."""
    if not ts:
        return "-"
    delta = (time.time() if now is None else now) - ts
    if delta < 0:
        return "just now" if delta > -5 else "in the future"
    secs = int(delta)
    if secs < 60:
        return f"{secs}s ago"
    mins, secs = divmod(secs, 60)
    if mins < 60:
        return f"{mins}m{secs}s ago" if mins < 10 and secs else f"{mins}m ago"
    hours, mins = divmod(mins, 60)
    if hours < 24:
        return f"{hours}h{mins}m ago" if mins else f"{hours}h ago"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h ago" if hours and days < 7 else f"{days}d ago"


def clock(ts: float | None) -> str:
    """A local wall-clock time, for events where the order matters more than the age."""
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


class PlainTable(Table):
    """What :func:`table` makes: no box, no edge padding, so :func:`plain_table` can lay
    it out without rich."""


def table(*columns: str, title: str | None = None) -> Table:
    t = PlainTable(
        *columns,
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    return t


def _plain(cell: RenderableType) -> str:
    if isinstance(cell, Text):
        return cell.plain
    text = str(cell)
    # escape() only adds backslashes before "["; markup only begins there too
    return Text.from_markup(text).plain if "[" in text else text


def plain_table(t: Table) -> list[str]:
    """The lines a :func:`table` draws without a terminal, laid out without rich.

    Rich lays a cell out in ~70 us; a job's 1,000-allocation table took half a
    second of a ``job run`` that has already seen them all run.  A ``table()``
    has no box, no edge padding and one space of padding each side of a cell,
    so the columns are two spaces apart; the lines are what rich prints on a
    wide console, trailing spaces left out (a test holds the two equal).
    """
    columns = [[_plain(c.header), *(_plain(x) for x in c.cells)] for c in t.columns]
    widths = [max(cell_len(x) for x in col) for col in columns]
    right = [c.justify == "right" for c in t.columns]
    lines = [_plain(t.title)] if t.title else []
    start = 0 if t.show_header else 1
    for row in range(start, len(columns[0]) if columns else 0):
        cells = []
        for col, width, rjust in zip(columns, widths, right, strict=True):
            text = col[row]
            pad = " " * (width - cell_len(text))
            cells.append(pad + text if rjust else text + pad)
        lines.append("  ".join(cells).rstrip())
    return lines


class PlainConsole(Console):
    """The console without a terminal: :func:`table`'s tables (in a group or alone) are
    written as :func:`plain_table`'s lines; everything else is rich's to print."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if kwargs or len(objects) != 1 or self.is_terminal:  # a forced terminal has styles
            super().print(*objects, **kwargs)
            return
        (obj,) = objects
        if isinstance(obj, PlainTable):
            self.file.write("".join(line + "\n" for line in plain_table(obj)))
            self.file.flush()
        elif isinstance(obj, RenderGroup):
            for item in obj.renderables:
                self.print(item)
        else:
            super().print(obj)


def fields(rows: Iterable[tuple[str, object]]) -> Table:
    """``Key = value`` lines, Nomad-style, for one object's details."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, "=", escape(str(value)))
    return grid


def status_text(status: str) -> Text:
    colours = {
        "running": "green",
        "ready": "green",
        "complete": "blue",
        "eligible": "green",
        "pending": "yellow",
        "blocked": "yellow",
        "initializing": "yellow",
        "failed": "red",
        "lost": "red",
        "down": "red",
        "dead": "dim",
        "canceled": "dim",
        "ineligible": "yellow",
        "stop": "dim",
        "run": "",
    }
    return Text(status, style=colours.get(status, ""))


def said_once(status: str, description: str) -> str:
    """A status with its description, the status said once.

    A stored description often repeats the status (a failed deployment's is
    ``failed: failed by a person``); printed after the status that gave
    ``failed: failed: failed by a person``.  This gives ``failed by a person``,
    ``failed: allocation web[1] is unhealthy``, or the bare status when the
    description adds nothing (``deployment is running``).
    """
    desc = unrepeated(status, description)
    low = status.lower()
    if desc.lower() in ("", low, f"deployment is {low}"):
        return status
    if desc.lower().startswith(low + " "):
        return desc
    return f"{status}: {desc}"


def unrepeated(status: str, description: str) -> str:
    """``description`` without the ``<status>:`` it may start with (``failed: x`` → ``x``)."""
    desc = description.strip()
    low = status.lower()
    while desc.lower().startswith(low + ":"):
        desc = desc[len(low) + 1 :].strip()
    return desc


SUMMARY_ORDER = ("running", "pending", "queued", "failed", "lost", "complete")


def alloc_counts(summary: dict[str, GroupSummary]) -> str:
    """``5 running, 3 complete``: every non-zero state, summed over the groups.

    Each count is of allocations in that state and nothing else, so stopped
    allocations (``complete``) never inflate how many run: a job with 5
    running and 3 stopped reads ``5 running, 3 complete``, not ``5/8 running``.
    """
    totals = {state: sum(getattr(s, state) for s in summary.values()) for state in SUMMARY_ORDER}
    return ", ".join(f"{n} {state}" for state, n in totals.items() if n) or "none"


def summary_table(summary: dict[str, GroupSummary]) -> Table:
    t = table(
        "Group", "Queued", "Pending", "Running", "Complete", "Failed", "Lost", title="Summary"
    )
    for group, s in sorted(summary.items()):
        t.add_row(
            escape(group),
            str(s.queued),
            str(s.pending),
            str(s.running),
            str(s.complete),
            str(s.failed),
            str(s.lost),
        )
    return t


def allocs_table(
    allocs: Sequence[Allocation],
    *,
    title: str | None = "Allocations",
    show_job: bool = False,
    now: float | None = None,
) -> Table:
    cols = ["ID", "Node", "Group", "Version", "Desired", "Status", "Created"]
    if show_job:
        cols.insert(1, "Job")
    t = table(*cols, title=title)
    for a in sorted(allocs, key=lambda a: (-a.create_index, a.name)):
        row: list[RenderableType] = [
            short(a.id),
            short(a.node_id),
            escape(a.group),
            str(a.job_version),
            status_text(a.desired_status.value),
            status_text(a.client_status.value),
            age(a.create_time, now),
        ]
        if show_job:
            row.insert(1, escape(a.job_id))
        t.add_row(*row)
    return t


def placement_failures(metrics: dict[str, AllocMetric], ev: Evaluation) -> list[str]:
    """One line per group that could not be placed, with the scheduler's reasons."""
    lines = []
    for group, metric in sorted(metrics.items()):
        queued = ev.queued_allocations.get(group)
        what = f"{queued} allocation{'s' if queued != 1 else ''}" if queued else "allocations"
        lines.append(f'Group "{group}" could not place {what}: {metric.describe()}')
    return lines


def plan_text(plan: dict[str, int]) -> str:
    """``place 2, stop 1``: the non-zero counts of an evaluation's plan."""
    return (
        ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(plan.items()) if v)
        or "no changes"
    )


def placement_eval(evals: Sequence[Evaluation]) -> Evaluation | None:
    """The evaluation whose placement failures still apply, if any.

    ``evals`` is newest first.  Blocked evaluations only wait for capacity and
    carry no metrics, so the newest evaluation that ran decides: its failures
    are shown, and a later success hides older failures.
    """
    for ev in evals:
        if ev.status.value == "blocked":
            continue
        return ev if ev.failed_tg_allocs else None
    return None


def evals_table(evals: Sequence[Evaluation], now: float | None = None) -> Table:
    t = table("ID", "Job", "Triggered By", "Status", "Placement Failures", "Created")
    for ev in evals:
        t.add_row(
            short(ev.id),
            escape(ev.job_id),
            ev.triggered_by.value,
            status_text(ev.status.value),
            "yes" if ev.failed_tg_allocs else "no",
            age(ev.create_time, now),
        )
    return t


def event_description(ev: TaskEvent) -> str:
    parts = [ev.message] if ev.message else []
    if ev.exit_code is not None:
        parts.append(f"exit code {ev.exit_code}")
    if ev.signal:
        parts.append(f"signal {ev.signal}")
    if ev.oom_killed:
        parts.append("OOM killed")
    return "; ".join(parts)


def recent_events(allocs: Sequence[Allocation], limit: int = 10) -> Table | None:
    """The newest task events across a job's allocations, newest first (None: no events).

    What ``job status`` shows so a failing task is seen without looking up
    its allocation; ``alloc status`` has every event of one allocation.
    """
    events = [
        (ev, a, task)
        for a in allocs
        for task, state in a.task_states.items()
        for ev in state.events[-limit:]
    ]
    if not events:
        return None
    events.sort(key=lambda e: e[0].time, reverse=True)
    t = table("Time", "Alloc", "Task", "Type", "Description", title="Recent Events")
    for ev, a, task in events[:limit]:
        t.add_row(
            clock(ev.time),
            short(a.id),
            escape(task),
            escape(ev.type),
            escape(event_description(ev)),
        )
    return t


def events_table(events: Sequence[TaskEvent]) -> Table:
    t = table("Time", "Type", "Description")
    for ev in sorted(events, key=lambda e: e.time, reverse=True):
        t.add_row(clock(ev.time), escape(ev.type), escape(event_description(ev)))
    return t


def stack(*parts: RenderableType | None) -> RenderGroup:
    """Renderables one under the other, with a blank line between them."""
    items: list[RenderableType] = []
    for part in parts:
        if part is None:
            continue
        if items:
            items.append(Text(""))
        items.append(part)
    return RenderGroup(*items)
