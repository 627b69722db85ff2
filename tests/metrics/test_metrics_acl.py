"""``/v1/metrics`` is operator read (Nomad's agent:read): a token without it is refused,
and so is an anonymous request; ``/v1/allocation/{id}/stats`` is read-job in the
allocation's namespace.  Through the real app with ACLs on (tests/acl's fixture)."""

from __future__ import annotations

from tests.acl.conftest import Secure


async def test_metrics_need_operator_read(secure: Secure) -> None:
    jobs_only = await secure.token("namespaces:\n  default: {policy: write}\n", name="jobs")
    operator = await secure.token("operator: read\n", name="ops")
    anonymous = await secure.http().get("/v1/metrics")
    assert anonymous.status_code == 401
    refused = await secure.http(jobs_only).get("/v1/metrics")
    assert refused.status_code == 403
    assert "operator: read" in refused.json()["error"]
    refused = await secure.http(jobs_only).get("/v1/node/some-node/metrics")
    assert refused.status_code == 403, refused.text
    relayed = await secure.http(operator).get("/v1/node/some-node/metrics")
    assert relayed.status_code == 404, relayed.text  # allowed, and no such node
    allowed = await secure.http(operator).get("/v1/metrics")
    assert allowed.status_code == 200 and "podium_api_requests_total" in allowed.text
    # refusals are counted too, under the route's template
    assert (
        'podium_api_requests_total{method="GET",route="/v1/metrics",status="403"} 1.0'
        in allowed.text
    )


async def test_alloc_stats_need_read_job_in_the_namespace(secure: Secure) -> None:
    operator = await secure.token("operator: read\n", name="ops")
    reader = await secure.token("namespaces:\n  default: {policy: read}\n", name="reader")
    r = await secure.http(operator).get("/v1/allocation/0000/stats")
    assert r.status_code == 403 and "read-job" in r.json()["error"]
    r = await secure.http(reader).get("/v1/allocation/0000/stats")
    assert r.status_code == 404, r.text
