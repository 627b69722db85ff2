"""Plain data in, a :class:`~podium.models.job.JobSpec` or every problem with it out.

This is the half of the spec layer that the server uses too: ``POST /v1/jobs``
bodies arrive as JSON, already parsed, with no lines to point at.  It runs the
models' own validation, then checks each task's ``config`` against its driver's
schema (the models leave ``config`` free-form because drivers own it), and
turns everything found into :class:`~podium.errors.SpecIssue` s with dotted paths,
human wording and, when a :class:`Locations` map is given, lines and columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from podium.errors import SpecError, SpecIssue
from podium.models import taskconfig
from podium.models.job import JobSpec
from podium.spec.locations import Locations, PathKey, Position, format_path
from podium.spec.messages import describe, explain, field_names, model_at, suggest


def validate_job_dict(
    data: object, source: str | None = None, locations: Locations | None = None
) -> JobSpec:
    """Validate a job given as plain data; raise :class:`SpecError` with all issues.

    ``source`` names where the data came from in messages; ``locations`` (from
    the YAML loader) adds lines and columns.  Nothing here reads files.
    """
    locs = locations if locations is not None else Locations()
    if not isinstance(data, dict):
        line, column = _split(locs.of_value(()))
        issue = SpecIssue(
            "",
            f"a job must be a mapping of fields, got {describe(data)}",
            line,
            column,
            hint="allowed fields: " + ", ".join(field_names(JobSpec)),
        )
        raise SpecError([issue], source=source)
    found: list[_Found] = []
    spec: JobSpec | None = None
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        found.extend(_from_pydantic(exc, JobSpec, (), data, locs))
    found.extend(_check_task_configs(data, locs))
    if found or spec is None:
        raise SpecError(sort_issues(_finish(found, data)), source=source)
    return spec


def sort_issues(issues: list[SpecIssue]) -> list[SpecIssue]:
    """Issues in file order (those without a line last), each reported once."""
    unique: list[SpecIssue] = []
    for issue in issues:
        if issue not in unique:
            unique.append(issue)
    big = 1 << 62
    return sorted(
        unique,
        key=lambda i: (i.line if i.line is not None else big, i.column or 0),
    )


@dataclass
class _Found:
    """An issue before its path is written out, so related ones can be merged."""

    path: PathKey
    kind: str
    message: str
    hint: str | None
    position: Position | None
    suggestion: str | None = None


def _split(pos: Position | None) -> tuple[int | None, int | None]:
    return (pos[0], pos[1]) if pos is not None else (None, None)


def _finish(found: list[_Found], data: object) -> list[SpecIssue]:
    # "unknown field 'comand' (did you mean 'command'?)" already says what a
    # second "required field 'command' is missing" would; keep just the first.
    meant = {(*f.path[:-1], f.suggestion) for f in found if f.suggestion is not None}
    issues = []
    for f in found:
        if f.kind == "missing" and f.path in meant:
            continue
        line, column = _split(f.position)
        issues.append(SpecIssue(format_path(f.path, data), f.message, line, column, f.hint))
    return issues


def _from_pydantic(
    exc: ValidationError,
    root: type[BaseModel],
    prefix: PathKey,
    data: object,
    locs: Locations,
) -> list[_Found]:
    """Translate one model's errors; ``prefix`` is where that model's input sits in ``data``."""
    base = _at(data, prefix)
    out = []
    for error in exc.errors(include_url=False):
        kind = error["type"]
        rel, on_key = _data_path(error["loc"], base, kind)
        path = (*prefix, *rel)
        parent = _at(base, rel[:-1])
        siblings = list(parent) if isinstance(parent, dict) else []
        said = explain(
            error,
            field=rel[-1] if rel else None,
            model=model_at(root, rel[:-1]),
            siblings=siblings,
        )
        if kind == "missing":
            pos = locs.of_missing(path)
        elif kind == "extra_forbidden" or on_key:
            pos = locs.of_key(path)
        else:
            pos = locs.of_value(path)
        out.append(_Found(path, kind, said.message, said.hint, pos, said.suggestion))
    return out


def _data_path(loc: tuple[int | str, ...], data: object, kind: str) -> tuple[PathKey, bool]:
    """Pydantic's ``loc`` as a path into ``data``, and whether it is about a key.

    ``loc`` may hold parts that are not in the data: ``[key]`` (the error is
    about a mapping key, not its value) and union member tags; both are dropped.
    A missing field is the one part kept though absent.
    """
    out: list[object] = []
    on_key = False
    node: object = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if part == "[key]":
            on_key = True
            continue
        found, child = _step(node, part)
        if found:
            out.append(part)
            node = child
        elif last and (kind == "missing" or isinstance(node, dict)):
            out.append(part)
            node = None
    return tuple(out), on_key


def _step(node: object, part: object) -> tuple[bool, object]:
    """``(True, child)`` when ``node`` has ``part`` (a key, or a list index)."""
    if isinstance(node, dict):
        try:
            return (True, node[part]) if part in node else (False, None)
        except TypeError:  # an unhashable part is no key
            return False, None
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def _at(data: object, path: PathKey) -> object:
    node = data
    for part in path:
        found, node = _step(node, part)
        if not found:
            return None
    return node


def _check_task_configs(data: dict[object, object], locs: Locations) -> list[_Found]:
    """Check each task's driver name and ``config`` against that driver's schema.

    Walks the raw data rather than the model so it runs even when other parts
    of the job are invalid: every problem is reported in one go.  The driver
    table is read on each call because drivers register themselves at import.
    """
    out: list[_Found] = []
    groups = data.get("groups")
    if not isinstance(groups, dict):
        return out
    for group_name, group in groups.items():
        tasks = group.get("tasks") if isinstance(group, dict) else None
        if not isinstance(tasks, dict):
            continue
        for task_name, task in tasks.items():
            if isinstance(task, dict):
                out.extend(
                    _check_task(("groups", group_name, "tasks", task_name), task, data, locs)
                )
    return out


def _check_task(
    base: PathKey, task: dict[object, object], data: object, locs: Locations
) -> list[_Found]:
    driver = task.get("driver")
    if not isinstance(driver, str) or not driver:
        return []  # missing or mistyped: the Task model says so
    configs = taskconfig.DRIVER_CONFIGS
    if driver not in configs:
        known = sorted(configs)
        close = suggest(driver, known)
        hint = f"did you mean {close!r}?" if close else "known drivers: " + ", ".join(known)
        path = (*base, "driver")
        return [
            _Found(path, "unknown_driver", f"unknown driver {driver!r}", hint, locs.of_value(path))
        ]
    config = task.get("config", {})
    if not isinstance(config, dict):
        return []  # the Task model reports a config that is not a mapping
    try:
        taskconfig.parse_config(driver, config)
    except ValidationError as exc:
        return _from_pydantic(exc, configs[driver], (*base, "config"), data, locs)
    return []
