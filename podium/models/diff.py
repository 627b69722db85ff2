"""Differences between two job specs: structured for ``job plan``, as lines for history.

:func:`job_diff` compares two specs field by field and groups what changed
the way Nomad's ``job plan`` shows it: the job's own fields, then per group
its fields and per task its fields, each one added (``+``), deleted (``-``)
or edited (``~``).  Fields are dotted paths inside their object
(``resources.memory``, ``config.command``, ``restart.attempts``); lists are
compared whole.  An unset field (``None``), an empty list and an empty
mapping count as absent, so setting one reads as an addition, not as
``None => 5``.

:func:`spec_diff` gives the flat lines stored with every job version
(``~ groups.web.count: 2 => 5``); its output is unchanged by the structured
diff, as stored versions already hold lines in that form.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from podium.models.job import JobSpec


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        # an empty mapping is the same as an absent one
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value


def spec_diff(old: JobSpec | None, new: JobSpec) -> list[str]:
    """Lines such as ``~ groups.web.count: 2 => 5``, ``+ groups.api.tasks.x.driver: exec``."""
    new_flat: dict[str, Any] = {}
    _flatten(new.model_dump(mode="json"), "", new_flat)
    if old is None:
        return ["+ job " + new.job]
    old_flat: dict[str, Any] = {}
    _flatten(old.model_dump(mode="json"), "", old_flat)
    lines: list[str] = []
    for key in sorted(old_flat.keys() | new_flat.keys()):
        if key not in old_flat:
            lines.append(f"+ {key}: {new_flat[key]!r}")
        elif key not in new_flat:
            lines.append(f"- {key}: {old_flat[key]!r}")
        elif old_flat[key] != new_flat[key]:
            lines.append(f"~ {key}: {old_flat[key]!r} => {new_flat[key]!r}")
    return lines


# --------------------------------------------------------------------------- structured


class DiffType(StrEnum):
    ADDED = "added"
    DELETED = "deleted"
    EDITED = "edited"
    NONE = "none"

    @property
    def mark(self) -> str:
        """``+``, ``-``, ``~`` or a space: the sign ``job plan`` prints before a line."""
        return _MARKS[self]


_MARKS = {DiffType.ADDED: "+", DiffType.DELETED: "-", DiffType.EDITED: "~", DiffType.NONE: " "}


def format_value(value: Any) -> str:
    """A field's value as plan output shows it: JSON (strings quoted, lists in brackets)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class FieldDiff(BaseModel):
    """One field that differs; ``old`` is None when added, ``new`` when deleted."""

    model_config = ConfigDict(extra="ignore")

    type: DiffType
    name: str
    old: Any = None
    new: Any = None

    def text(self) -> str:
        """``count: 2 => 5``, ``meta.team: "web"`` (without the sign)."""
        if self.type == DiffType.ADDED:
            return f"{self.name}: {format_value(self.new)}"
        if self.type == DiffType.DELETED:
            return f"{self.name}: {format_value(self.old)}"
        return f"{self.name}: {format_value(self.old)} => {format_value(self.new)}"


