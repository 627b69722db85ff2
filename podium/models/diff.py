"""Readable differences between two job specs, stored with each job version."""

from __future__ import annotations

from typing import Any

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
