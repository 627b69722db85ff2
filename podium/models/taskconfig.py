"""Typed ``config`` blocks of the built-in drivers.

A task's ``config`` is free-form in :class:`~podium.models.job.Task` because
each driver owns its schema; this module is where those schemas live, so the
spec layer (and therefore the server) can validate them without importing the
drivers themselves.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from podium.models.duration import Duration


class DriverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecConfig(DriverConfig):
    """``raw_exec`` and ``exec``: a command with arguments."""

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    cwd: str | None = None


class MockConfig(DriverConfig):
    """The mock driver: pretends to run for ``run_for`` and exit with ``exit_code``."""

    run_for: Duration = 0.0
    exit_code: int = 0
    start_error: str | None = None
    start_error_recoverable: bool = False
    kill_after: Duration = 0.0
    stdout: str = ""
    stderr: str = ""


DRIVER_CONFIGS: dict[str, type[DriverConfig]] = {
    "raw_exec": ExecConfig,
    "exec": ExecConfig,
    "mock": MockConfig,
}


def parse_config(driver: str, config: dict[str, Any]) -> DriverConfig:
    """Validate ``config`` for ``driver``; raises KeyError for an unknown driver."""
    return DRIVER_CONFIGS[driver].model_validate(config)
