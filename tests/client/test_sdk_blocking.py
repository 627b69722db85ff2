"""Blocking queries: index and wait go out as query parameters, the index comes back."""

from __future__ import annotations

import httpx
import pytest

from podium.client import Client, QueryResult, endpoints

from .samples import Recorder, alloc, dump


def test_query_returns_value_index_and_raw(client: Client, api: Recorder) -> None:
    api.index = 77
    api.on("GET", "/v1/job/web/allocations", [alloc()])
    result = client.query(endpoints.job_allocations("web"))
    assert isinstance(result, QueryResult)
    assert result.index == 77
    assert result.value == [alloc()]
    assert result.raw == [dump(alloc())]
    assert "index" not in api.last.url.params


@pytest.mark.parametrize(
    ("wait", "sent"), [("30s", "30s"), (0.5, "500ms"), (90, "1m30s"), ("2m", "2m")]
)
def test_wait_is_sent_as_a_duration(
    client: Client, api: Recorder, wait: str | float, sent: str
) -> None:
    api.on("GET", "/v1/allocations", [])
    client.allocations(index=12, wait=wait)
    assert api.last.url.params["index"] == "12"
    assert api.last.url.params["wait"] == sent


def test_blocking_read_timeout_outlasts_the_wait(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/evaluations", [])
    client.evaluations(index=3, wait="60s")
    timeout = api.last.extensions["timeout"]
    assert timeout["read"] > 60 + 60 / 16
    assert timeout["connect"] == client.timeout
    # without a wait the server blocks up to its default of 5m
    client.evaluations(index=3)
    assert api.last.extensions["timeout"]["read"] > 300
    assert "wait" not in api.last.url.params
    # a plain read keeps the plain timeout
    client.evaluations()
    assert api.last.extensions["timeout"]["read"] == client.timeout


def test_every_read_method_takes_index_and_wait(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/jobs", [])
    client.jobs(index=1, wait="1s")
    assert api.last.url.params["index"] == "1"


def test_index_falls_back_to_the_body(api: Recorder) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"eval_id": "e", "index": 9})

    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    assert c.query(endpoints.stop_job("web")).index == 9


def test_a_blocking_loop(api: Recorder) -> None:
    """The pattern the docs show: feed each answer's index into the next query."""
    states = iter([(5, "pending"), (6, "running")])

    def handler(request: httpx.Request) -> httpx.Response:
        index, status = next(states)
        return httpx.Response(
            200,
            json=[dump(alloc(client_status=status))],
            headers={"X-Podium-Index": str(index)},
        )

    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    first = c.query(endpoints.job_allocations("web"))
    second = c.query(endpoints.job_allocations("web"), index=first.index, wait="10s")
    assert second.index == 6 and second.value[0].client_status == "running"
