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

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from podium.models import limits as L
from podium.models.devices import valid_device_name, valid_device_target
from podium.models.dispatch import MAX_PAYLOAD, DispatchPayload, Parameterized, is_child_id
from podium.models.duration import Duration
from podium.models.namespace import check_namespace
from podium.models.periodic import Periodic
from podium.models.scaling import Scaling

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
Name = Annotated[str, Field(min_length=1, max_length=128)]
Text = Annotated[str, Field(max_length=L.MAX_TEXT_CHARS)]
"""Free text, bounded (podium.models.limits)."""
Key = Annotated[str, Field(max_length=L.MAX_KEY_CHARS)]
Value = Annotated[str, Field(max_length=L.MAX_VALUE_CHARS)]
Meta = Annotated[dict[Key, Value], Field(max_length=L.MAX_MAP_ENTRIES)]
"""``meta``: at most MAX_MAP_ENTRIES entries of bounded keys and values."""


def _digits(value: object) -> object:
    """``"3"`` as 3 (a quoted number in a YAML file); anything else as it is, for the
    strict check after it: ``true``, ``1e9`` or ``2.5`` is no count."""
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 32:
        return int(text)
    return value


Whole = Annotated[int, BeforeValidator(_digits)]
"""An integer field that refuses booleans and floats (pydantic's lax mode takes both)."""


def _count(default: int, ge: int = 0) -> Any:
    """A count-like field: a whole number, bounded (podium.models.limits)."""
    return Field(default=default, ge=ge, le=L.COUNT_CEILING, strict=True)


def _rules() -> Any:
    return Field(default_factory=list, max_length=L.MAX_RULES)


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

    attempts: Whole | None = Field(default=None, ge=0, le=L.MAX_ATTEMPTS, strict=True)
    interval: Duration | None = Field(default=None, le=L.MAX_POLICY_INTERVAL)
    delay: Duration | None = Field(default=None, le=L.MAX_DELAY)
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

    attempts: Whole | None = Field(default=None, ge=0, le=L.MAX_ATTEMPTS, strict=True)
    interval: Duration | None = Field(default=None, le=L.MAX_POLICY_INTERVAL)
    delay: Duration | None = Field(default=None, le=L.MAX_DELAY)
    delay_function: Literal["constant", "exponential"] | None = None
    max_delay: Duration | None = Field(default=None, le=L.MAX_POLICY_INTERVAL)
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

    attribute: Text = ""
    operator: ConstraintOperator = "="
    value: Text = ""

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

    attribute: Text
    operator: ConstraintOperator = "="
    value: Text = ""
    weight: int = Field(default=50, ge=-100, le=100)

    @field_validator("attribute", "value")
    @classmethod
    def _target(cls, v: str) -> str:
        return check_target(v)


class SpreadTarget(Spec):
    value: Text
    percent: int = Field(ge=0, le=100)


class Spread(Spec):
    """Spread allocations over the values of an attribute, evenly or by ``targets``."""

    attribute: Text
    weight: int = Field(default=50, ge=0, le=100)
    targets: list[SpreadTarget] = Field(default_factory=list, max_length=L.MAX_SPREAD_TARGETS)

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
    ports: dict[str, Port] = Field(default_factory=dict, max_length=L.MAX_PORTS)

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

    max_parallel: Whole = _count(1, ge=1)


def _is_none(value: object) -> bool:
    return value is None


# -- volumes and devices (docs/volumes.md, docs/devices.md) ------------------------------


def _is_empty(value: object) -> bool:
    return not value


class VolumeRequest(Spec):
    """A group's claim on a host volume the node's agent declared (``--host-volume``)."""

    type: Literal["host"] = "host"
    source: Name
    """The host volume's name on the node."""
    read_only: bool = False
    """Mount it read-only everywhere; a node whose volume is read-only takes only such
    requests."""


class VolumeMount(Spec):
    """Where a task sees one of its group's volumes."""

    volume: Name
    """A key of the group's ``volumes``."""
    destination: Text
    read_only: bool = False

    @field_validator("destination")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/") or "\0" in v or v.strip("/") == "":
            raise ValueError(
                f"destination {v!r} must be an absolute path other than /, without '..'"
            )
        return v


