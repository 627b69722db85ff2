"""The job specification: what a person writes in a job file.

These models are the contract of the job file and of ``POST /v1/jobs``.  They
hold no server bookkeeping (that lives in :class:`podium.models.state.Job`),
so the file a person wrote and the spec the API returns look the same.
"""

from __future__ import annotations

import re
import signal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from podium.models.duration import Duration

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
Name = Annotated[str, Field(min_length=1, max_length=128)]


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and use only letters, "
            "digits, '_', '.' and '-' (at most 128 characters)"
        )
    return value


class Spec(BaseModel):
    """Base of every spec model: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=False)


class JobType(StrEnum):
    SERVICE = "service"
    BATCH = "batch"
    SYSTEM = "system"


class RestartMode(StrEnum):
    FAIL = "fail"
    DELAY = "delay"


class RestartPolicy(Spec):
    """How the agent restarts a task that exits, on the same node.

    ``attempts`` restarts are allowed per ``interval``; each waits ``delay``.
    When they run out, ``mode: fail`` fails the allocation (the server may then
    reschedule it elsewhere) and ``mode: delay`` waits for the interval to end.
    """

    attempts: int | None = Field(default=None, ge=0)
    interval: Duration | None = None
    delay: Duration | None = None
    mode: RestartMode | None = None

    def with_defaults(self, job_type: JobType) -> RestartPolicy:
        if job_type == JobType.BATCH:
            base = RestartPolicy(attempts=3, interval=86400.0, delay=15.0, mode=RestartMode.FAIL)
        else:
            base = RestartPolicy(attempts=2, interval=1800.0, delay=15.0, mode=RestartMode.FAIL)
        return RestartPolicy(
            attempts=self.attempts if self.attempts is not None else base.attempts,
            interval=self.interval if self.interval is not None else base.interval,
            delay=self.delay if self.delay is not None else base.delay,
            mode=self.mode if self.mode is not None else base.mode,
        )


class ReschedulePolicy(Spec):
    """How the server replaces a failed allocation on a (possibly other) node."""

    attempts: int | None = Field(default=None, ge=0)
    interval: Duration | None = None
    delay: Duration | None = None
    delay_function: Literal["constant", "exponential"] | None = None
    max_delay: Duration | None = None
    unlimited: bool | None = None

    def with_defaults(self, job_type: JobType) -> ReschedulePolicy:
        if job_type == JobType.BATCH:
            base = ReschedulePolicy(
                attempts=1,
                interval=86400.0,
                delay=5.0,
                delay_function="constant",
                max_delay=3600.0,
                unlimited=False,
            )
        else:
            base = ReschedulePolicy(
                attempts=0,
                interval=0.0,
                delay=30.0,
                delay_function="exponential",
                max_delay=3600.0,
                unlimited=True,
            )
        return ReschedulePolicy(
            **{
                k: (getattr(self, k) if getattr(self, k) is not None else getattr(base, k))
                for k in type(self).model_fields
            }
        )


ConstraintOperator = Literal[
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "regexp",
    "version",
    "set_contains",
    "is_set",
    "is_not_set",
    "distinct_hosts",
    "distinct_property",
]


NODE_TARGETS = frozenset(
    {
        "node.id",
        "node.unique.id",
        "node.name",
        "node.unique.name",
        "node.datacenter",
        "node.pool",
        "node.class",
    }
)


def check_target(value: str) -> str:
    """A literal, or one interpolation the scheduler can resolve against a node."""
    if "${" not in value:
        return value
    key = value[2:-1].strip() if value.startswith("${") and value.endswith("}") else ""
    if key in NODE_TARGETS or (key[:5] in ("attr.", "meta.") and len(key) > 5):
        return value
    raise ValueError(
        f"{value!r} is not a node attribute: write one of ${{node.name}}, ${{node.id}}, "
        "${node.datacenter}, ${node.pool}, ${attr.<name>} (e.g. ${attr.cpu.arch}) "
        "or ${meta.<key>}"
    )


class Constraint(Spec):
    """A hard placement rule over a node attribute, e.g. ``${attr.cpu.arch} = amd64``.

    ``attribute`` is an interpolation such as ``${node.name}``, ``${node.datacenter}``,
    ``${node.pool}``, ``${attr.os.name}`` or ``${meta.rack}``.  ``distinct_hosts``
    needs no attribute; ``distinct_property`` takes the attribute and, as ``value``,
    how many allocations may share one value of it (default 1).
    """

    attribute: str = ""
    operator: ConstraintOperator = "="
    value: str = ""

    @model_validator(mode="after")
    def _needs_attribute(self) -> Constraint:
        if self.operator != "distinct_hosts" and not self.attribute:
            raise ValueError(f"operator {self.operator!r} needs an attribute")
        if self.operator == "regexp":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(
                    f"value {self.value!r} is not a regular expression: {exc}"
                ) from exc
        return self

    @field_validator("attribute", "value")
    @classmethod
    def _target(cls, v: str) -> str:
        return check_target(v)


class Affinity(Spec):
    """A soft placement preference: nodes that match score higher (or lower, for a
    negative ``weight``)."""

    attribute: str
    operator: ConstraintOperator = "="
    value: str = ""
    weight: int = Field(default=50, ge=-100, le=100)

    @field_validator("attribute", "value")
    @classmethod
    def _target(cls, v: str) -> str:
        return check_target(v)


class SpreadTarget(Spec):
    value: str
    percent: int = Field(ge=0, le=100)


class Spread(Spec):
    """Spread allocations over the values of an attribute, evenly or by ``targets``."""

    attribute: str
    weight: int = Field(default=50, ge=0, le=100)
    targets: list[SpreadTarget] = Field(default_factory=list)

    @field_validator("attribute")
    @classmethod
    def _target(cls, v: str) -> str:
        return check_target(v)

    @model_validator(mode="after")
    def _percents(self) -> Spread:
        total = sum(t.percent for t in self.targets)
        if total > 100:
            raise ValueError(f"spread targets add up to {total}%, more than 100%")
        return self


class Port(Spec):
    """A port a group needs: ``{}`` for a dynamic one the agent picks, ``{static: N}``."""

    static: int | None = Field(default=None, ge=1, le=65535)


class Network(Spec):
    ports: dict[str, Port] = Field(default_factory=dict)

    @field_validator("ports")
    @classmethod
    def _labels(cls, v: dict[str, Port]) -> dict[str, Port]:
        for label in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", label):
                raise ValueError(
                    f"port label {label!r} must be letters, digits and '_' "
                    "(it becomes the PODIUM_PORT_<label> variable)"
                )
        statics = [p.static for p in v.values() if p.static is not None]
        if len(statics) != len(set(statics)):
            raise ValueError("two port labels ask for the same static port")
        return v


class Migrate(Spec):
    """How a drain moves this group's allocations: ``max_parallel`` at a time."""

    max_parallel: int = Field(default=1, ge=1)


