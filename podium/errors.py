"""The exception tree, drawn once so callers know what to catch.

PodiumError
├── SpecError            a job file or API body is invalid (file, line, field, hint)
├── NotFound             an id (or id prefix) names nothing
├── AmbiguousPrefix      an id prefix names more than one object
├── Conflict             a conditional write lost (check-index mismatch)
├── Forbidden            the caller may not do this (a missing capability, a node's secret)
├── APIError             the server answered an error status (the client's view)
└── DriverError          a driver could not start, stop or recover a task
"""

from __future__ import annotations

from dataclasses import dataclass, field


class PodiumError(Exception):
    """Base class of every error Podium raises on purpose."""


@dataclass
class SpecIssue:
    """One problem in a job file: where it is and what to do about it."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    hint: str | None = None

    def render(self, source: str | None = None) -> str:
        where = source or "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "hint": self.hint,
        }


@dataclass
class SpecError(PodiumError):
    """A job specification is invalid.  Carries every issue found, not just the first."""

    issues: list[SpecIssue] = field(default_factory=list)
    source: str | None = None

    def __str__(self) -> str:
        return "\n".join(i.render(self.source) for i in self.issues) or "invalid job specification"


class NotFound(PodiumError):
    """Nothing matches the given id or prefix."""


class AmbiguousPrefix(PodiumError):
    """An id prefix matches several objects; the message lists them."""


class Conflict(PodiumError):
    """A conditional write did not apply because the object changed meanwhile."""


class Forbidden(PodiumError):
    """The caller is known but may not do this; the message says what was missing."""


class DriverError(PodiumError):
    """A driver failed to start, stop or recover a task."""

    def __init__(self, message: str, *, recoverable: bool = False) -> None:
        super().__init__(message)
        self.recoverable = recoverable


class APIError(PodiumError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class Overloaded(APIError):
    """The server shed the request (429, code ``overloaded``: its event loop was behind)
    and did nothing; ``retry_after``: the seconds it asked the caller to wait.  The SDK
    waits and sends it again for up to its ``overload_budget`` before raising this."""

    def __init__(self, message: str, retry_after: float, detail: object = None) -> None:
        super().__init__(429, message, detail)
        self.retry_after = retry_after
