"""Every SDK call sends the request docs/api.md describes and reads its answer into models."""

from __future__ import annotations

import httpx
import pytest

from podium.client import (
    Client,
    JobInfo,
    JobListItem,
    NodeInfo,
    NodeSync,
    RegisterResult,
    endpoints,
)
from podium.models import Allocation, AllocClientUpdate, ClientStatus, Evaluation, JobVersion

from .samples import ALLOC_ID, EVAL_ID, NODE_ID, Recorder, alloc, dump, evaluation, job, node, spec
from .samples import version as job_version


def test_address_defaults_to_env_then_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODIUM_ADDR", raising=False)
    assert Client().address == "http://127.0.0.1:7634"
    monkeypatch.setenv("PODIUM_ADDR", "10.0.0.5:4646")
    assert Client().address == "http://10.0.0.5:4646"
    assert Client("https://podium.example/").address == "https://podium.example"


def test_jobs_list_with_prefix_and_summary(client: Client, api: Recorder) -> None:
    row = {
        "id": "web",
        "type": "service",
        "priority": 50,
        "status": "running",
        "version": 3,
        "stop": False,
        "submit_time": 10.0,
        "modify_index": 7,
        "summary": {"web": {"pending": 1, "running": 2, "complete": 0, "failed": 0, "lost": 0}},
    }
    api.on("GET", "/v1/jobs", [row])
    jobs = client.jobs(prefix="we")
    assert api.last.url.params["prefix"] == "we"
    assert jobs == [JobListItem.model_validate(row)]
    assert jobs[0].summary["web"].running == 2


def test_job_reads_job_and_summary(client: Client, api: Recorder) -> None:
    body = {**dump(job(version=2)), "summary": {"web": {"running": 2}}}
    api.on("GET", "/v1/job/we", body)
    info = client.job("we")
    assert isinstance(info, JobInfo)
    assert info.version == 2 and info.spec.id == "web"
    assert info.summary["web"].running == 2