def _device_target(value: str) -> str:
    if not valid_device_target(value):
        raise ValueError(
            f"{value!r} is not a device attribute: write ${{device.vendor}}, "
            "${device.type}, ${device.model} or ${device.attr.<name>} (e.g. "
            "${device.attr.memory})"
        )
    return value


class DeviceConstraint(Spec):
    """A hard rule on the device group an instance comes from:
    ``${device.attr.memory} >= 16384``."""

    attribute: Text
    operator: ConstraintOperator = "="
    value: Text = ""

    @field_validator("attribute", "value")
    @classmethod
    def _target(cls, v: str) -> str:
        return _device_target(v)

    @model_validator(mode="after")
    def _placement_free(self) -> DeviceConstraint:
        if self.operator in ("distinct_hosts", "distinct_property"):
            raise ValueError(f"operator {self.operator!r} does not apply to devices")
        return self


class DeviceAffinity(DeviceConstraint):
    """A preference between device groups of a node (the matching one is tried first)."""

    weight: int = Field(default=50, ge=-100, le=100)


class DeviceRequest(Spec):
    """``count`` instances of devices named ``name`` (``gpu``, ``nvidia/gpu`` or
    ``nvidia/gpu/<model>``), all from one device group, given to the task alone."""

    name: Text
    count: Whole = Field(default=1, ge=1, le=L.MAX_DEVICES, strict=True)
    constraints: list[DeviceConstraint] = _rules()
    affinities: list[DeviceAffinity] = _rules()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not valid_device_name(v):
            raise ValueError(
                f"device name {v!r}: write TYPE, VENDOR/TYPE or VENDOR/TYPE/MODEL "
                "(e.g. gpu, nvidia/gpu)"
            )
        return v


def check_volume_mounts(volumes: dict[str, VolumeRequest], tasks: dict[str, Any]) -> None:
    """Every task's mounts name one of the group's volumes, each destination once."""
    for task_name, task in tasks.items():
        seen: set[str] = set()
        for i, mount in enumerate(task.volume_mounts):
            if mount.volume not in volumes:
                known = ", ".join(sorted(volumes)) or "none"
                raise ValueError(
                    f"task {task_name!r}: volume_mounts[{i}] names volume {mount.volume!r}, "
                    f"which is not in the group's volumes (known: {known})"
                )
            if mount.destination.rstrip("/") in seen:
                raise ValueError(
                    f"task {task_name!r}: volume_mounts[{i}]: destination "
                    f"{mount.destination!r} is mounted twice"
                )
            seen.add(mount.destination.rstrip("/"))


class Resources(Spec):
    """What one task asks of its node, apart from what the kernel holds it to.

    ``cpu`` (MHz) and ``memory`` (MB) are *reserved*: the scheduler places by
    them and counts them against the node, and ``cpu`` is also the task's
    relative CPU weight (cgroup shares).  ``memory_max`` and ``cpu_max`` are
    *hard limits* the driver enforces (cgroup ``memory.max``, a CFS quota),
    Kubernetes' limits and Nomad's ``memory_max``.  Left out, a limit is the
    driver's default: ``exec`` holds a task to its reservation (``memory_max``
    = ``memory``; isolation is the point of it), ``docker`` and ``raw_exec``
    set none beyond the node's own.  A limit below its reservation is an error.
    """

    cpu: Whole = Field(
        default=100,
        ge=1,
        le=L.MAX_CPU_MHZ,
        strict=True,
        description="CPU in MHz, reserved (and the CPU weight)",
    )
    memory: Whole = Field(
        default=300, ge=1, le=L.MAX_MEMORY_MB, strict=True, description="memory in MB, reserved"
    )
    # Left out of dumps when unset: every stored allocation carries its resources twice.
    memory_max: Whole | None = Field(
        default=None,
        ge=1,
        le=L.MAX_MEMORY_MB,
        strict=True,
        description="hard memory limit in MB",
        exclude_if=_is_none,
    )
    cpu_max: Whole | None = Field(
        default=None,
        ge=1,
        le=L.MAX_CPU_MHZ,
        strict=True,
        description="hard CPU limit in MHz",
        exclude_if=_is_none,
    )
    devices: list[DeviceRequest] = Field(
        default_factory=list, max_length=L.MAX_DEVICE_REQUESTS, exclude_if=_is_empty
    )
    """Devices (GPUs) the task is given instances of (docs/devices.md)."""

    @model_validator(mode="after")
    def _limits_not_below_reservations(self) -> Resources:
        if self.memory_max is not None and self.memory_max < self.memory:
            raise ValueError(
                f"memory_max ({self.memory_max} MB) is below memory ({self.memory} MB): the "
                "limit cannot be smaller than what is reserved"
            )
        if self.cpu_max is not None and self.cpu_max < self.cpu:
            raise ValueError(
                f"cpu_max ({self.cpu_max} MHz) is below cpu ({self.cpu} MHz): the limit "
                "cannot be smaller than what is reserved"
            )
        return self


