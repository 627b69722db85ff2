"""The cluster-wide scheduler configuration: which job types may preempt.

One record for the whole cluster, stored durably (the store's ``scheduler_config``
table, key ``config``), read by every scheduler run through its snapshot and changed
by operators (``podium operator scheduler set-config``, ``PUT
/v1/operator/scheduler/configuration``).  Until someone writes it the defaults hold,
which are Nomad's: system jobs preempt, service and batch jobs do not.  The record
is tiny and read once per evaluation that needs it (only when a placement found no
node), so keeping it as a model costs nothing on the hot path.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PREEMPTION_TYPES = ("service", "batch", "system")
"""The job types with a scheduler that can preempt (in the order people list them)."""

PRIORITY_DELTA = 10
"""A job preempts only allocations of jobs at least this many priority points below it
(Nomad's margin): two jobs of nearly equal priority never evict each other."""


class PreemptionConfig(BaseModel):
    """Per scheduler type, whether a placement that fits nowhere may stop lower-priority
    allocations to make room."""

    model_config = ConfigDict(extra="forbid")

    # strict: a "0" or a 1 is not taken for a boolean (the API refuses it, 400)
    system_scheduler_enabled: bool = Field(default=True, strict=True)
    service_scheduler_enabled: bool = Field(default=False, strict=True)
    batch_scheduler_enabled: bool = Field(default=False, strict=True)

    def enabled(self, job_type: str) -> bool:
        """Whether jobs of ``job_type`` may preempt (unknown types never do)."""
        if job_type == "system":
            return self.system_scheduler_enabled
        if job_type == "service":
            return self.service_scheduler_enabled
        if job_type == "batch":
            return self.batch_scheduler_enabled
        return False

    def types(self) -> list[str]:
        """The job types that may preempt, in :data:`PREEMPTION_TYPES` order."""
        return [t for t in PREEMPTION_TYPES if self.enabled(t)]

    @classmethod
    def of_types(cls, types: list[str]) -> PreemptionConfig:
        """Preemption on for exactly ``types`` (each one of :data:`PREEMPTION_TYPES`);
        a ValueError names an unknown type."""
        unknown = [t for t in types if t not in PREEMPTION_TYPES]
        if unknown:
            raise ValueError(
                f"unknown scheduler type(s) {', '.join(repr(t) for t in unknown)}: "
                f"choose among {', '.join(PREEMPTION_TYPES)}"
            )
        return cls(
            system_scheduler_enabled="system" in types,
            service_scheduler_enabled="service" in types,
            batch_scheduler_enabled="batch" in types,
        )


class SchedulerConfiguration(BaseModel):
    """The stored record (``create_index``/``modify_index`` 0: never written, defaults)."""

    model_config = ConfigDict(extra="ignore")

    id: str = "config"
    """The record's key: there is one."""
    preemption_config: PreemptionConfig = PreemptionConfig()
    create_index: int = 0
    modify_index: int = 0


DEFAULT_SCHEDULER_CONFIG = SchedulerConfiguration()
"""What holds until an operator writes the configuration."""


class SchedulerConfigRequest(BaseModel):
    """``PUT /v1/operator/scheduler/configuration``: the new preemption settings.

    ``check_index`` (optional) makes the write conditional: it succeeds only while the
    stored record's ``modify_index`` is that value (0: never written), as Nomad's
    ``?cas=``."""

    model_config = ConfigDict(extra="forbid")

    preemption_config: PreemptionConfig
    check_index: int | None = Field(default=None, ge=0, strict=True)
