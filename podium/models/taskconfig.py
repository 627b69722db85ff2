"""Typed ``config`` blocks of the built-in drivers.

A task's ``config`` is free-form in :class:`~podium.models.job.Task` because
each driver owns its schema; this module is where those schemas live, so the
spec layer (and therefore the server) can validate them without importing the
drivers themselves.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from podium.models.duration import Duration

_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


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
    """One ``docker`` mount: a host path (bind), a named volume, or a tmpfs.

    The options after ``readonly`` each belong to one type (``create_host_path``
    to a bind, ``nocopy`` to a volume, ``size`` and ``mode`` to a tmpfs); one
    given for another type is an error rather than something quietly ignored.
    """

    type: Literal["bind", "volume", "tmpfs"] = "volume"
    source: str | None = None
    """Host path (bind; relative to the task dir when not absolute) or volume name."""
    target: str = Field(min_length=1)
    readonly: bool = False
    create_host_path: bool = False
    """bind: create a missing source as a directory (``docker run -v``'s way and
    Compose's) instead of failing the start (the Engine's mount API refuses one)."""
    nocopy: bool = False
    """volume: do not copy the image's files at ``target`` into a new, empty volume."""
    size: int | None = Field(default=None, ge=1)
    """tmpfs: its size in MB (default: the Engine's, half the node's memory)."""
    mode: int | None = Field(default=None, ge=0, le=0o7777)
    """tmpfs: the permission bits of its root (default 1777, as a number: ``0o1777``)."""

    @model_validator(mode="after")
    def _options_fit_the_type(self) -> DockerMount:
        own = {"bind": ("create_host_path",), "volume": ("nocopy",), "tmpfs": ("size", "mode")}
        for kind, options in own.items():
            if kind == self.type:
                continue
            for option in options:
                if getattr(self, option) not in (None, False):
                    raise ValueError(f"{option} applies to a {kind} mount, not a {self.type} one")
        return self


class DockerPort(DriverConfig):
    """A container port with how it is published: on which host address, for which protocol.

    ``host_ip`` left out binds the node's advertised address (Podium's default,
    where the service catalog finds it); ``""`` binds every interface, IPv4 and
    IPv6 (``docker run -p 8080:80``); an address binds that one only
    (``127.0.0.1``: the node itself).  ``protocol`` left out publishes TCP and
    UDP alike (as Nomad's docker driver does); ``tcp`` or ``udp`` only that one.
    """

    target: int = Field(ge=1, le=65535)
    """The container's port."""
    host_ip: str | None = None
    protocol: Literal["tcp", "udp"] | None = None

    @field_validator("host_ip")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if not value:
            return value
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            raise ValueError(
                f'host_ip {value!r} is not an IP address (127.0.0.1, ::1, or "" for every '
                "interface)"
            ) from None

    @property
    def protocols(self) -> tuple[str, ...]:
        return (self.protocol,) if self.protocol else ("tcp", "udp")


