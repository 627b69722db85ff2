"""Typed ``config`` blocks of the built-in drivers.

A task's ``config`` is free-form in :class:`~podium.models.job.Task` because
each driver owns its schema; this module is where those schemas live, so the
spec layer (and therefore the server) can validate them without importing the
drivers themselves.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class DockerMount(DriverConfig):
    """One ``docker`` mount: a host path (bind), a named volume, or a tmpfs."""

    type: Literal["bind", "volume", "tmpfs"] = "volume"
    source: str | None = None
    """Host path (bind; relative to the task dir when not absolute) or volume name."""
    target: str = Field(min_length=1)
    readonly: bool = False


class DockerConfig(DriverConfig):
    """``docker``: a container from ``image``, run through the Docker Engine API."""

    image: str = Field(min_length=1)
    command: str | None = None
    entrypoint: str | list[str] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    ports: dict[str, int] = Field(default_factory=dict)
    """Group port label -> container port."""
    volumes: list[str] = Field(default_factory=list)
    """``"src:dst[:ro|rw]"``: an absolute or ``./``-relative ``src`` is a bind, a bare name a volume."""
    mounts: list[DockerMount] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    network_mode: str | None = None
    hostname: str | None = None
    work_dir: str | None = None
    user: str | None = None
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)
    image_pull: Literal["if_not_present", "always", "never"] = "if_not_present"

    @field_validator("ports")
    @classmethod
    def _ports_in_range(cls, value: dict[str, int]) -> dict[str, int]:
        for label, port in value.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"container port for {label!r} must be 1-65535, not {port}")
        return value

    @field_validator("volumes")
    @classmethod
    def _volume_syntax(cls, value: list[str]) -> list[str]:
        for spec in value:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
                raise ValueError(f"volume {spec!r} must be 'src:/container/path[:ro|rw]'")
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"volume {spec!r}: the mode must be 'ro' or 'rw'")
        return value


DRIVER_CONFIGS: dict[str, type[DriverConfig]] = {
    "docker": DockerConfig,
    "raw_exec": ExecConfig,
    "exec": ExecConfig,
    "mock": MockConfig,
}


def parse_config(driver: str, config: dict[str, Any]) -> DriverConfig:
    """Validate ``config`` for ``driver``; raises KeyError for an unknown driver."""
    return DRIVER_CONFIGS[driver].model_validate(config)
