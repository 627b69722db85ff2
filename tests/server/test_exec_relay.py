"""The server's exec relay in process (no agent): what it refuses before it dials one."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketDenialResponse

from podium.server import exec_relay
from podium.server.api import create_app
from podium.server.core import Server
from podium.state import StateStore

CMD = "command=%5B%22id%22%5D"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Server(StateStore()))) as c:
        yield c


def _refused(client: TestClient, url: str, **headers: str) -> WebSocketDenialResponse:
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect(url, headers=headers),
    ):
        pass
    return refused.value


def test_unknown_allocation_is_404(client: TestClient) -> None:
    r = _refused(client, f"/v1/allocation/nope/exec?{CMD}")
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_a_page_of_another_origin_is_refused(client: TestClient) -> None:
    r = _refused(client, f"/v1/allocation/x/exec?{CMD}", origin="http://evil.example")
    assert r.status_code == 403 and "origin http://evil.example" in r.json()["error"]


def test_sessions_past_the_limit_are_told_to_retry(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exec_relay, "MAX_SESSIONS", 0)
    r = _refused(client, f"/v1/allocation/x/exec?{CMD}")
    assert r.status_code == 429 and r.headers["retry-after"] == "5"