class DockerNetwork(DriverConfig):
    """A Docker network the container joins, with the names it answers to there.

    The driver creates a missing network (a ``bridge`` on the node, labelled as
    Podium's) and removes it again once no container uses it.
    """

    name: str = Field(min_length=1, max_length=128)
    aliases: list[str] = Field(default_factory=list)
    """DNS names of the container on this network (a Compose service's name, say)."""

    @field_validator("name")
    @classmethod
    def _name_syntax(cls, value: str) -> str:
        if not _DOCKER_NAME.match(value):
            raise ValueError(
                f"network name {value!r} must start with a letter or digit and use only "
                "letters, digits, '_', '.' and '-'"
            )
        return value

    @field_validator("aliases")
    @classmethod
    def _alias_syntax(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not alias or any(c.isspace() for c in alias):
                raise ValueError(f"alias {alias!r} must be a non-empty name without spaces")
        return list(dict.fromkeys(value))


HEALTHCHECK_KINDS = ("CMD", "CMD-SHELL", "NONE")


class DockerHealthcheck(DriverConfig):
    """Docker's own HEALTHCHECK for the container (``docker run --health-*``).

    ``test`` is ``["CMD", prog, args...]``, ``["CMD-SHELL", "a shell command"]``,
    ``["NONE"]`` (no health check, not even the image's), a string, which is
    run by the container's shell, or empty (the image's own HEALTHCHECK command,
    with the timings given here).  Durations of 0 leave the engine's defaults
    (30s interval, 30s timeout, 0s start period; 3 retries).
    """

    test: list[str] = Field(default_factory=list)
    """Empty: the image's own HEALTHCHECK command, with the timings given here."""
    interval: Duration = 0.0
    timeout: Duration = 0.0
    retries: int = Field(default=0, ge=0)
    start_period: Duration = 0.0

    @field_validator("test", mode="before")
    @classmethod
    def _test_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text == "NONE":
                return ["NONE"]
            if text.startswith("CMD-SHELL "):
                text = text[len("CMD-SHELL ") :].strip()
            if not text:
                raise ValueError("the health check command is empty")
            return ["CMD-SHELL", text]
        return value

    @field_validator("test")
    @classmethod
    def _test_kind(cls, value: list[str]) -> list[str]:
        if not value:
            return value
        if value[0] not in HEALTHCHECK_KINDS:
            raise ValueError(
                "test must start with CMD, CMD-SHELL or NONE "
                '(e.g. ["CMD", "wget", "-q", "-O-", "http://localhost/"]), or be a shell command'
            )
        if value[0] == "NONE" and len(value) > 1:
            raise ValueError("a NONE test takes no arguments")
        if value[0] != "NONE" and len(value) < 2:
            raise ValueError(f"a {value[0]} test needs a command after {value[0]}")
        if value[0] == "CMD-SHELL" and len(value) > 2:
            return ["CMD-SHELL", " ".join(value[1:])]
        return value

    @field_validator("interval", "timeout", "start_period")
    @classmethod
    def _engine_minimum(cls, value: float) -> float:
        if 0 < value < 0.001:
            raise ValueError("must be 0 (the engine's default) or at least 1ms")
        return value

    @property
    def disabled(self) -> bool:
        return self.test == ["NONE"]


class DockerConfig(DriverConfig):
    """``docker``: a container from ``image``, run through the Docker Engine API."""

    image: str = Field(min_length=1)
    command: str | None = None
    entrypoint: str | list[str] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    ports: dict[str, int | DockerPort] = Field(default_factory=dict)
    """Group port label -> container port, or a :class:`DockerPort` that also says
    on which host address and for which protocol it is published."""
    volumes: list[str] = Field(default_factory=list)
    """``"src:dst[:ro|rw]"``: an absolute or ``./``-relative ``src`` is a bind, a bare name a volume."""
    mounts: list[DockerMount] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    network_mode: str | None = None
    networks: list[DockerNetwork] = Field(default_factory=list)
    """Networks to join (the first is the container's primary network); created when missing."""
    healthcheck: DockerHealthcheck | None = None
    hostname: str | None = None
    work_dir: str | None = None
    user: str | None = None
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)
    image_pull: Literal["if_not_present", "always", "never"] = "if_not_present"

    @field_validator("ports")
    @classmethod
    def _ports_in_range(cls, value: dict[str, int | DockerPort]) -> dict[str, int | DockerPort]:
        for label, port in value.items():
            if isinstance(port, int) and not 1 <= port <= 65535:
                raise ValueError(f"container port for {label!r} must be 1-65535, not {port}")
        return value

    def port(self, label: str) -> DockerPort:
        """The port behind ``label``, in its long form."""
        value = self.ports[label]
        return DockerPort(target=value) if isinstance(value, int) else value

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

    @model_validator(mode="after")
    def _networks_fit_the_mode(self) -> DockerConfig:
        names = [n.name for n in self.networks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"network {dupes[0]!r} is listed twice")
        mode = self.network_mode or ""
        if self.networks and (
            mode in ("host", "none") or mode.startswith(("container:", "service:"))
        ):
            raise ValueError(
                f"networks cannot be joined with network_mode {mode!r}: "
                "drop one of network_mode and networks"
            )
        return self


DRIVER_CONFIGS: dict[str, type[DriverConfig]] = {
    "docker": DockerConfig,
    "raw_exec": ExecConfig,
    "exec": ExecConfig,
    "mock": MockConfig,
}


def parse_config(driver: str, config: dict[str, Any]) -> DriverConfig:
    """Validate ``config`` for ``driver``; raises KeyError for an unknown driver."""
    return DRIVER_CONFIGS[driver].model_validate(config)


def declares_health(driver: str, config: dict[str, Any]) -> bool:
    """Whether a task's driver keeps a health verdict of its own: a docker task with a
    HEALTHCHECK (its own ``test``, or the image's when ``test`` is empty) not turned off
    with ``["NONE"]``.  Its agent reports that verdict as a check once the task runs."""
    if driver != "docker" or not isinstance(config.get("healthcheck"), dict):
        return False
    try:
        check = DockerHealthcheck.model_validate(config["healthcheck"])
    except ValueError:
        return False
    return check.test != ["NONE"]
