"""Plain typed data shared by every layer; no I/O here.

Everything else may import this package; it imports nothing of Podium's but
``podium.errors``.
"""

from __future__ import annotations

from podium.models.alloc import (
    AllocatedPort,
    Allocation,
    AllocClientUpdate,
    ClientStatus,
    DesiredStatus,
    RescheduleEvent,
    TaskEvent,
    TaskState,
    TaskStateName,
)
from podium.models.duration import Duration, format_duration, parse_duration
from podium.models.evaluation import AllocMetric, EvalStatus, Evaluation, TriggeredBy
from podium.models.job import (
    Affinity,
    Constraint,
    Group,
    JobSpec,
    JobType,
    LogConfig,
    Migrate,
    Network,
    Port,
    ReschedulePolicy,
    Resources,
    RestartMode,
    RestartPolicy,
    Spread,
    SpreadTarget,
    Task,
    tasks_changed,
)
from podium.models.node import (
    DrainStrategy,
    DriverInfo,
    Eligibility,
    Node,
    NodeResources,
    NodeStatus,
)
from podium.models.plan import AllocStop, GroupChanges, Plan, PlanResult, SchedulerResult
from podium.models.state import Job, JobStatus, JobVersion
from podium.models.taskconfig import DRIVER_CONFIGS, ExecConfig, MockConfig, parse_config

__all__ = [
    "DRIVER_CONFIGS",
    "Affinity",
    "AllocClientUpdate",
    "AllocMetric",
    "AllocStop",
    "AllocatedPort",
    "Allocation",
    "ClientStatus",
    "Constraint",
    "DesiredStatus",
    "DrainStrategy",
    "DriverInfo",
    "Duration",
    "Eligibility",
    "EvalStatus",
    "Evaluation",
    "ExecConfig",
    "Group",
    "GroupChanges",
    "Job",
    "JobSpec",
    "JobStatus",
    "JobType",
    "JobVersion",
    "LogConfig",
    "Migrate",
    "MockConfig",
    "Network",
    "Node",
    "NodeResources",
    "NodeStatus",
    "Plan",
    "PlanResult",
    "Port",
    "RescheduleEvent",
    "ReschedulePolicy",
    "Resources",
    "RestartMode",
    "RestartPolicy",
    "SchedulerResult",
    "Spread",
    "SpreadTarget",
    "Task",
    "TaskEvent",
    "TaskState",
    "TaskStateName",
    "TriggeredBy",
    "format_duration",
    "parse_config",
    "parse_duration",
    "tasks_changed",
]
