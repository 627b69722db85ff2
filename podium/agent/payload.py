"""What a task of a dispatched job finds (docs/periodic.md): the dispatch's payload in
its directory and every ``meta`` entry in its environment.

Two helpers the runner calls where it prepares a task (its environment, its
directories), so the runner itself stays as it was: :func:`meta_env` and
:func:`write_payload`.
"""

from __future__ import annotations

import os
import re

from podium.models import JobSpec, Task
from podium.models.dispatch import decode_payload

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


def meta_env(spec: JobSpec, group: str, task: str) -> dict[str, str]:
    """``PODIUM_META_<KEY>`` for the job's, the group's and the task's ``meta`` (the most
    specific wins; a dispatch's meta is merged into the job's), the key upper-cased and
    anything but letters, digits and '_' made '_'."""
    g = spec.groups[group]
    merged = {**spec.meta, **g.meta, **g.tasks[task].meta}
    return {f"PODIUM_META_{_NOT_NAME.sub('_', k).upper()}": v for k, v in merged.items()}


def write_payload(spec: JobSpec, task: Task, task_dir: str) -> str | None:
    """Write the dispatch's payload where ``task`` asked for it (``dispatch_payload:
    {file: NAME}`` → ``<task_dir>/NAME``, mode 0644), before each start; returns the
    path, or None when there is nothing to write."""
    if task.dispatch_payload is None or spec.payload is None:
        return None
    path = os.path.join(task_dir, task.dispatch_payload.file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = decode_payload(spec.payload)
    tmp = f"{path}.podium-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