class LogConfig(Spec):
    """Size-based rotation of a task's stdout and stderr files."""

    max_files: int = Field(default=10, ge=1, le=L.MAX_LOG_FILES)
    max_file_size: int = Field(default=10, ge=1, le=L.MAX_LOG_FILE_MB, description="MB per file")


_SIGNALS = {s.name for s in signal.Signals}


def signal_name(value: str, examples: str) -> str:
    """``value`` as a signal's canonical name (``hup`` → ``SIGHUP``), or ValueError."""
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in _SIGNALS:
        raise ValueError(f"{value!r} is not a signal name ({examples})")
    return name


class Check(Spec):
    """A health check of a service instance, run by the agent on its node.

    ``http`` passes on ``expected_status`` (any 2xx when unset), ``tcp`` when a
    connection opens, ``script`` when ``command`` exits 0 in the task's context.
    With ``on_failure: restart`` the task is restarted after
    ``failures_before_restart`` consecutive failures, ignoring failures during
    ``grace`` after the task (re)started.
    """

    name: Text = ""
    """Defaults to ``<service>-<type>-<n>``."""
    type: Literal["http", "tcp", "script"]
    port: Text = ""
    """A port label of the group; defaults to the service's port."""
    path: Text = ""
    method: Text = "GET"
    expected_status: int | None = Field(default=None, ge=100, le=599)
    command: Text = ""
    args: list[Text] = Field(default_factory=list, max_length=L.MAX_LIST_ITEMS)
    task: Text = ""
    """The task a script check runs in (its environment and directory); defaults to the
    group's first task."""
    interval: Duration = Field(default=10.0, ge=L.MIN_CHECK_INTERVAL, le=L.DAY)
    timeout: Duration = Field(default=2.0, gt=0, le=L.DAY)
    on_failure: Literal["restart", "ignore"] = "ignore"
    failures_before_restart: Whole = Field(default=3, ge=1, le=L.MAX_FAILURES, strict=True)
    grace: Duration = Field(default=1.0, ge=0, le=L.MAX_DELAY)

    @model_validator(mode="after")
    def _fields_for_type(self) -> Check:
        if self.type == "http" and not self.path.startswith("/"):
            raise ValueError("an http check needs a path starting with '/' (such as /health)")
        if self.type == "script" and not self.command:
            raise ValueError("a script check needs a command")
        if self.type != "script" and (self.command or self.args):
            raise ValueError(f"command and args are for script checks, not {self.type}")
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must not be longer than interval ({self.interval:g}s)"
            )
        return self


SERVICE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Service(Spec):
    """An instance of the group registered in the service catalog (and DNS).

    ``port`` is a label of the group's ``network.ports``; the catalog holds the
    node's address and the port the label got on that node.
    """

    name: str
    port: Text = ""
    tags: list[Text] = Field(default_factory=list, max_length=L.MAX_LIST_ITEMS)
    checks: list[Check] = Field(default_factory=list, max_length=L.MAX_CHECKS)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not SERVICE_NAME_RE.match(v):
            raise ValueError(
                f"service name {v!r} must be a DNS label: lower-case letters, digits and "
                "'-', at most 63 characters, not starting or ending with '-'"
            )
        return v

    @model_validator(mode="after")
    def _check_names(self) -> Service:
        seen: set[str] = set()
        for i, check in enumerate(self.checks):
            if not check.name:
                check.name = f"{self.name}-{check.type}-{i}"
            if check.name in seen:
                raise ValueError(f"two checks of service {self.name!r} are named {check.name!r}")
            seen.add(check.name)
        return self


