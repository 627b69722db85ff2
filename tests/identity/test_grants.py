"""What a workload token grants: its own job's variables (read, list) and its namespace's
services; nothing else."""

from __future__ import annotations

from podium.models import acl as caps
from podium.models.acl import Grants, Level, WorkloadGrants


def test_a_workload_reads_its_own_jobs_variables_only() -> None:
    g = WorkloadGrants("team-a", "web")
    assert g.allows_variable("read", "team-a", "jobs/team-a/web/db")
    assert g.allows_variable("read", "team-a", "jobs/team-a/web/deep/er")
    assert g.allows_variable("list", "team-a", "jobs/team-a/web/db")
    assert not g.allows_variable("read", "team-a", "jobs/team-a/webshop/db")  # a prefix, not a glob
    assert not g.allows_variable("read", "team-a", "jobs/team-a/other/db")
    assert not g.allows_variable("read", "team-a", "jobs/team-a/web")
    assert not g.allows_variable("read", "team-b", "jobs/team-a/web/db")
    assert not g.allows_variable("read", "team-a", "app/config")
    for op in ("write", "destroy"):
        assert not g.allows_variable(op, "team-a", "jobs/team-a/web/db")
    assert g.may_list_variables("team-a") and not g.may_list_variables("default")


def test_a_workload_reads_its_namespaces_services_and_nothing_else() -> None:
    g = WorkloadGrants("team-a", "web")
    assert g.reads_services("team-a") and not g.reads_services("default")
    assert not g.management
    for capability in caps.CAPABILITIES:
        assert not g.allows(capability, "team-a"), capability
    assert not g.level("node", Level.READ) and not g.level("operator", Level.READ)


def test_services_follow_read_job_for_acl_tokens() -> None:
    reader = Grants([caps.PolicyRules.model_validate({"namespaces": {"a": {"policy": "read"}}})])
    assert reader.reads_services("a") and not reader.reads_services("b")
