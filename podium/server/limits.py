"""The server's own bound on job size: ``--max-count`` (issue 14).

The job model bounds every field (podium.models.limits); how many instances one job may
ask for is the cluster's call, so the server checks it at every door a count comes in by:
registration (``job run``, Compose, revert), ``job plan`` and ``job scale``.  A refused
spec changes nothing; the error names the field and the option.
"""

from __future__ import annotations

from podium.errors import SpecError, SpecIssue
from podium.models import JobSpec
from podium.models.limits import COUNT_CEILING, DEFAULT_MAX_COUNT

__all__ = ["COUNT_CEILING", "DEFAULT_MAX_COUNT", "check_counts"]

HINT = "ask for fewer instances, or start the server with a larger --max-count"


def check_counts(spec: JobSpec, max_count: int) -> None:
    """Raise SpecError unless every group's count, and the job's total, is within
    ``max_count``.  (A system job's size is its node count: the scheduler bounds that by
    placing at most MAX_PLACEMENTS per evaluation.)"""
    issues: list[SpecIssue] = []
    total = 0
    for name, group in spec.groups.items():
        total += group.count
        if group.count > max_count:
            issues.append(
                SpecIssue(
                    f"groups.{name}.count",
                    f"{group.count} is above this server's limit of {max_count} (--max-count)",
                    hint=HINT,
                )
            )
    if not issues and total > max_count:
        issues.append(
            SpecIssue(
                "groups",
                f"the groups' counts add up to {total} instances, above this server's limit "
                f"of {max_count} per job (--max-count)",
                hint=HINT,
            )
        )
    if issues:
        raise SpecError(issues)