class UpdateStrategy(Spec):
    """How a new version of a service group replaces the running one (a deployment).

    ``max_parallel`` instances are replaced at a time; the next batch starts only
    after those have been healthy for ``min_healthy_time``.  An instance not healthy
    within ``healthy_deadline`` is unhealthy; a deployment that makes no progress
    (no new healthy instance) for ``progress_deadline`` fails.  With ``canary: N``
    N new instances run beside the old ones until the deployment is promoted
    (``auto_promote`` does it once they are healthy).  ``auto_revert`` sends the job
    back to its last version that deployed successfully when a deployment fails.
    ``max_parallel: 0`` turns deployments off for the group (all at once, no gates).
    """

    max_parallel: Whole = _count(1)
    health_check: Literal["checks", "task_states"] = "checks"
    min_healthy_time: Duration = Field(default=10.0, ge=0, le=L.MAX_DELAY)
    healthy_deadline: Duration = Field(default=300.0, gt=0, le=L.MAX_DELAY)
    progress_deadline: Duration = Field(default=600.0, ge=0, le=L.MAX_POLICY_INTERVAL)
    """0 means no progress deadline."""
    auto_revert: bool = False
    canary: Whole = _count(0)
    auto_promote: bool = False
    stagger: Duration = Field(default=30.0, ge=0, le=L.MAX_DELAY)
    """Nomad's spacing of migrations; kept for file compatibility, batches are paced by health."""

    @model_validator(mode="after")
    def _deadlines(self) -> UpdateStrategy:
        if self.progress_deadline and self.progress_deadline < self.healthy_deadline:
            raise ValueError(
                f"progress_deadline ({self.progress_deadline:g}s) must be at least "
                f"healthy_deadline ({self.healthy_deadline:g}s), or 0 for none"
            )
        if self.min_healthy_time >= self.healthy_deadline:
            raise ValueError(
                f"min_healthy_time ({self.min_healthy_time:g}s) must be shorter than "
                f"healthy_deadline ({self.healthy_deadline:g}s)"
            )
        if self.auto_promote and not self.canary:
            raise ValueError("auto_promote needs canary > 0")
        return self


class Template(Spec):
    """A file rendered (Jinja2, sandboxed) into the task's directory before it starts.

    It may read variables (``var("app/config").db_url``), the service catalog
    (``service("db")``) and the task's environment (``env.NAME``), and is
    rendered again when what it read changes; then ``change_mode`` restarts or
    signals the task, or does nothing.  With ``env: true`` the rendered
    ``KEY=VALUE`` lines are added to the task's environment.
    """

    destination: Text
    data: str | None = Field(default=None, max_length=L.MAX_TEMPLATE_CHARS)
    source: Text | None = None
    change_mode: Literal["restart", "signal", "noop"] = "restart"
    change_signal: str | None = None
    env: bool = False

    @field_validator("destination")
    @classmethod
    def _relative(cls, v: str) -> str:
        parts = v.replace("\\", "/").split("/")
        if not v or v.startswith("/") or ".." in parts:
            raise ValueError(
                f"destination {v!r} must be a path inside the task's directory "
                "(relative, without '..'), such as local/app.conf"
            )
        return v

    @field_validator("change_signal")
    @classmethod
    def _signal(cls, v: str | None) -> str | None:
        return None if v is None else signal_name(v, "such as SIGHUP, SIGUSR1")

    @model_validator(mode="after")
    def _one_source(self) -> Template:
        if (self.data is None) == (self.source is None):
            raise ValueError("a template needs exactly one of data (inline) or source (a file)")
        if self.change_mode == "signal" and not self.change_signal:
            raise ValueError("change_mode: signal needs change_signal (such as SIGHUP)")
        return self


