"""Job specifications: files and API bodies in, validated models out.

Pure by contract (import-linter enforces it): only ``podium.models``,
``podium.errors``, the standard library, PyYAML and pydantic are imported here,
so the CLI, the SDK and the server can all validate a job the same way without
pulling in each other.  Every failure is a :class:`podium.errors.SpecError`
listing all issues found, each with a dotted path, a line and column where the
input had them, and a hint such as "did you mean 'command'?".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from podium.spec.loader import load_job_file, parse_job_text
from podium.spec.locations import Locations, format_path
from podium.spec.validate import validate_job_dict

if TYPE_CHECKING:
    from podium.spec.compose import (
        ComposeProject,
        convert_compose,
        convert_compose_project,
        find_compose_file,
        load_compose_file,
        load_compose_project,
    )
    from podium.spec.compose_build import BuildSpec

_COMPOSE = {
    "ComposeProject",
    "convert_compose",
    "convert_compose_project",
    "find_compose_file",
    "load_compose_file",
    "load_compose_project",
}

__all__ = [
    "BuildSpec",
    "ComposeProject",
    "Locations",
    "convert_compose",
    "convert_compose_project",
    "find_compose_file",
    "format_path",
    "load_compose_file",
    "load_compose_project",
    "load_job_file",
    "parse_job_text",
    "validate_job_dict",
]


def __getattr__(name: str) -> Any:
    # The Compose converter is imported on first use: `podium job run` reads a job
    # file and has no use for it (a quarter of that command's imports).
    if name in _COMPOSE:
        from podium.spec import compose

        return getattr(compose, name)
    if name == "BuildSpec":
        from podium.spec.compose_build import BuildSpec

        return BuildSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