class TaskDiff(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: DiffType
    name: str
    fields: list[FieldDiff] = Field(default_factory=list)


class GroupDiff(BaseModel):
    """A group's own fields and its tasks (only the tasks that changed)."""

    model_config = ConfigDict(extra="ignore")

    type: DiffType
    name: str
    fields: list[FieldDiff] = Field(default_factory=list)
    tasks: list[TaskDiff] = Field(default_factory=list)


class JobDiff(BaseModel):
    """What registering ``new`` over ``old`` changes.  ``groups`` lists every group of
    either version, unchanged ones with type ``none`` (``job plan`` shows their
    scheduler counts beside them)."""

    model_config = ConfigDict(extra="ignore")

    type: DiffType
    id: str
    fields: list[FieldDiff] = Field(default_factory=list)
    groups: list[GroupDiff] = Field(default_factory=list)

    def changed(self) -> bool:
        return self.type != DiffType.NONE

    def lines(self) -> list[str]:
        """Every changed field as one line with its full path, grouped by group and task:
        ``~ priority: 50 => 70``, ``+ groups.web.tasks.server.env.MODE: "fast"``."""
        out = [f"{f.type.mark} {f.text()}" for f in self.fields]
        for g in self.groups:
            base = f"groups.{g.name}."
            out += [f"{f.type.mark} {base}{f.text()}" for f in g.fields]
            for t in g.tasks:
                tbase = f"{base}tasks.{t.name}."
                out += [f"{f.type.mark} {tbase}{f.text()}" for f in t.fields]
        return out


def _leaves(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value is not None:
        _flatten(value, "", out)
    return {k: v for k, v in out.items() if v is not None and v != []}


def _fields(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[FieldDiff]:
    """Field differences of two JSON objects (already without their nested children)."""
    a, b = _leaves(old), _leaves(new)
    diffs: list[FieldDiff] = []
    for key in sorted(a.keys() | b.keys()):
        if key not in a:
            diffs.append(FieldDiff(type=DiffType.ADDED, name=key, new=b[key]))
        elif key not in b:
            diffs.append(FieldDiff(type=DiffType.DELETED, name=key, old=a[key]))
        elif a[key] != b[key]:
            diffs.append(FieldDiff(type=DiffType.EDITED, name=key, old=a[key], new=b[key]))
    return diffs


def _kind(
    old: object | None, new: object | None, fields: list[Any], *children: list[Any]
) -> DiffType:
    if old is None:
        return DiffType.ADDED
    if new is None:
        return DiffType.DELETED
    if fields or any(c.type != DiffType.NONE for kids in children for c in kids):
        return DiffType.EDITED
    return DiffType.NONE


def _without(doc: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    return None if doc is None else {k: v for k, v in doc.items() if k != key}


def _task_diffs(old: dict[str, Any], new: dict[str, Any]) -> list[TaskDiff]:
    out = []
    for name in sorted(old.keys() | new.keys()):
        o, n = old.get(name), new.get(name)
        fields = _fields(o, n)
        kind = _kind(o, n, fields)
        if kind != DiffType.NONE:
            out.append(TaskDiff(type=kind, name=name, fields=fields))
    return out


def job_diff(
    old: JobSpec | None,
    new: JobSpec | None,
    *,
    old_stopped: bool = False,
    new_stopped: bool = False,
) -> JobDiff:
    """The structured difference from ``old`` to ``new`` (either may be None: added or
    deleted).  ``old_stopped``/``new_stopped`` add a ``stop`` field when registering
    ``new`` would start a stopped job again (or stopping would stop it)."""
    if old is None and new is None:
        raise ValueError("job_diff needs at least one spec")
    o = old.model_dump(mode="json") if old is not None else None
    n = new.model_dump(mode="json") if new is not None else None
    job_id = new.job if new is not None else old.job if old is not None else ""
    fields = _fields(_without(o, "groups"), _without(n, "groups"))
    if old is not None and new is not None and old_stopped != new_stopped:
        fields.append(
            FieldDiff(type=DiffType.EDITED, name="stop", old=old_stopped, new=new_stopped)
        )
    old_groups: dict[str, Any] = o["groups"] if o is not None else {}
    new_groups: dict[str, Any] = n["groups"] if n is not None else {}
    groups = []
    for name in sorted(old_groups.keys() | new_groups.keys()):
        og, ng = old_groups.get(name), new_groups.get(name)
        gfields = _fields(_without(og, "tasks"), _without(ng, "tasks"))
        tasks = _task_diffs(og["tasks"] if og else {}, ng["tasks"] if ng else {})
        groups.append(
            GroupDiff(type=_kind(og, ng, gfields, tasks), name=name, fields=gfields, tasks=tasks)
        )
    return JobDiff(type=_kind(o, n, fields, groups), id=job_id, fields=fields, groups=groups)