class LifecycleHook(StrEnum):
    PRESTART = "prestart"
    POSTSTART = "poststart"
    POSTSTOP = "poststop"


class Lifecycle(Spec):
    """When a task runs beside its group's main tasks (docs/lifecycle.md): ``prestart``
    before them (to completion, or beside them as a ``sidecar``), ``poststart`` once they
    run, ``poststop`` after they stopped."""

    hook: LifecycleHook
    sidecar: bool = False
    """Keep running (restarted when it exits) as long as the main tasks run, instead of
    running to completion."""

    @model_validator(mode="after")
    def _sidecar(self) -> Lifecycle:
        if self.sidecar and self.hook == LifecycleHook.POSTSTOP:
            raise ValueError(
                "a poststop task cannot be a sidecar: it runs after the main tasks have "
                "stopped, to completion (sidecar applies to prestart and poststart)"
            )
        return self


class Task(Spec):
    """One process (or container) of a group."""

    driver: Name
    config: dict[str, Any] = Field(default_factory=dict)
    env: dict[Key, Value] = Field(default_factory=dict, max_length=L.MAX_ENV_ENTRIES)
    resources: Resources = Field(default_factory=Resources)
    kill_timeout: Duration = Field(default=5.0, le=L.MAX_KILL_TIMEOUT)
    shutdown_delay: Duration = Field(default=0.0, ge=0, le=L.MAX_DELAY)
    """When the allocation stops: how long the task keeps running after it has left the
    service catalog, before it is signalled (so clients stop being sent to it first)."""
    kill_signal: str = "SIGTERM"
    user: Text | None = None
    meta: Meta = Field(default_factory=dict)
    logs: LogConfig = Field(default_factory=LogConfig)
    constraints: list[Constraint] = _rules()
    affinities: list[Affinity] = _rules()
    templates: list[Template] = Field(default_factory=list, max_length=L.MAX_TEMPLATES)
    lifecycle: Lifecycle | None = None
    """None: a main task.  Otherwise a hook task (see :class:`Lifecycle`)."""
    dispatch_payload: DispatchPayload | None = Field(default=None, exclude_if=_is_none)
    """Where a dispatched job's payload is written (docs/periodic.md, parameterized)."""
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, max_length=L.MAX_VOLUMES, exclude_if=_is_empty
    )
    """Where the task sees its group's ``volumes`` (docs/volumes.md)."""

    @field_validator("kill_signal")
    @classmethod
    def _signal(cls, v: str) -> str:
        return signal_name(v, "such as SIGTERM, SIGINT, SIGQUIT")

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return v


