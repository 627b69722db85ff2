"""Namespace names and quotas, and the store's namespaces and job versions through a real
SQLite file: two jobs with one id in two namespaces keep their own versions, and rows
written before namespaces (versions keyed ``default/...`` with no namespace field) still
load and delete."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from podium.models import Job, JobSpec, JobVersion
from podium.models.namespace import Namespace, Quota, check_namespace, spec_key
from podium.state import SqliteBackend, StateStore

SPEC = {"job": "web", "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}}}


@pytest.mark.parametrize("name", ["default", "team-a", "a", "x1", "a" * 63])
def test_good_names(name: str) -> None:
    assert check_namespace(name) == name
    assert Namespace(name=name).name == name


@pytest.mark.parametrize(
    "name", ["", "Team-A", "-a", "a-", "a_b", "a.b", "a/b", "*", "a" * 64, "é", "a\nb"]
)
def test_bad_names_say_what_a_name_may_be(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid namespace name: use 1-63 lowercase"):
        check_namespace(name)
    with pytest.raises(ValidationError):
        Namespace(name=name)


def test_a_job_file_namespace_is_checked() -> None:
    assert JobSpec.model_validate({**SPEC, "namespace": "team-a"}).namespace == "team-a"
    assert JobSpec.model_validate(SPEC).namespace is None
    with pytest.raises(ValidationError, match="not a valid namespace name"):
        JobSpec.model_validate({**SPEC, "namespace": "Team A"})
    # left out of dumps when unset: a spec without one reads as it did before namespaces
    assert "namespace" not in JobSpec.model_validate(SPEC).model_dump()


def test_quota_parse() -> None:
    assert Quota.parse("cpu=20000,memory=40960,count=200") == Quota(
        cpu=20000, memory=40960, count=200
    )
    assert Quota.parse(" memory = 512 ") == Quota(memory=512)
    assert Quota.parse("") == Quota()
    for bad, why in [
        ("disk=1", "KEY one of cpu"),
        ("cpu", "KEY one of cpu"),
        ("cpu=lots", "not a whole number"),
        ("cpu=-1", "negative"),
        ("cpu=1,cpu=2", "given twice"),
    ]:
        with pytest.raises(ValueError, match=why):
            Quota.parse(bad)


def test_spec_keys_differ_across_namespaces_only_outside_default() -> None:
    assert spec_key("default", "web", 3) == "web@3"
    assert spec_key("team-a", "web", 3) == "team-a/web@3"


def _version(namespace: str, version: int, count: int) -> JobVersion:
    spec = JobSpec.model_validate(
        {**SPEC, "groups": {"g": {**SPEC["groups"]["g"], "count": count}}}
    )  # type: ignore[dict-item]
    return JobVersion(
        job_id="web",
        namespace=namespace,
        version=version,
        spec=spec,
        submit_time=0,
        modify_index=1,
    )


def test_versions_of_one_job_id_in_two_namespaces_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(SqliteBackend(path))
    txn = store.txn()
    for ns, count in (("default", 1), ("team-a", 5)):
        v = _version(ns, 0, count)
        txn.put_job(Job(id="web", namespace=ns, spec=v.spec))
        txn.put_version(v)
    txn.put_namespace(Namespace(name="team-a", quota=Quota(memory=100)))
    store.commit(txn)
    store.close()

    store = StateStore(SqliteBackend(path))
    assert store.job_spec("web", 0, "default").groups["g"].count == 1  # type: ignore[union-attr]
    assert store.job_spec("web", 0, "team-a").groups["g"].count == 5  # type: ignore[union-attr]
    assert store.namespace("team-a") == Namespace(name="team-a", quota=Quota(memory=100))
    assert [n.name for n in store.namespaces()] == ["default", "team-a"]
    # purging team-a's job leaves default's versions alone, on disk too
    txn = store.txn()
    txn.delete_job("team-a", "web", [0])
    store.commit(txn)
    store.close()
    store = StateStore(SqliteBackend(path))
    assert store.job("web", "team-a") is None and store.job_versions("web", "team-a") == []
    assert [v.version for v in store.job_versions("web", "default")] == [0]
    store.close()


def test_version_rows_from_before_namespaces_load_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(SqliteBackend(path)).close()  # the schema
    old = _version("default", 0, 2).model_dump(mode="json")
    del old["namespace"]  # as an earlier Podium wrote it
    job = Job(id="web", spec=_version("default", 0, 2).spec).model_dump(mode="json")
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO objects(tbl, key, value) VALUES (?, ?, ?)",
        ("job_versions", "default/web/0", json.dumps(old).encode()),
    )
    db.execute(
        "INSERT INTO objects(tbl, key, value) VALUES (?, ?, ?)",
        ("jobs", "default/web", json.dumps(job).encode()),
    )
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('index', 5)")
    db.commit()
    db.close()

    store = StateStore(SqliteBackend(path))
    versions = store.job_versions("web")
    assert [(v.namespace, v.version) for v in versions] == [("default", 0)]
    txn = store.txn()
    txn.delete_job("default", "web", [0])
    store.commit(txn)
    store.close()
    db = sqlite3.connect(path)
    left = db.execute("SELECT key FROM objects WHERE tbl='job_versions'").fetchall()
    db.close()
    assert left == []


def test_default_always_exists() -> None:
    store = StateStore()
    assert store.namespace("default") is not None
    assert store.namespace("team-a") is None
    assert [n.name for n in store.namespaces()] == ["default"]