class Resources(Spec):
    """What one task asks of its node: ``cpu`` in MHz, ``memory`` in MB."""

    cpu: int = Field(default=100, ge=1, description="CPU in MHz")
    memory: int = Field(default=300, ge=1, description="memory in MB")


class LogConfig(Spec):
    """Size-based rotation of a task's stdout and stderr files."""

    max_files: int = Field(default=10, ge=1)
    max_file_size: int = Field(default=10, ge=1, description="MB per file")


_SIGNALS = {s.name for s in signal.Signals}


class Task(Spec):
    """One process (or container) of a group."""

    driver: Name
    config: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    kill_timeout: Duration = 5.0
    kill_signal: str = "SIGTERM"
    user: str | None = None
    meta: dict[str, str] = Field(default_factory=dict)
    logs: LogConfig = Field(default_factory=LogConfig)
    constraints: list[Constraint] = Field(default_factory=list)
    affinities: list[Affinity] = Field(default_factory=list)

    @field_validator("kill_signal")
    @classmethod
    def _signal(cls, v: str) -> str:
        name = v.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if name not in _SIGNALS:
            raise ValueError(f"{v!r} is not a signal name (such as SIGTERM, SIGINT, SIGQUIT)")
        return name

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return v


class Group(Spec):
    """A set of tasks placed together on one node, ``count`` times."""

    count: int = Field(default=1, ge=0)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    reschedule: ReschedulePolicy = Field(default_factory=ReschedulePolicy)
    meta: dict[str, str] = Field(default_factory=dict)
    constraints: list[Constraint] = Field(default_factory=list)
    affinities: list[Affinity] = Field(default_factory=list)
    spread: list[Spread] = Field(default_factory=list)
    max_per_node: int | None = Field(default=None, ge=1)
    network: Network = Field(default_factory=Network)
    migrate: Migrate = Field(default_factory=Migrate)
    tasks: dict[str, Task]

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: dict[str, Task]) -> dict[str, Task]:
        if not v:
            raise ValueError("a group needs at least one task")
        for name in v:
            _check_name(name, "task name")
        return v


class JobSpec(Spec):
    """A job file, validated.  ``job`` is the job's id."""

    job: Name
    type: JobType = JobType.SERVICE
    priority: int = Field(default=50, ge=1, le=100)
    meta: dict[str, str] = Field(default_factory=dict)
    datacenters: list[str] = Field(default_factory=lambda: ["*"])
    """Datacenters the job may run in; ``*`` (the default) means all, globs allowed."""
    node_pool: str = "default"
    constraints: list[Constraint] = Field(default_factory=list)
    affinities: list[Affinity] = Field(default_factory=list)
    spread: list[Spread] = Field(default_factory=list)
    groups: dict[str, Group]

    @field_validator("job")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_name(v, "job id")

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: dict[str, Group]) -> dict[str, Group]:
        if not v:
            raise ValueError("a job needs at least one group")
        for name in v:
            _check_name(name, "group name")
        return v

    @model_validator(mode="after")
    def _fill_defaults(self) -> JobSpec:
        # Policies default by job type, as Nomad's do; filled in here so the
        # agent and scheduler never guess and `job inspect` shows what applies.
        for group in self.groups.values():
            group.restart = group.restart.with_defaults(self.type)
            group.reschedule = group.reschedule.with_defaults(self.type)
        return self

    @property
    def id(self) -> str:
        return self.job

    def group(self, name: str) -> Group:
        return self.groups[name]


def tasks_changed(old: Group, new: Group) -> bool:
    """True when an allocation of ``old`` cannot be updated in place to ``new``.

    Changing a task's driver, config, environment, resources, user, or the set
    of tasks needs a new process; count, restart and reschedule policies and
    metadata do not (Nomad's ``tasksUpdated`` draws the same line).
    """
    if old.tasks.keys() != new.tasks.keys() or old.network != new.network:
        return True
    # placement rules are the scheduler's business, not a reason to restart a process
    ignore = {"meta", "constraints", "affinities"}
    for name, t_old in old.tasks.items():
        t_new = new.tasks[name]
        if t_old.model_dump(exclude=ignore) != t_new.model_dump(exclude=ignore):
            return True
    return False