class Group(Spec):
    """A set of tasks placed together on one node, ``count`` times."""

    count: Whole = Field(default=1, ge=0, strict=True)
    """Bounded by the server's ``--max-count`` (podium.server.limits), which says so
    in its error; the model only asks for a whole number."""
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    reschedule: ReschedulePolicy = Field(default_factory=ReschedulePolicy)
    meta: Meta = Field(default_factory=dict)
    constraints: list[Constraint] = _rules()
    affinities: list[Affinity] = _rules()
    spread: list[Spread] = _rules()
    max_per_node: Whole | None = Field(default=None, ge=1, le=L.COUNT_CEILING, strict=True)
    network: Network = Field(default_factory=Network)
    migrate: Migrate = Field(default_factory=Migrate)
    update: UpdateStrategy | None = None
    """Rolling updates of a service group; the job's ``update`` when unset."""
    services: list[Service] = Field(default_factory=list, max_length=L.MAX_SERVICES)
    depends_on: dict[str, Literal["started", "healthy", "completed_successfully"]] = Field(
        default_factory=dict
    )
    """Groups of the same job this one waits for when it is first placed (Compose's
    ``depends_on``): every instance of each running, healthy, or exited 0."""
    tasks: dict[str, Task] = Field(max_length=L.MAX_TASKS)
    # Autoscaling (docs/autoscaling.md): bounds for the count, and the autoscaler's policy.
    scaling: Scaling | None = Field(default=None, exclude_if=_is_none)

    @model_validator(mode="after")
    def _scaling_bounds(self) -> Group:
        if self.scaling is None:
            return self
        if "count" not in self.model_fields_set:
            self.count = self.scaling.min  # as Nomad: a group with bounds starts at min
        self.scaling.check_count(self.count)
        return self

    volumes: dict[Name, VolumeRequest] = Field(
        default_factory=dict, max_length=L.MAX_VOLUMES, exclude_if=_is_empty
    )
    """Host volumes the group needs on its node, by the name its tasks mount them as."""

    @model_validator(mode="after")
    def _volume_mounts(self) -> Group:
        check_volume_mounts(self.volumes, self.tasks)
        return self

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: dict[str, Task]) -> dict[str, Task]:
        if not v:
            raise ValueError("a group needs at least one task")
        for name in v:
            _check_name(name, "task name")
        if all(t.lifecycle is not None for t in v.values()):
            raise ValueError(
                "a group needs at least one main task (a task without lifecycle); "
                f"every task here is a lifecycle hook: {', '.join(sorted(v))}"
            )
        return v

    @model_validator(mode="after")
    def _services(self) -> Group:
        names: set[str] = set()
        for svc in self.services:
            if svc.name in names:
                raise ValueError(f"service {svc.name!r} is listed twice")
            names.add(svc.name)
            for label in [svc.port] + [c.port for c in svc.checks]:
                if label and label not in self.network.ports:
                    known = ", ".join(sorted(self.network.ports)) or "none"
                    raise ValueError(
                        f"service {svc.name!r}: port {label!r} is not a label of the "
                        f"group's network.ports (known: {known})"
                    )
            for check in svc.checks:
                if check.type in ("http", "tcp") and not (check.port or svc.port):
                    raise ValueError(
                        f"service {svc.name!r}: {check.type} check {check.name!r} needs a "
                        "port (the service's port or the check's own)"
                    )
                if check.task and check.task not in self.tasks:
                    raise ValueError(
                        f"service {svc.name!r}: check {check.name!r} names task "
                        f"{check.task!r}, which is not in the group"
                    )
        return self


class JobSpec(Spec):
    """A job file, validated.  ``job`` is the job's id."""

    job: Name
    namespace: str | None = Field(default=None, exclude_if=_is_none)
    """The namespace the file asks for; the request's ``namespace`` may name the same one
    or none (a different one is an error).  The server keeps it on the job, not in the
    stored spec (see :func:`podium.server.namespaces.resolve_spec_namespace`)."""
    type: JobType = JobType.SERVICE
    priority: int = Field(default=50, ge=1, le=100)
    meta: Meta = Field(default_factory=dict)
    datacenters: list[Text] = Field(default_factory=lambda: ["*"], max_length=L.MAX_LIST_ITEMS)
    """Datacenters the job may run in; ``*`` (the default) means all, globs allowed."""
    node_pool: Text = "default"
    constraints: list[Constraint] = _rules()
    affinities: list[Affinity] = _rules()
    spread: list[Spread] = _rules()
    update: UpdateStrategy | None = None
    """The default ``update`` of every group that has none (service jobs only)."""
    groups: dict[str, Group] = Field(max_length=L.MAX_GROUPS)
    # -- job types (docs/periodic.md; podium.models.periodic and .dispatch) --------------
    periodic: Periodic | None = Field(default=None, exclude_if=_is_none)
    """A batch job launched on a cron schedule: a template, each launch a child job."""
    parameterized: Parameterized | None = Field(default=None, exclude_if=_is_none)
    """A batch job run on demand (``job dispatch``): a template, each dispatch a child."""
    payload: str | None = Field(
        default=None, max_length=(MAX_PAYLOAD + 2) // 3 * 4, exclude_if=_is_none
    )
    """A dispatched child's payload (base64), set by the server; never in a job file."""

    @field_validator("job")
    @classmethod
    def _id(cls, v: str) -> str:
        # a child of a periodic or parameterized job (the server names them)
        if is_child_id(v):
            return v
        return _check_name(v, "job id")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return None if v is None else check_namespace(v)

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
        _check_depends_on(self.groups)
        for name, group in self.groups.items():
            strategy = group.update or self.update
            if strategy is not None and group.count and strategy.canary > group.count:
                raise ValueError(
                    f"group {name!r}: update.canary ({strategy.canary}) is more than its "
                    f"count ({group.count})"
                )
            if self.type != JobType.BATCH and "completed_successfully" in (
                group.depends_on.values()
            ):
                raise ValueError(
                    f"group {name!r}: depends_on ... completed_successfully needs a batch job "
                    f"(a {self.type.value} job restarts a task that exits)"
                )
        for name, group in self.groups.items():
            if group.scaling is not None and self.type != JobType.SERVICE:
                raise ValueError(
                    f"group {name!r}: scaling is for service jobs, not {self.type.value} jobs"
                )
        if self.type != JobType.SERVICE and (
            self.update is not None or any(g.update is not None for g in self.groups.values())
        ):
            raise ValueError(
                f"update (rolling deployments) is for service jobs, not {self.type.value} jobs"
            )
        _check_job_type_blocks(self)
        return self

    def update_strategy(self, group: str) -> UpdateStrategy | None:
        """The group's rolling-update rules (its own, else the job's); None when the
        group deploys all at once (no update block, or ``max_parallel: 0``)."""
        strategy = self.groups[group].update or self.update
        if strategy is None or strategy.max_parallel == 0:
            return None
        return strategy

    @property
    def id(self) -> str:
        return self.job

    def group(self, name: str) -> Group:
        return self.groups[name]


