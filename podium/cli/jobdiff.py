"""How ``job plan`` and ``job history --diff`` draw differences: ``+`` green, ``-`` red,
``~`` yellow, grouped by job, group and task as Nomad's ``job plan`` does::

    ~ Job: "web"
    ~ Group: "web" (1 create, 2 create/destroy update)
      ~ count: 2 => 3
      ~ Task: "server"
        + env.MODE: "fast"
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from podium.cli import render
from podium.client import JobPlanResult
from podium.models import GroupChanges, JobSpec, JobVersion
from podium.models.diff import DiffType, FieldDiff, JobDiff

STYLES = {"+": "green", "-": "red", "~": "yellow"}

CHANGE_WORDS = {
    "place": "create",
    "canary": "canary",
    "stop": "destroy",
    "destructive_update": "create/destroy update",
    "in_place_update": "in-place update",
    "reschedule_now": "reschedule",
    "reschedule_later": "reschedule later",
    "lost": "lost",
    "ignore": "ignore",
}
"""The scheduler's counts as ``job plan`` names them (Nomad's words)."""


def styled(line: str, indent: int = 0) -> Text:
    """One diff line, coloured by its leading sign."""
    return Text(" " * indent + line, style=STYLES.get(line[:1], ""))


def _entry(kind: DiffType, text: str, indent: int) -> Text:
    return styled(f"{kind.mark} {text}", indent)


def _fields(fields: Iterable[FieldDiff], indent: int) -> list[Text]:
    return [_entry(f.type, f.text(), indent) for f in fields]


def changes_text(changes: GroupChanges | None) -> str:
    """``1 create, 2 in-place update``: the non-zero counts, in a stable order."""
    if changes is None:
        return ""
    counts = changes.model_dump()
    order = [*CHANGE_WORDS, *sorted(k for k in counts if k not in CHANGE_WORDS)]
    return ", ".join(
        f"{counts[key]} {CHANGE_WORDS.get(key, key.replace('_', ' '))}"
        for key in order
        if counts.get(key)
    )


def diff_lines(diff: JobDiff, changes: dict[str, GroupChanges]) -> list[Text]:
    """The whole diff, each group's header annotated with the scheduler's counts."""
    out = [_entry(diff.type, f'Job: "{diff.id}"', 0)]
    out += _fields(diff.fields, 2)
    for group in diff.groups:
        note = changes_text(changes.get(group.name))
        out.append(_entry(group.type, f'Group: "{group.name}"' + (f" ({note})" if note else ""), 0))
        out += _fields(group.fields, 2)
        for task in group.tasks:
            out.append(_entry(task.type, f'Task: "{task.name}"', 2))
            out += _fields(task.fields, 4)
    return out


def _limit(driver: str, asked: int | None, reserved: int, unit: str, exec_default: bool) -> str:
    """A hard limit as the driver applies it (see :class:`podium.models.Resources`)."""
    if asked is not None:
        return f"max {asked:,} {unit}"
    if exec_default:
        return f"max {reserved:,} {unit} ({driver}'s default: the reservation)"
    return "no limit"


def resource_lines(spec: JobSpec) -> list[Text]:
    """Each task's resources: what is reserved for it (placement, CPU weight) and the hard
    limit its driver enforces, so a limit nobody wrote is seen before it kills a task."""
    out = [Text("Resources per task (reserved, then hard limit):", style="bold")]
    for gname, group in sorted(spec.groups.items()):
        for tname, task in sorted(group.tasks.items()):
            res = task.resources
            memory = _limit(task.driver, res.memory_max, res.memory, "MB", task.driver == "exec")
            cpu = _limit(task.driver, res.cpu_max, res.cpu, "MHz", False)
            out.append(
                Text(
                    f'- Group "{gname}" task "{tname}" ({task.driver}): '
                    f"memory {res.memory:,} MB, {memory}; cpu {res.cpu:,} MHz, {cpu}"
                )
            )
    return out


def plan_lines(plan: JobPlanResult, file: str, spec: JobSpec | None = None) -> list[Text]:
    """Everything ``job plan`` prints: diff, scheduler dry run, each task's resources
    (when the spec is given), the index to submit with."""
    out: list[Text] = []
    if plan.diff is not None:
        out += diff_lines(plan.diff, plan.changes)
        out.append(Text())
    out.append(Text("Scheduler dry-run:", style="bold"))
    for name, ch in sorted(plan.changes.items()):
        out.append(Text(f'- Group "{name}": {changes_text(ch) or "no changes"}'))
    if not plan.failed_tg_allocs:
        out.append(Text("- All allocations can be placed.", style="green"))
    else:
        out.append(Text("- WARNING: Failed to place all allocations.", style="bold yellow"))
        for name, metric in sorted(plan.failed_tg_allocs.items()):
            n = plan.queued_allocations.get(name, 1 + metric.coalesced_failures)
            what = f"{n} allocation{'s' if n != 1 else ''} could not be placed"
            reasons = metric.model_copy(update={"coalesced_failures": 0}).describe()
            out.append(Text(f'  Group "{name}": {what}: {reasons}', style="yellow"))
    if plan.preemptions:
        out += preemption_lines(plan)
    for warning in plan.warnings:
        out.append(Text(f"- Warning: {warning}", style="yellow"))
    if spec is not None:
        out.append(Text())
        out += resource_lines(spec)
    out.append(Text())
    out.append(Text(f"Job modify index: {plan.job_modify_index}"))
    out.append(
        Text(
            "To submit with the plan's index: "
            f"podium job run --check-index {plan.job_modify_index} {file}"
        )
    )
    return out


def preemption_lines(plan: JobPlanResult) -> list[Text]:
    """What the placements would preempt: one line per allocation, lowest priority first."""
    n = len(plan.preemptions)
    out = [
        Text(
            f"- Preemptions: {n} allocation{'s' if n != 1 else ''} of lower-priority jobs "
            "would be stopped:",
            style="bold yellow",
        )
    ]
    for p in sorted(plan.preemptions, key=lambda p: (p.priority, p.namespace, p.job_id, p.name)):
        ns = f"{p.namespace}/" if p.namespace != "default" else ""
        out.append(
            Text(
                f"  {p.alloc_id[:8]}  {ns}{p.name or p.job_id}  (job {p.job_id!r}, priority "
                f"{p.priority}; cpu {p.cpu} MHz, memory {p.memory} MB on node "
                f"{p.node_id[:8]})",
                style="yellow",
            )
        )
    return out


def version_lines(version: JobVersion, current: bool) -> list[Text]:
    """One stored version for ``job history --diff``: a heading, then its diff lines."""
    head = Text(f"Version {version.version}", style="bold")
    notes = [n for n in ("current" if current else "", "stopped" if version.stop else "") if n]
    if notes:
        head.append(f" ({', '.join(notes)})")
    head.append(f", submitted {render.age(version.submit_time)}")
    out = [head]
    if version.description:
        out.append(Text("  " + version.description, style="italic"))
    if version.diff:
        out += [styled(line, 2) for line in version.diff]
    else:
        out.append(Text("  (no changes to the spec)", style="dim"))
    return out
