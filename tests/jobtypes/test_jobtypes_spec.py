"""Job files with ``periodic``, ``parameterized`` and ``dispatch_payload``: what is
accepted, and what is refused with a message that says what and where."""

from __future__ import annotations

from textwrap import dedent

import pytest

from podium.errors import SpecError, SpecIssue
from podium.models.dispatch import MAX_PAYLOAD, Parameterized, check_dispatch
from podium.spec import parse_job_text

BASE = """\
job: j
type: {type}
{extra}
groups:
  g:
    tasks:
      t:
        driver: raw_exec
        config: {{command: /bin/true}}
{task}
"""


def parse(extra: str, job_type: str = "batch", task: str = "") -> object:
    text = BASE.format(type=job_type, extra=dedent(extra).strip(), task=task)
    return parse_job_text(text, "job.yaml")


def issues(extra: str, job_type: str = "batch", task: str = "") -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        parse(extra, job_type, task)
    return info.value.issues


def test_periodic_batch_job_is_accepted_with_its_defaults() -> None:
    spec = parse('periodic: {cron: "*/5 * * * *", time_zone: Europe/Paris}')
    assert spec.periodic is not None  # type: ignore[attr-defined]
    p = spec.periodic  # type: ignore[attr-defined]
    assert (p.cron, p.time_zone, p.prohibit_overlap, p.enabled) == (
        "*/5 * * * *",
        "Europe/Paris",
        False,
        True,
    )
    six = parse('periodic: {cron: "*/2 * * * * *", prohibit_overlap: true}')
    assert six.periodic.prohibit_overlap  # type: ignore[attr-defined]


@pytest.mark.parametrize("job_type", ["service", "system"])
def test_periodic_is_refused_on_service_and_system_jobs(job_type: str) -> None:
    (issue,) = issues('periodic: {cron: "* * * * *"}', job_type)
    assert f"periodic is for batch jobs, not {job_type} jobs" in issue.message


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("* * *", "has 3 fields"),
        ("61 * * * *", "is not a valid expression"),
        ("* * * * * * *", "has 7 fields"),
        ("*/0 * * * *", "is not a valid expression"),
    ],
)
def test_a_bad_cron_says_why_at_its_place(cron: str, says: str) -> None:
    (issue,) = issues(f'periodic: {{cron: "{cron}"}}')
    assert issue.path == "periodic.cron"
    assert says in issue.message
    assert issue.line == 3


def test_an_unknown_time_zone_is_refused() -> None:
    (issue,) = issues('periodic: {cron: "* * * * *", time_zone: Mars/Olympus}')
    assert issue.path == "periodic.time_zone"
    assert "not a known IANA time zone" in issue.message


def test_periodic_and_parameterized_together_are_refused() -> None:
    (issue,) = issues('periodic: {cron: "* * * * *"}\nparameterized: {}')
    assert "periodic or parameterized, not both" in issue.message


def test_parameterized_rules() -> None:
    spec = parse("parameterized: {payload: required, meta_required: [name], meta_optional: [x]}")
    q = spec.parameterized  # type: ignore[attr-defined]
    assert (q.payload, q.meta_required, q.meta_optional) == ("required", ["name"], ["x"])
    (issue,) = issues("parameterized: {payload: sometimes}")
    assert issue.path == "parameterized.payload"
    (issue,) = issues("parameterized: {meta_required: [a], meta_optional: [a]}")
    assert "both required and optional" in issue.message
    (issue,) = issues("parameterized: {meta_required: [has-dash]}")
    assert "PODIUM_META_" in issue.message
    (issue,) = issues("parameterized: {}", "service")
    assert "parameterized is for batch jobs" in issue.message


def test_dispatch_payload_needs_a_parameterized_job_that_takes_one() -> None:
    task = "        dispatch_payload: {file: input.txt}"
    assert parse("parameterized: {payload: required}", task=task)
    (issue,) = issues("", task=task)
    assert "dispatch_payload needs a parameterized job" in issue.message
    (issue,) = issues("parameterized: {payload: forbidden}", task=task)
    assert "forbids" in issue.message
    (issue,) = issues("parameterized: {}", task="        dispatch_payload: {file: ../x}")
    assert "inside the task's directory" in issue.message


def test_a_job_id_with_a_slash_is_refused_in_a_job_file() -> None:
    with pytest.raises(SpecError) as info:
        parse_job_text("job: a/b\ngroups: {g: {tasks: {t: {driver: mock}}}}\n", "job.yaml")
    assert info.value.issues[0].path == "job"


def test_dispatch_checks() -> None:
    rules = Parameterized(payload="required", meta_required=["name"], meta_optional=["lang"])
    assert check_dispatch(rules, {"name": "x"}, b"data") == []
    got = check_dispatch(rules, {"lang": "fr", "oops": "1"}, None)
    assert any("required meta missing: name" in p for p in got)
    assert any("not declared by the job: oops" in p for p in got)
    assert any("requires a payload" in p for p in got)
    assert check_dispatch(Parameterized(payload="forbidden"), {}, b"x") == [
        "the job forbids a payload"
    ]
    big = check_dispatch(Parameterized(), {}, b"x" * (MAX_PAYLOAD + 1))
    assert big and "at most 16,384" in big[0]
    assert check_dispatch(Parameterized(), {}, b"x" * MAX_PAYLOAD) == []