def _check_job_type_blocks(spec: JobSpec) -> None:
    """``periodic`` and ``parameterized`` are for batch jobs, one at a time; a task's
    ``dispatch_payload`` needs a parameterized job that may take a payload."""
    for block in ("periodic", "parameterized"):
        if getattr(spec, block) is not None and spec.type != JobType.BATCH:
            raise ValueError(
                f"{block} is for batch jobs, not {spec.type.value} jobs (each launch runs to "
                "completion: add `type: batch`)"
            )
    if spec.periodic is not None and spec.parameterized is not None:
        raise ValueError(
            "a job is periodic or parameterized, not both (a periodic job launches itself; "
            "a parameterized one waits to be dispatched)"
        )
    for gname, group in spec.groups.items():
        for tname, task in group.tasks.items():
            if task.dispatch_payload is None:
                continue
            where = f"group {gname!r} task {tname!r}: dispatch_payload"
            if spec.parameterized is None and not is_child_id(spec.job):
                raise ValueError(f"{where} needs a parameterized job (add `parameterized:`)")
            if spec.parameterized is not None and spec.parameterized.payload == "forbidden":
                raise ValueError(f"{where} asks for a payload that parameterized forbids")


def _check_depends_on(groups: dict[str, Group]) -> None:
    for name, group in groups.items():
        for dep in group.depends_on:
            if dep not in groups:
                raise ValueError(f"group {name!r} depends on {dep!r}, which is not a group")
            if dep == name:
                raise ValueError(f"group {name!r} depends on itself")
    seen: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ValueError(f"groups depend on each other in a cycle: {cycle}")
        if name in seen:
            return
        path.append(name)
        for dep in groups[name].depends_on:
            visit(dep)
        path.pop()
        seen.add(name)

    for name in groups:
        visit(name)


def tasks_changed(old: Group, new: Group) -> bool:
    """True when an allocation of ``old`` cannot be updated in place to ``new``.

    Changing a task's driver, config, environment, resources, user, or the set
    of tasks needs a new process; count, restart and reschedule policies and
    metadata do not (Nomad's ``tasksUpdated`` draws the same line).
    """
    if old.tasks.keys() != new.tasks.keys() or old.network != new.network:
        return True
    if old.volumes != new.volumes:  # another host directory: a new allocation
        return True
    # placement rules are the scheduler's business, not a reason to restart a process
    ignore = {"meta", "constraints", "affinities"}
    for name, t_old in old.tasks.items():
        t_new = new.tasks[name]
        if t_old.model_dump(exclude=ignore) != t_new.model_dump(exclude=ignore):
            return True
    return False
