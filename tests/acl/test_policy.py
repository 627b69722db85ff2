"""Policy files and what a set of policies grants (pure: no server)."""

from __future__ import annotations

import pytest

from podium.errors import SpecError
from podium.models import acl as caps
from podium.models.acl import Grants, Level
from podium.spec.acl_policy import parse_policy

ISSUE_EXAMPLE = """\
namespaces:
  default: {policy: read}                                  # read | write | deny
  team-a: {capabilities: [submit-job, read-logs], variables: {"app/*": [read, write]}}
node: read
operator: deny
"""


def grants(*texts: str) -> Grants:
    return Grants([parse_policy(t) for t in texts])


def test_the_issues_example_parses_and_grants_what_it_says() -> None:
    g = grants(ISSUE_EXAMPLE)
    assert g.allows(caps.LIST_JOBS, "default") and g.allows(caps.READ_JOB, "default")
    assert not g.allows(caps.SUBMIT_JOB, "default")
    assert not g.allows(caps.READ_LOGS, "default"), "read is not read-logs (Nomad's rule)"
    assert g.allows(caps.SUBMIT_JOB, "team-a") and g.allows(caps.READ_LOGS, "team-a")
    assert not g.allows(caps.SCALE_JOB, "team-a")
    assert not g.allows(caps.LIST_JOBS, "team-b"), "a namespace not named grants nothing"
    assert g.allows_variable("read", "team-a", "app/db")
    assert g.allows_variable("write", "team-a", "app/db")
    assert not g.allows_variable("destroy", "team-a", "app/db")
    assert not g.allows_variable("read", "team-a", "other/db")
    assert g.allows_variable("read", "default", "anything"), "policy read reads variables"
    assert not g.allows_variable("write", "default", "anything")
    assert g.level("node", Level.READ) and not g.level("node", Level.WRITE)
    assert not g.level("operator", Level.READ)


def test_write_grants_every_capability() -> None:
    g = grants("namespaces: {prod: {policy: write}}")
    for cap in caps.CAPABILITIES:
        assert g.allows(cap, "prod"), cap
    assert g.allows_variable("destroy", "prod", "x/y")


def test_globs_and_the_most_specific_rule() -> None:
    g = grants(
        "namespaces:\n"
        "  'team-*': {policy: read}\n"
        "  team-secret: {policy: deny}\n"
        "  '*': {capabilities: [list-jobs]}\n"
    )
    assert g.allows(caps.READ_JOB, "team-x")
    assert not g.allows(caps.READ_JOB, "team-secret") and not g.allows(
        caps.LIST_JOBS, "team-secret"
    )
    assert g.allows(caps.LIST_JOBS, "other") and not g.allows(caps.READ_JOB, "other")


def test_policies_add_up_and_deny_wins() -> None:
    a = "namespaces: {web: {capabilities: [submit-job]}}"
    b = "namespaces: {web: {capabilities: [read-logs]}}\nnode: write"
    g = grants(a, b)
    assert g.allows(caps.SUBMIT_JOB, "web") and g.allows(caps.READ_LOGS, "web")
    assert g.level("node", Level.WRITE)
    denied = grants(a, "namespaces: {web: {policy: deny}}\nnode: deny", b)
    assert not denied.allows(caps.SUBMIT_JOB, "web")
    assert not denied.level("node", Level.READ)


def test_nothing_is_granted_by_default() -> None:
    g = grants("")
    assert not any(g.allows(c, "default") for c in caps.CAPABILITIES)
    assert not g.level("node", Level.READ) and not g.level("operator", Level.READ)
    assert not g.may_list_variables("default")


def test_management_allows_everything() -> None:
    g = Grants([], management=True)
    assert g.allows(caps.ALLOC_EXEC, "any") and g.level("operator", Level.WRITE)
    assert g.allows_variable("destroy", "x", "y")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("namespaces:\n  default: {policy: reed}\n", 2, "must be one of deny, read, write"),
        ("namespaces:\n  a:\n    capabilities: [submit-jobs]\n", 3, "did you mean 'submit-job'"),
        ("node: read\noperater: deny\n", 2, "did you mean 'operator'"),
        ('namespaces:\n  a: {variables: {"app/*": [reed]}}\n', 2, "unknown variable operation"),
        ("namespaces:\n  a: {polcy: read}\n", 2, "did you mean 'policy'"),
        ("namespaces: [a]\n", 1, "must map namespace names"),
        ("node: read\nnode: write\n", 2, "duplicate key"),
        ("namespaces:\n  a: {policy: read\n", 3, "invalid YAML"),
        ("- a\n", 1, "a policy file is a mapping"),
    ],
)
def test_mistakes_say_what_and_where(text: str, line: int, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_policy(text, "team.yaml")
    issue = err.value.issues[0]
    assert words in issue.render(), issue.render()
    assert issue.line == line, issue.render()
    assert issue.render("team.yaml").startswith(f"team.yaml:{line}")


def test_every_mistake_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as err:
        parse_policy("node: yes\noperator: maybe\nnamespaces: {a: {policy: x}}\n")
    assert len(err.value.issues) == 3