def test_job_accepts_a_nested_job_too(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/job/web", {"job": dump(job()), "summary": {"web": {"failed": 1}}})
    assert client.job("web").summary["web"].failed == 1


def test_register_job_sends_the_spec_as_in_the_file(client: Client, api: Recorder) -> None:
    answer = {"eval_id": EVAL_ID, "job_modify_index": 5, "version": 1, "index": 5, "changed": True}
    api.on("POST", "/v1/jobs", answer)
    result = client.register_job(spec(), check_index=4)
    assert result == RegisterResult.model_validate(answer)
    sent = api.last_json()
    assert sent["check_index"] == 4
    assert sent["job"]["job"] == "web"
    # durations travel as people write them, not as float seconds
    assert sent["job"]["groups"]["web"]["tasks"]["server"]["kill_timeout"] == "5s"
    assert "user" not in sent["job"]["groups"]["web"]["tasks"]["server"]


def test_register_job_sends_a_dict_untouched(client: Client, api: Recorder) -> None:
    api.on("POST", "/v1/jobs", {"eval_id": EVAL_ID, "changed": False})
    doc = {"job": "x", "groups": {"g": {"tasks": {"t": {"driver": "mock"}}}}}
    assert client.register_job(doc).changed is False
    assert api.last_json() == {"job": doc}


def test_stop_job_and_purge(client: Client, api: Recorder) -> None:
    api.on("DELETE", "/v1/job/web", {"eval_id": EVAL_ID, "index": 9})
    assert client.stop_job("web").eval_id == EVAL_ID
    assert "purge" not in api.last.url.params
    client.stop_job("web", purge=True)
    assert api.last.url.params["purge"] == "true"


def test_job_subresources(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/job/web/allocations", [alloc()])
    api.on("GET", "/v1/job/web/versions", [job_version(1), job_version(0)])
    api.on("GET", "/v1/job/web/evaluations", [evaluation()])
    assert client.job_allocations("web") == [alloc()]
    assert "all" not in api.last.url.params
    client.job_allocations("web", all=True)
    assert api.last.url.params["all"] == "true"
    versions = client.job_versions("web")
    assert [v.version for v in versions] == [1, 0] and isinstance(versions[0], JobVersion)
    assert client.job_evaluations("web") == [evaluation()]


def test_scale_job(client: Client, api: Recorder) -> None:
    api.on("POST", "/v1/job/web/scale", {"eval_id": EVAL_ID, "version": 4, "index": 11})
    result = client.scale_job("web", "api", 5)
    assert (result.eval_id, result.version, result.index) == (EVAL_ID, 4, 11)
    assert api.last_json() == {"group": "api", "count": 5}


def test_allocations_filters(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/allocations", [alloc()])
    client.allocations(prefix="3f", job_id="web", node_id=NODE_ID)
    assert dict(api.last.url.params) == {"prefix": "3f", "job_id": "web", "node_id": NODE_ID}
    client.allocations()
    assert dict(api.last.url.params) == {}


def test_allocation_and_node_calls(client: Client, api: Recorder) -> None:
    api.on("GET", f"/v1/allocation/{ALLOC_ID}", alloc())
    api.on(
        "GET",
        "/v1/nodes",
        [{**dump(node()), "alloc_count": 3, "allocated": {"cpu": 300, "memory": 192}}],
    )
    api.on("GET", f"/v1/node/{NODE_ID}", {**dump(node()), "alloc_count": 1})
    api.on("GET", f"/v1/node/{NODE_ID}/allocations", [alloc()])
    assert isinstance(client.allocation(ALLOC_ID), Allocation)
    nodes = client.nodes()
    assert isinstance(nodes[0], NodeInfo)
    assert (nodes[0].alloc_count, nodes[0].allocated.memory) == (3, 192)
    assert client.node(NODE_ID).allocated.cpu == 0
    assert client.node_allocations(NODE_ID)[0].id == ALLOC_ID


def test_evaluations_and_status(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/evaluations", [evaluation()])
    api.on("GET", f"/v1/evaluation/{EVAL_ID}", evaluation(status="complete"))
    api.on("GET", "/v1/status", {"version": "0.1.0", "index": 12, "nodes": 1, "jobs": 2})
    assert isinstance(client.evaluations(job_id="web")[0], Evaluation)
    assert api.last.url.params["job_id"] == "web"
    assert client.evaluation(EVAL_ID).terminal()
    st = client.status()
    assert (st.version, st.index, st.nodes, st.jobs) == ("0.1.0", 12, 1, 2)


def test_ids_are_quoted_into_one_path_segment(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/job/a/b", dump(job()))  # httpx matches on the decoded path
    client.job("a/b")
    assert api.last.url.raw_path == b"/v1/job/a%2Fb"
    with pytest.raises(ValueError):
        client.job("")


def test_agent_calls(client: Client, api: Recorder) -> None:
    api.on("PUT", "/v1/node/register", {"node_id": NODE_ID, "index": 3, "heartbeat_ttl": 10})
    api.on("PUT", f"/v1/node/{NODE_ID}/heartbeat", {"index": 4, "heartbeat_ttl": 10})
    sync = {
        "index": 17,
        "allocations": [dump(alloc())],
        "jobs": {"web@0": spec().model_dump(mode="json")},
    }
    api.on("GET", f"/v1/client/node/{NODE_ID}/allocations", sync)
    api.on("POST", "/v1/client/allocations", {"index": 18})

    assert client.register_node(node())["node_id"] == NODE_ID
    assert api.last_json()["resources"] == {"cpu": 4000, "memory": 8192}
    assert client.heartbeat(NODE_ID)["heartbeat_ttl"] == 10

    got = client.node_sync(NODE_ID, index=16, wait="30s")
    assert isinstance(got, NodeSync) and got.index == 17
    assert dict(api.last.url.params) == {"index": "16", "wait": "30s"}
    assert got.spec_for(got.allocations[0]) == spec()

    update = AllocClientUpdate(id=ALLOC_ID, client_status=ClientStatus.RUNNING)
    assert client.update_allocs(NODE_ID, [update]) == 18
    assert api.last_json() == {
        "node_id": NODE_ID,
        "updates": [update.model_dump(mode="json")],
    }


def test_context_manager_closes(api: Recorder) -> None:
    with Client("http://podium.test", transport=httpx.MockTransport(api)) as c:
        assert repr(c) == "Client('http://podium.test')"
    assert c._http.is_closed


def test_endpoint_builders_are_pure() -> None:
    ep = endpoints.job_allocations("web", all=True)
    assert (ep.method, ep.path, dict(ep.params)) == (
        "GET",
        "/v1/job/web/allocations",
        {"all": "true"},
    )
    assert ep.parse([dump(alloc())]) == [alloc()]
