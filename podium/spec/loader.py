"""Job files and job text in, a validated :class:`~podium.models.job.JobSpec` out.

The entry points the CLI (``podium job run file.yaml``) and the SDK use.  They
join the YAML reader (positions, duplicates, syntax errors) to the validator
(fields, types, driver configs) and report both kinds of problem together, so
one run of the command shows everything to fix in the file.
"""

from __future__ import annotations

import os

from podium.errors import SpecError, SpecIssue
from podium.models.job import JobSpec
from podium.spec.messages import field_names
from podium.spec.validate import sort_issues, validate_job_dict
from podium.spec.yamlsource import load_yaml


def parse_job_text(text: str, source: str | None = None) -> JobSpec:
    """Parse and validate a job written in YAML (or JSON, which is YAML).

    ``source`` is the file name used in messages.  Raises :class:`SpecError`
    carrying every issue found, each with its dotted path, line and column.
    """
    parsed = load_yaml(text, source)
    if parsed.empty:
        issue = SpecIssue(
            "",
            "the job file is empty",
            hint="a job is a mapping of " + ", ".join(field_names(JobSpec)),
        )
        raise SpecError([issue], source=source)
    try:
        spec = validate_job_dict(parsed.data, source, parsed.locations)
    except SpecError as exc:
        raise SpecError(sort_issues(parsed.issues + exc.issues), source=source) from None
    if parsed.issues:
        raise SpecError(sort_issues(parsed.issues), source=source)
    return spec


def load_job_file(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate the job file at ``path``.

    A file that is missing, unreadable or not UTF-8 raises :class:`SpecError`
    (not ``OSError``), so callers have one exception to catch and print.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpecError(
            [SpecIssue("", f"cannot read job file: {reason[0].lower()}{reason[1:]}")],
            source=source,
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        issue = SpecIssue(
            "",
            f"the job file is not UTF-8 text (byte 0x{raw[exc.start]:02x})",
            line,
            column,
            hint="save it as UTF-8",
        )
        raise SpecError([issue], source=source) from None
    return parse_job_text(text, source)
