"""An allocation's resource usage, as its agent measures it (``GET
/v1/allocation/{id}/stats``, the SDK's ``alloc_stats``, ``podium alloc status``).

``cpu_percent`` is a percent of one core (200.0: two cores busy), over the interval since
the agent's previous sample of the task (or, for Docker, the engine's own sample window);
memory is what the task's cgroup (or container) charges, else its processes' RSS.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class TaskResourceUsage(BaseModel):
    cpu_percent: float = 0.0
    """Percent of one core."""
    memory_bytes: int = 0
    memory_limit_bytes: int | None = None
    """The hard memory limit the task runs under; None when it has none."""
    pids: int = 0
    """Processes the task runs now."""


class AllocResourceUsage(BaseModel):
    alloc_id: str
    node_id: str
    timestamp: float
    """When the agent sampled (Unix time, seconds)."""
    cpu_percent: float = 0.0
    """The tasks' sum."""
    memory_bytes: int = 0
    """The tasks' sum."""
    tasks: dict[str, TaskResourceUsage] = Field(default_factory=dict)
    """The running tasks, by name (a task that is not running is left out)."""
