"""What converting a compose file keeps while it works: where things are, what went wrong.

:class:`Context` is shared by the project-level conversion in
:mod:`podium.spec.compose` and the per-service one in
:mod:`podium.spec.compose_service`: it records issues at the compose file's
lines (through the YAML loader's position map) and reads values with the
types Compose expects, recording an issue and raising :class:`Skip` when a
value is wrong so the caller leaves that one field out and goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from podium.errors import SpecIssue
from podium.models.duration import parse_duration
from podium.spec.locations import Locations, PathKey, format_path
from podium.spec.messages import describe

META_PREFIX = "compose."
"""Meta keys this conversion writes start with this."""


def meta_json(value: object) -> str:
    """A value for a meta key (meta holds strings): compact JSON."""
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


class Skip(Exception):
    """A value was wrong; its issue is recorded and the field is left out."""


@dataclass
class Shared:
    """What every service of a project may refer to."""

    project: str
    volumes: dict[str, str]
    networks: set[str]
    secrets: dict[str, str]
    configs: dict[str, str]
    network_names: dict[str, str] = field(default_factory=dict)
    """Compose network → the Docker network's name (``<project>_<network>``, its
    ``name:``, or the network itself when ``external``); ``default`` included."""


class Context:
    def __init__(
        self,
        source: str | None,
        base_dir: Path,
        env: dict[str, str],
    ) -> None:
        self.source = source
        self.base_dir = base_dir
        self.env = env
        self.issues: list[SpecIssue] = []
        self.warnings: list[str] = []
        self.data: dict[str, Any] = {}
        self.locs = Locations()

    # -- reporting ----------------------------------------------------------------------

    def err(
        self, path: PathKey, message: str, hint: str | None = None, *, key: bool = False
    ) -> None:
        pos = self.locs.of_key(path) if key else self.locs.of_value(path)
        line, column = (pos[0], pos[1]) if pos is not None else (None, None)
        self.issues.append(SpecIssue(format_path(path, self.data), message, line, column, hint))

    def fail(
        self, path: PathKey, message: str, hint: str | None = None, *, key: bool = False
    ) -> NoReturn:
        self.err(path, message, hint, key=key)
        raise Skip()

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def attempt(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(Skip):
            fn()

    # -- typed access -------------------------------------------------------------------

    def mapping(self, path: PathKey, value: object) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {describe(value)}")
        return {str(k): v for k, v in value.items()}

    def string(self, path: PathKey, value: object, *, numbers: bool = True) -> str:
        if isinstance(value, str):
            return value
        if numbers and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.fail(path, f"expected a string, got {describe(value)}")

    def strings(self, path: PathKey, value: object) -> list[str]:
        """A list of strings; a single string counts as a list of one."""
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            self.fail(path, f"expected a list of strings, got {describe(value)}")
        return [self.string((*path, i), v) for i, v in enumerate(value)]

    def integer(self, path: PathKey, value: object, minimum: int = 0) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
        if number is None:
            self.fail(path, f"expected a whole number, got {describe(value)}")
        assert number is not None
        if number < minimum:
            self.fail(path, f"must be at least {minimum}, got {number}")
        return number

    def boolean(self, path: PathKey, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.fail(path, f"expected true or false, got {describe(value)}")

    def duration(self, path: PathKey, value: object) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(path, str(exc))

    def parsed(self, path: PathKey, fn: Callable[[Any], Any], value: object) -> Any:
        try:
            return fn(value)
        except ValueError as exc:
            self.fail(path, str(exc))

    def local_path(self, text: str) -> str:
        """A host path of the compose file, absolute (``~`` and ``./`` resolved here)."""
        expanded = os.path.expanduser(text)
        return os.path.normpath(os.path.join(self.base_dir, expanded))
