"""Error answers become the exceptions of podium.errors; a dead server says what to do."""

from __future__ import annotations

import httpx
import pytest

from podium.client import Client, ServerUnreachable
from podium.errors import AmbiguousPrefix, APIError, Conflict, NotFound, PodiumError, SpecError

from .samples import Recorder


def test_404_is_not_found(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/job/nope", {"error": "no job matches 'nope'"}, status=404)
    with pytest.raises(NotFound, match="no job matches 'nope'"):
        client.job("nope")


def test_ambiguous_prefix_lists_the_matches(client: Client, api: Recorder) -> None:
    body = {"error": "prefix '3f' matches 2 allocations", "matches": ["3f2a0001", "3f9b0002"]}
    api.on("GET", "/v1/allocation/3f", body, status=400)
    with pytest.raises(AmbiguousPrefix) as info:
        client.allocation("3f")
    assert "3f2a0001" in str(info.value) and "3f9b0002" in str(info.value)


def test_ambiguity_message_is_not_repeated(client: Client, api: Recorder) -> None:
    body = {"error": "prefix 'a' matches: abc, abd", "matches": ["abc", "abd"]}
    api.on("GET", "/v1/node/a", body, status=400)
    with pytest.raises(AmbiguousPrefix) as info:
        client.node("a")
    assert str(info.value) == "prefix 'a' matches: abc, abd"


def test_spec_issues_are_rebuilt(client: Client, api: Recorder) -> None:
    body = {
        "error": "invalid job",
        "issues": [
            {
                "path": "groups.web.count",
                "message": "must be >= 0",
                "line": 4,
                "column": 12,
                "hint": None,
            },
            {
                "path": "groups.web.tasks.x.driver",
                "message": "unknown driver",
                "hint": "did you mean 'mock'?",
            },
        ],
    }
    api.on("POST", "/v1/jobs", body, status=400)
    with pytest.raises(SpecError) as info:
        client.register_job({"job": "web"})
    issues = info.value.issues
    assert [i.path for i in issues] == ["groups.web.count", "groups.web.tasks.x.driver"]
    assert (issues[0].line, issues[0].column) == (4, 12)
    assert issues[1].hint == "did you mean 'mock'?"
    assert "job.yaml:4:12: groups.web.count: must be >= 0" in issues[0].render("job.yaml")


def test_409_is_conflict(client: Client, api: Recorder) -> None:
    api.on("POST", "/v1/jobs", {"error": "check_index 3 lost: job is at 5"}, status=409)
    with pytest.raises(Conflict, match="check_index 3 lost"):
        client.register_job({"job": "web"}, check_index=3)


def test_other_errors_are_api_errors(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/status", {"error": "store is closed"}, status=503)
    with pytest.raises(APIError) as info:
        client.status()
    assert info.value.status == 503 and str(info.value) == "store is closed"
    assert info.value.detail == {"error": "store is closed"}


def test_plain_400_without_matches_or_issues(client: Client, api: Recorder) -> None:
    api.on("POST", "/v1/job/web/scale", {"error": "no group 'api' in job 'web'"}, status=400)
    with pytest.raises(APIError, match="no group 'api'") as info:
        client.scale_job("web", "api", 1)
    assert info.value.status == 400


def test_fastapi_validation_errors_read_well(client: Client, api: Recorder) -> None:
    body = {"detail": [{"loc": ["body", "count"], "msg": "Input should be a valid integer"}]}
    api.on("POST", "/v1/job/web/scale", body, status=422)
    with pytest.raises(APIError, match=r"body\.count: Input should be a valid integer"):
        client.scale_job("web", "g", 1)


def test_non_json_error_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>\n<body>Bad Gateway</body>\n</html>")

    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    with pytest.raises(APIError, match="502 Bad Gateway"):
        c.jobs()


def test_unexpected_answer_shape_is_an_api_error(client: Client, api: Recorder) -> None:
    api.on("GET", "/v1/jobs", {"not": "a list"})
    with pytest.raises(APIError, match="unexpected answer from GET /v1/jobs"):
        client.jobs()


def test_connection_refused_says_how_to_start_a_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    c = Client("http://127.0.0.1:1", transport=httpx.MockTransport(handler))
    with pytest.raises(ServerUnreachable) as info:
        c.jobs()
    assert str(info.value) == (
        "cannot reach the Podium server at http://127.0.0.1:1: is `podium agent --dev` running?"
    )
    assert isinstance(info.value, PodiumError)


def test_a_real_refused_connection() -> None:
    # Port 1 on loopback: nothing listens there in a test environment.
    with (
        Client("127.0.0.1:1", timeout=2) as c,
        pytest.raises(ServerUnreachable, match="cannot reach"),
    ):
        c.status()


def test_read_timeout_is_reported_as_such() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    c = Client("http://podium.test", transport=httpx.MockTransport(handler))
    with pytest.raises(ServerUnreachable, match="did not answer in time"):
        c.jobs()
