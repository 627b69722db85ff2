"""A group's ``scaling`` block in a job file: what it accepts, its defaults, and the error
of each mistake, with its field path (docs/autoscaling.md)."""

from __future__ import annotations

from textwrap import dedent, indent

import pytest

from podium.errors import SpecError
from podium.spec import parse_job_text


def job(scaling: str, count: str = "", job_type: str = "service") -> str:
    head = f"job: j\ntype: {job_type}\ngroups:\n  g:\n"
    if count:
        head += f"    count: {count}\n"
    return (
        head
        + "    scaling:\n"
        + indent(dedent(scaling), "      ")
        + "    tasks:\n      t: {driver: mock}\n"
    )


def test_defaults_and_count_from_min() -> None:
    spec = parse_job_text(job("min: 2\nmax: 4\npolicy: {target: 50}\n"))
    group = spec.groups["g"]
    assert group.count == 2  # left out: the count starts at min
    assert group.scaling is not None and group.scaling.enabled
    policy = group.scaling.policy
    assert policy is not None
    assert (policy.metric, policy.target, policy.cooldown, policy.evaluation_interval) == (
        "cpu",
        50.0,
        30.0,
        10.0,
    )
    assert policy.tolerance == 0.1


def test_a_prometheus_policy_and_bounds_only() -> None:
    spec = parse_job_text(
        job(
            """\
            max: 3
            policy:
              metric: prometheus
              query: {url: "http://prom:9090/", expr: "sum(up)"}
              target: "100"
              cooldown: 1m
            """,
            count="3",
        )
    )
    scaling = spec.groups["g"].scaling
    assert scaling is not None and scaling.policy is not None and scaling.policy.query
    assert scaling.policy.query.url == "http://prom:9090" and scaling.policy.target == 100
    bounds = parse_job_text(job("{min: 0, max: 2}\n", count="1")).groups["g"].scaling
    assert bounds is not None and bounds.policy is None


@pytest.mark.parametrize(
    ("scaling", "count", "job_type", "path", "says"),
    [
        ("{min: 3, max: 2}", "", "service", "groups.g.scaling", "scaling.min (3) is above"),
        ("{min: 1, max: 3}", "5", "service", "groups.g", "count 5 is outside the group's"),
        ("{max: 3, policy: {target: 0}}", "", "service", "groups.g.scaling.policy.target", "0"),
        ("{max: 3, policy: {target: -5}}", "", "service", "groups.g.scaling.policy.target", ""),
        ("{max: 3, policy: {target: .inf}}", "", "service", "groups.g.scaling.policy.target", ""),
        (
            "{max: 3, policy: {target: 5, evaluation_interval: 100ms}}",
            "",
            "service",
            "groups.g.scaling.policy.evaluation_interval",
            "at least 1s",
        ),
        (
            "{max: 3, policy: {metric: prometheus, target: 5}}",
            "",
            "service",
            "groups.g.scaling.policy",
            "metric prometheus needs a query",
        ),
        (
            "{max: 3, policy: {target: 5, query: {url: 'http://p', expr: x}}}",
            "",
            "service",
            "groups.g.scaling.policy",
            "query is for metric prometheus, not cpu",
        ),
        (
            "{max: 3, policy: {metric: prometheus, target: 5, query: {url: 'p:9090', expr: x}}}",
            "",
            "service",
            "groups.g.scaling.policy.query.url",
            "must start with http:// or https://",
        ),
        ("{max: 3, policy: {metric: disk, target: 5}}", "", "service", "", "'cpu'"),
        ("{min: 1}", "", "service", "groups.g.scaling.max", ""),
        ("{max: 3, maxx: 4}", "", "service", "groups.g.scaling.maxx", "unknown field"),
        ("{max: 2}", "", "batch", "", "scaling is for service jobs, not batch jobs"),
    ],
)
def test_mistakes(scaling: str, count: str, job_type: str, path: str, says: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_job_text(job(scaling + "\n", count, job_type), "job.yaml")
    text = str(info.value)
    assert says in text, text
    if path:
        assert any(i.path.startswith(path) for i in info.value.issues), info.value.issues
