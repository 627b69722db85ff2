"""Smaller kept allocations: what the store, and an agent, keep of each one, shared where equal.

A pydantic model instance carries a ``__dict__`` and a ``__pydantic_fields_set__``
set of its own; for a reported allocation (the allocation, its resources twice,
a task state, two task events) the six sets were ~3.9 KB of ~7.7 KB per
allocation in memory.  (Task states and events have since become slotted
dataclasses, with neither; their strings are still interned.)  Stored models are
never mutated (writers copy them), so equal sets, equal resources and equal short
strings can be one object each.

Everything here is invisible to readers: each attribute keeps an equal value
(``model_fields_set`` included), only duplicates are dropped.  The server's store
compacts what it stores; an agent what its allocation runners hold (~5.3 -> ~2.1 KB
an allocation as a sync answer parses it, measured with tracemalloc); the simulated
agents what they hold.  It lives with the models so that all three can use it.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel

from podium.models.alloc import Allocation, TaskState
from podium.models.job import Resources

_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
_RESOURCES: dict[tuple[int, int, int | None, int | None], Resources] = {}
_LIMIT = 4096
"""Distinct entries kept per cache (beyond that, objects stay as they are)."""
_set_attr = object.__setattr__


def _share_fields_set(obj: BaseModel) -> None:
    own = obj.__pydantic_fields_set__
    key = frozenset(own)
    shared = _FIELDS_SETS.get(key)
    if shared is None:
        if len(_FIELDS_SETS) >= _LIMIT:
            return
        shared = _FIELDS_SETS[key] = set(key)
    if shared is not own:
        _set_attr(obj, "__pydantic_fields_set__", shared)


def _resources(res: Resources) -> Resources:
    if type(res) is not Resources or res.__pydantic_extra__ or res.devices:
        return res
    key = (res.cpu, res.memory, res.memory_max, res.cpu_max)
    shared = _RESOURCES.get(key)
    if shared is None:
        if len(_RESOURCES) >= _LIMIT:
            return res
        _share_fields_set(res)
        shared = _RESOURCES[key] = res
    return shared


def plain_resources(cpu: int, memory: int) -> Resources:
    """The shared ``Resources(cpu=cpu, memory=memory)`` (no limits, no devices), built once
    per pair: the scheduler gives one to every allocation it places and one per task, and
    stored allocations share them anyway (:func:`compact_alloc`)."""
    key = (cpu, memory, None, None)
    shared = _RESOURCES.get(key)
    if shared is None:
        shared = Resources(cpu=cpu, memory=memory)
        if len(_RESOURCES) < _LIMIT:
            _share_fields_set(shared)
            _RESOURCES[key] = shared
    return shared


def _intern(values: dict[str, Any], *names: str) -> None:
    for name in names:
        value = values.get(name)
        if type(value) is str and len(value) <= 64:
            values[name] = sys.intern(value)


def compact_alloc(alloc: Allocation) -> Allocation:
    """Share ``alloc``'s duplicate parts with other stored allocations (in place)."""
    _share_fields_set(alloc)
    values = alloc.__dict__
    values["resources"] = res = _resources(alloc.resources)
    tasks = alloc.task_resources
    for name, task_res in tasks.items():
        shared = res if task_res == res else _resources(task_res)
        if shared is not task_res:
            tasks[name] = shared
    _intern(values, "client_description", "desired_description", "namespace", "group")
    for state in alloc.task_states.values():
        compact_task_state(state)
    return alloc


def compact_task_state(state: TaskState) -> None:
    """Intern the short strings of ``state``'s events (in place; a slotted dataclass has
    no dict or fields set to share)."""
    for event in state.events:
        if type(event.type) is str and len(event.type) <= 64:
            event.type = sys.intern(event.type)
        if type(event.message) is str and len(event.message) <= 64:
            event.message = sys.intern(event.message)
